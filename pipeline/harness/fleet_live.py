"""`python -m pipeline bench --fleet-live`: what the whole fleet costs at a live rate, the way the demo runs it.

    python -m pipeline bench --fleet-live                 # 50 fills/s, 60 s warm-up, 180 s measured
    python -m pipeline bench --fleet-live --live-rate 200 --live-s 300

Starts the demo's world (the simulator at `--live-rate` fills/s over 5,000 history fills and 60 markets), the
embedded Redis and ClickHouse, the six services and the dashboard, each its own process with the product's own
settings (none of the bench's faster polling). After `--warmup-s` (history ingested, caches warm) it measures
over `--live-s`: CPU seconds per process (utime + stime, /proc/<pid>/stat) and their share of one core, and
memory sampled every 10 s: PSS (shared pages split between the processes mapping them, so the column adds up to
memory counted once) and RSS per process (a process group summed: a program and any child it forks), the
largest sample of each, and the product processes' resident pages counted once (the union of their page frames
from /proc/<pid>/pagemap, root only): on a shared machine PSS also splits pages with other users' processes.
The simulator stands in for Polymarket: it is shown, not counted. The machine may be shared: the load average
at start and end is printed beside the figures, and CPU seconds are the primary figure.
Writes `bench/results/<UTC time>-fleet-live.json` and `.md`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from pipeline.harness.bench_report import NOT_PRODUCT, machine
from pipeline.harness.fleet import Fleet, load_average, table_count

MEMORY_SAMPLE_S = 10.0
DEMO_WORLD = ["--history-fills", "5000", "--markets", "60", "--seed", "1", "--finalized-lag-blocks", "2"]
PRODUCT_DEFAULTS = {"LOG_FORMAT": "json", "LOG_LEVEL": "info"}  # every other setting: the product's default


def run_fleet_live(
    rate: float, warmup_s: float, live_s: float, workdir: Path, env: dict[str, str], log=print
) -> dict[str, Any]:
    sim_args = [*DEMO_WORLD, "--rate", str(rate)]
    result: dict[str, Any] = {"mode": "fleet-live", "machine": machine(), "rate": rate, "warmup_s": warmup_s}
    result["settings"] = {"simulator": " ".join(sim_args), "services": env}
    with Fleet(workdir, simulator_args=sim_args, service_env=env, service_defaults=PRODUCT_DEFAULTS,
               dashboard=True) as fleet:  # fmt: skip
        fleet.start_servers()
        fleet.start_services()
        log(f"fleet-live: {rate:g} fills/s, warming up {warmup_s:.0f} s (load {load_average()})")
        time.sleep(warmup_s)
        result["load_average_start"] = load_average()
        trades_before, cpu_before, started = table_count(fleet, "trades"), fleet.cpu_seconds(), time.monotonic()
        peak: dict[str, tuple[float, float]] = {}
        product = [name for name in fleet.programs if name not in NOT_PRODUCT]
        once = 0.0
        while (left := live_s - (time.monotonic() - started)) > 0:
            for name, (pss, rss) in fleet.memory_mb().items():
                old = peak.get(name, (0.0, 0.0))
                peak[name] = (max(old[0], pss), max(old[1], rss))
            once = max(once, fleet.counted_once_mb(product))
            time.sleep(min(MEMORY_SAMPLE_S, left))
        elapsed = time.monotonic() - started
        cpu = {name: s - cpu_before[name] for name, s in fleet.cpu_seconds().items()}
        trades = table_count(fleet, "trades") - trades_before
        result["load_average_end"] = load_average()
    result["processes"] = {
        name: {"cpu_s": round(cpu[name], 2), "cpu_pct": round(100 * cpu[name] / elapsed, 2),
               "pss_mb": round(peak[name][0], 1), "rss_mb": round(peak[name][1], 1)}
        for name in fleet.programs
    }  # fmt: skip
    result["total"] = {
        "cpu_s": round(sum(cpu[n] for n in product), 2),
        "cpu_pct": round(100 * sum(cpu[n] for n in product) / elapsed, 2),
        "pss_mb": round(sum(peak[n][0] for n in product), 1),
        "rss_mb": round(sum(peak[n][1] for n in product), 1),
        "counted_once_mb": round(once, 1),  # resident pages of the product processes, each counted once
    }
    result["measured_s"] = round(elapsed, 1)
    result["trades_written"] = trades
    result["trades_per_s"] = round(trades / elapsed, 1)
    return result


def markdown(result: dict[str, Any], stamp: str) -> str:
    m, total = result["machine"], result["total"]
    lines = [
        f"# Fleet at a live rate, {stamp}",
        "",
        f"{result['rate']:g} fills/s for {result['measured_s']:.0f} s after {result['warmup_s']:.0f} s of warm-up; "
        f"{result['trades_written']:,} trades written ({result['trades_per_s']:g}/s). Machine: {m['nproc']} cores, "
        f"{m['cpu']}, Python loop {m['python_loop_ns']} ns. Load average (1, 5, 15 min) at start "
        f"{result['load_average_start']}, at end {result['load_average_end']}: the machine is shared, CPU % of one "
        "core is CPU seconds over wall seconds.",
        "",
        "| process | CPU s | CPU % of a core | PSS MB (max) | RSS MB (max) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, p in result["processes"].items():
        shown = f"{name} (not product)" if name in NOT_PRODUCT else name
        lines.append(f"| {shown} | {p['cpu_s']:.2f} | {p['cpu_pct']:.2f} | {p['pss_mb']:.1f} | {p['rss_mb']:.1f} |")
    lines.append(f"| **product total** | {total['cpu_s']:.2f} | {total['cpu_pct']:.2f} | {total['pss_mb']:.1f} | "
                 f"{total['rss_mb']:.1f} |")  # fmt: skip
    if total["counted_once_mb"]:
        lines += ["", f"Product processes' resident pages counted once (union of their page frames, "
                      f"/proc/<pid>/pagemap): **{total['counted_once_mb']:.1f} MB**. PSS splits a shared page "
                      "between every process mapping it, also other users' (other chDB servers map the same "
                      "library): this figure does not depend on what else runs on the machine."]  # fmt: skip
    if result["settings"]["services"]:
        lines += ["", f"Service settings: `{result['settings']['services']}`"]
    return "\n".join(lines) + "\n"


def write_fleet_live(result: dict[str, Any], out: Path, label: str = "") -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"{stamp}-fleet-live{'-' + label if label else ''}"
    base.with_suffix(".json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    text = markdown(result, stamp)
    base.with_suffix(".md").write_text(text)
    print(text)
    return base.with_suffix(".md")
