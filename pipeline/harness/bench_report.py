"""The benchmark's machine description and its results as JSON and a markdown table (`bench/results/`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import orjson

from pipeline.harness import backfill_projection, targets
from pipeline.harness.fleet import SERVICE_MODULES

NOT_PRODUCT = ("simulator",)  # stands in for Polymarket: its CPU is not the pipeline's
OWN_SOURCE = {"goldsky_ingester": "goldsky", "chain_ingester": "chain"}  # fill ingesters see only their source


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "python_loop_ns": python_loop_ns(),
    }


def python_loop_ns(iterations: int = 1_000_000) -> float:
    """CPU-ns per iteration of a plain Python loop, best of three: the machine's speed, because CPU-µs per fill
    scale with it (the same code measured 3x more on a machine whose loop was 3x slower)."""
    best = math.inf
    for _ in range(3):
        started, total = time.process_time(), 0
        for i in range(iterations):
            total += i
        best = min(best, time.process_time() - started)
    return round(best * 1e9 / iterations, 1)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted `values` (nan when empty)."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(values)))
    return values[rank - 1]


def cpu_per_fill(cpu_s: dict[str, float], fills: int, emitted: dict[str, int]) -> dict[str, Any]:
    """CPU-µs per fill of every product process and their total (simulator excluded); the fill ingesters also
    per fill they emitted (`<name>/own`; `emitted`: fills per source that reached `trades`)."""
    product = {name: seconds for name, seconds in cpu_s.items() if name not in NOT_PRODUCT}
    figures: dict[str, Any] = {name: round(seconds * 1e6 / max(fills, 1), 1) for name, seconds in product.items()}
    for name, source in OWN_SOURCE.items():
        if name in product and emitted.get(source):
            figures[f"{name}/own"] = round(product[name] * 1e6 / emitted[source], 1)
    figures["total"] = round(sum(product.values()) * 1e6 / max(fills, 1), 1)
    return figures


def redis_command_figures(commandstats: dict[str, dict[str, Any]], fills: int) -> dict[str, dict[str, float]]:
    """Redis' own time inside each command (`INFO commandstats`: execution only, not reading requests, writing
    replies or the AOF) as µs per fill, with calls per fill; the costliest first."""
    figures = {
        name.removeprefix("cmdstat_"): {
            "us_per_fill": round(stats["usec"] / max(fills, 1), 2),
            "calls_per_fill": round(stats["calls"] / max(fills, 1), 4),
        }
        for name, stats in commandstats.items()
    }
    return dict(sorted(figures.items(), key=lambda item: -item[1]["us_per_fill"]))


# What a stage's fills are, as each stage's "counted" says (pipeline/harness/bench.py).
COUNTED = {
    "items": "fills counted as the stream's items (`stream:items`)",
    "entries": "fills counted as the stream's entries (no `stream:items`: one fill an entry)",
    "rows": "rows in `trades`",
}


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def markdown(result: dict[str, Any], stamp: str) -> str:
    m, tp, lat = result["machine"], result["throughput"], result["latency"]
    mem = tp["memory"]
    services_peak = max(mem["peak_rss_mb"][s] for s in SERVICE_MODULES)
    lines = [
        f"## Benchmark {stamp} ({result['mode']})",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gb']} GB RAM, Python {m['python']}, Linux {m['kernel']}, "
        f"a Python loop iteration {m.get('python_loop_ns', '?')} CPU-ns (CPU figures scale with it); "
        f"load average (1/5/15 min) {result['load_average_start']} at start, {result['load_average_end']} at end "
        "(the machine is shared: figures are floors).",
        "",
        "| what | figure | target |",
        "|---|---|---|",
        f"| end to end, {tp['fills']:,} history fills into `trades` | **{tp['fills_per_s']:,} fills/s** "
        f"({tp['seconds']} s) | ≥ {targets.FILLS_PER_S:,} ({verdict(tp['fills_per_s'] >= targets.FILLS_PER_S)}) |",
    ]
    for stage, figures in tp["stages"].items():
        lines.append(
            f"| stage: {stage} | {figures['fills_per_s']:,} fills/s average, {figures['best_5s_fills_per_s']:,} "
            f"best 5 s; {COUNTED.get(figures.get('counted', 'entries'), figures.get('counted'))} | |"
        )
    if backfill := tp.get("backfill"):
        lines.append(f"| backfill of {backfill['fills'] / 1e9:g} billion fills, projected | "
                     f"{backfill_projection.describe(backfill)} | |")  # fmt: skip
    lines += [
        f"| latency, {lat['rate']:,.0f} fills/s for {lat['seconds']:.0f} s ({lat['measured']:,} fills), "
        f"source → `ingested_at` | p50 **{lat['p50_s']} s**, p95 {lat['p95_s']} s, p99 **{lat['p99_s']} s** "
        f"(max {lat['max_s']} s) | p99 ≤ {targets.LATENCY_P99_S} at {targets.LATENCY_RATE:,} fills/s "
        f"({verdict(lat['p99_s'] <= targets.LATENCY_P99_S)}) |",
        f"| peak RSS per service (throughput run) | max {services_peak:.0f} MB | ≤ {targets.SERVICE_RSS_MB} MB "
        f"({verdict(services_peak <= targets.SERVICE_RSS_MB)}) |",
    ]
    per_fill = tp["cpu_us_per_fill"]
    lines.append(
        f"| CPU per fill, every product process (simulator excluded) | **{per_fill['total']:.1f} µs** | "
        f"≤ {targets.CPU_US_PER_FILL} ({verdict(per_fill['total'] <= targets.CPU_US_PER_FILL)}) |"
    )
    writer_mb = mem["peak_rss_mb"]["clickhouse_writer"]
    lines.append(f"| writer peak RSS | {writer_mb:.0f} MB | ≤ {targets.WRITER_RSS_MB} MB "
                 f"({verdict(writer_mb <= targets.WRITER_RSS_MB)}) |")  # fmt: skip
    for name, mb in mem["peak_rss_mb"].items():
        cpu = f"{tp['cpu_s'][name]:.1f} CPU-s, {cpu_text(tp, name)}"
        lines.append(f"| &nbsp;&nbsp;{name} | {mb:.0f} MB peak RSS, {cpu} | |")
    if commands := tp.get("redis_commands"):
        top = ", ".join(
            f"{name} {c['us_per_fill']} ({c['calls_per_fill']:g} calls)" for name, c in list(commands.items())[:8]
        )
        lines.append(
            f"| &nbsp;&nbsp;Redis time inside commands, µs per fill (a script's includes its own calls') | {top} | |"
        )
    streams = ", ".join(f"`{s}` {n:,}" for s, n in mem["max_stream_len"].items())
    lines += [
        f"| Redis `used_memory` (max sampled / `used_memory_peak`) | {mem['redis_used_memory_max_mb']:.0f} MB / "
        f"{mem['redis_used_memory_peak_mb']:.0f} MB | bounded by trimming |",
        f"| longest streams | {streams} | |",
        f"| truth check | throughput: {tp['check']}; after latency: {result['final_check']} | 0 lost, 0 duplicated |",
        *dedup_lines(result.get("dedup")),
        "",
        f"Simulator: `{result['settings']['simulator']}` (latency excludes the source's finality lag: the "
        "simulator's `finalized` is its latest block). Service knobs: "
        + ", ".join(f"`{k}={v}`" for k, v in sorted(result["settings"]["services"].items()))
        + ".",
    ]
    return "\n".join(lines) + "\n"


def dedup_lines(dedup: dict[str, Any] | None) -> list[str]:
    """The unique-insert check's cost (bench/bench_dedup.py): per fill, and the writer with and without it."""
    if not dedup:
        return []
    lines = []
    for table, cases in dedup["check"].items():
        new, stored = cases["new"], cases["stored"]
        lines.append(
            f"| unique-insert check, `{table}` with {dedup['seed_rows']:,} rows stored | new fills "
            f"{new['us_per_fill']} µs/fill ({new['ms_per_batch']} ms per 10,000), stored fills {stored['us_per_fill']} "
            f"µs/fill; ClickHouse CPU {new['server_cpu_us_per_fill']} µs/fill | |"
        )
    off, on = dedup["writer"]["without check"], dedup["writer"]["with check"]
    slowdown = 1 - on["rows_per_s"] / off["rows_per_s"]
    lines.append(
        f"| writer with the check / without (`CLICKHOUSE_UNIQUE_KEYS=false`) | {on['rows_per_s']:,} / "
        f"{off['rows_per_s']:,} rows/s ({slowdown:+.1%} slower), writer CPU {on['writer_cpu_us_per_row']} / "
        f"{off['writer_cpu_us_per_row']} µs/row, load {on['load_average']} | ≤ {targets.DEDUP_SLOWDOWN:.0%} slower "
        f"({verdict(slowdown <= targets.DEDUP_SLOWDOWN)}) |"
    )
    return lines


def cpu_text(tp: dict[str, Any], name: str) -> str:
    per_fill = tp["cpu_us_per_fill"]
    if name not in per_fill:
        return "not product"
    own = ""
    if name + "/own" in per_fill:
        source = OWN_SOURCE[name]
        emitted = tp.get("fills_per_source", {}).get(source)
        count = f", {emitted:,} emitted" if emitted else ""
        own = f" ({per_fill[name + '/own']:.1f} per {source} fill{count})"
    return f"{per_fill[name]:.1f} CPU-µs per fill{own}"


def summary(result: dict[str, Any]) -> str:
    tp, lat = result["throughput"], result["latency"]
    stages = ", ".join(f"{s} {f['fills_per_s']:,}/s ({f['counted']})" for s, f in tp["stages"].items())
    services_peak = max(tp["memory"]["peak_rss_mb"][s] for s in SERVICE_MODULES)
    return (
        f"throughput: {tp['fills_per_s']:,} fills/s end to end ({tp['fills']:,} fills in {tp['seconds']} s; {stages})\n"
        f"latency: p50 {lat['p50_s']} s, p95 {lat['p95_s']} s, p99 {lat['p99_s']} s ({lat['measured']:,} fills at "
        f"{lat['rate']:,.0f}/s)\n"
        f"cpu: {tp['cpu_us_per_fill']['total']:.1f} µs per fill in all (simulator excluded); "
        + "; ".join(f"{name} {cpu_text(tp, name)}, {mb:.0f} MB" for name, mb in tp["memory"]["peak_rss_mb"].items())
        + "\n"
        f"memory: peak RSS per service max {services_peak:.0f} MB; Redis used_memory max "
        f"{tp['memory']['redis_used_memory_max_mb']:.0f} MB\n"
        f"backfill of {tp['backfill']['fills'] / 1e9:g} billion fills: {backfill_projection.describe(tp['backfill'])}\n"
        f"check: {result['final_check']}\n"
        f"load average: {result['load_average_start']} at start, {tp['load_average_end']} after the throughput run, "
        f"{result['load_average_end']} at end"
    )


def write_results(result: dict[str, Any], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = out / f"{stamp}-{result['mode']}"
    text = markdown(result, stamp)
    json_path, md_path, latest = base.with_suffix(".json"), base.with_suffix(".md"), out / "latest.md"
    latest_of_mode = out / f"latest-{result['mode']}.md"
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    for path in (md_path, latest, latest_of_mode):
        path.write_text(text)
    return {
        "json": json_path,
        "md": md_path,
        "latest": latest,
        "latest_of_mode": latest_of_mode,
        "summary": summary(result),
    }
