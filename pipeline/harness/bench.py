"""`python -m pipeline bench [--quick]`: end-to-end throughput, latency and memory, every service its own process.

    python -m pipeline bench --quick      # 250,000 history fills, 30 s of live fills: under 3 minutes
    python -m pipeline bench              # 2,000,000 history fills, 2 minutes of live fills at 1,000/s

Starts the simulator, Redis, the embedded ClickHouse and the six services as separate processes
(pipeline/harness/fleet.py, the supervisord layout) in a temp folder, then:
1. throughput: the simulator's history (v1 fills through Goldsky, v2 through the chain RPC) into `trades`. Prints
   fills/s end to end (fills / (last `ingested_at` - services started)) and per stage: ingest (fills appended to
   `stream:order_events`), processor (trades appended to `stream:trades`), writer (rows in `trades`), each as the
   whole run's average and the best 5-second window. A stream's fills are its items, from the `stream:items` hash
   the appending scripts keep (an entry is a page of 1..N items); where it has none (before pages: one fill an
   entry), its entries added; the report says which. Then the time a backfill of the v1 history (1.2 billion fills)
   would take at the end-to-end rate, beside the rates Goldsky's and the RPC's published limits allow
   (pipeline/harness/backfill_projection.py). Samples every process's RSS (VmHWM, across restarts) and
   Redis `used_memory`, and the longest each stream got. CPU (utime + stime from /proc/<pid>/stat, with the
   children each reaped: Redis rewrites its AOF in a forked child; over every
   incarnation) per process from services start to drained, as CPU-µs per fill: each product process and their
   total without the simulator; the fill ingesters also per fill they emitted (`trades` rows of their `source`:
   the chain ingester starts at the cutover, so it emits only the v2/v3 fills, not all the chain holds). Redis'
   time inside each command over the phase (`INFO commandstats` after `CONFIG RESETSTAT`), µs per fill.
2. latency: live fills at `--live-rate` for `--live-s`, ingesters polling every second; per fill, ClickHouse's
   `ingested_at` minus the fill's `first_visible_at` at the simulator (block production time; the simulator's
   `finalized` is its latest block, so the figure excludes the source's finality lag). p50/p95/p99.
3. checks both phases against the simulator's truth (pipeline/harness/truth_check.py).
4. unique inserts: `bench/bench_dedup.py` (its own servers, 10M rows stored): the check's cost per fill, and the
   writer's rows/s with the check and without it (`--skip-dedup` leaves it out).
Writes `bench/results/<UTC time>-<quick|full>.json` and `.md`, `latest.md` and `latest-<quick|full>.md`.

    python -m pipeline bench --fleet-live  # the demo's fleet at 50 fills/s: CPU, PSS and RSS per process

measures what the whole fleet costs at a live rate (pipeline/harness/fleet_live.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import bench_dedup
from common import keys, tables
from pipeline.harness import backfill_projection, targets
from pipeline.harness.bench_report import cpu_per_fill, machine, percentile, redis_command_figures, write_results
from pipeline.harness.fleet import (
    SERVICE_DEFAULTS,
    SERVICE_MODULES,
    Fleet,
    appended,
    load_average,
    table_count,
    wait_converged,
)
from pipeline.harness.fleet_live import run_fleet_live, write_fleet_live
from pipeline.harness.truth_check import check_against_truth, fetch_truth

SAMPLE_INTERVAL_S = 0.5
WINDOW_S = 5.0
MODES = {  # history fills, live seconds
    "quick": (250_000, 30.0),
    "full": (2_000_000, 120.0),
}


@dataclass
class Sample:
    at: float  # wall clock, unix s
    ingested: int  # fills appended to stream:order_events (`appended`: items, or entries before pages)
    processed: int  # trades appended to stream:trades (the same)
    written: int  # rows in trades (-1: ClickHouse did not answer)


@dataclass
class Sampler:
    """Progress, memory and stream lengths, sampled every SAMPLE_INTERVAL_S while a phase runs."""

    fleet: Fleet
    samples: list[Sample] = field(default_factory=list)
    redis_used_mb: float = 0.0
    redis_peak_mb: float = 0.0
    max_stream_len: dict[str, int] = field(default_factory=lambda: dict.fromkeys(keys.STREAM_GROUPS, 0))
    units: dict[str, str] = field(default_factory=dict)  # stage -> what its counts count: "items" or "entries"

    def sample(self) -> Sample:
        self.fleet.sample_rss()
        client = self.fleet.redis()
        try:
            memory = client.info("memory")
            self.redis_used_mb = max(self.redis_used_mb, memory["used_memory"] / 2**20)
            self.redis_peak_mb = max(self.redis_peak_mb, memory["used_memory_peak"] / 2**20)
            for stream in self.max_stream_len:
                self.max_stream_len[stream] = max(self.max_stream_len[stream], int(client.xlen(stream)))
            prefix = self.fleet.key_prefix
            ingested = appended(client, keys.under(prefix, keys.STREAM_ORDER_EVENTS), prefix)
            processed = appended(client, keys.under(prefix, keys.STREAM_TRADES), prefix)
        finally:
            client.close()
        self.units = {"ingest": ingested.unit, "processor": processed.unit}
        sample = Sample(time.time(), ingested.count, processed.count, table_count(self.fleet, tables.TRADES))
        self.samples.append(sample)
        return sample

    def reached(self, attr: str, total: int) -> float | None:
        return next((s.at for s in self.samples if getattr(s, attr) >= total), None)

    def best_window(self, attr: str) -> float:
        """The highest rate over any WINDOW_S of samples, per second."""
        best, j = 0.0, 0
        for i, sample in enumerate(self.samples):
            while self.samples[j].at < sample.at - WINDOW_S:
                j += 1
            span = sample.at - self.samples[j].at
            if span >= WINDOW_S / 2 and i > j:
                best = max(best, (getattr(sample, attr) - getattr(self.samples[j], attr)) / span)
        return best


def throughput_phase(fleet: Fleet, truth: dict[str, Any], timeout_s: float, log) -> dict[str, Any]:
    expected = int(truth["count"])
    sampler = Sampler(fleet)
    cpu_before = fleet.cpu_seconds()
    with fleet.redis() as client:
        client.config_resetstat()  # the command breakdown below covers this phase only
    started = time.time()
    fleet.start_services()
    give_up = time.monotonic() + timeout_s
    while True:
        sample = sampler.sample()
        if sample.written >= expected and sample.processed >= expected:
            break
        if time.monotonic() > give_up:
            raise TimeoutError(f"throughput: only {sample.written:,} of {expected:,} rows after {timeout_s:.0f} s")
        if len(sampler.samples) % 10 == 0:
            log(f"  ingested {sample.ingested:,}  processed {sample.processed:,}  written {sample.written:,}")
        time.sleep(SAMPLE_INTERVAL_S)
    wait_converged(fleet, expected, 120.0, tick=sampler.sample)
    last_row = float(fleet.ch(f"SELECT toUnixTimestamp64Milli(max(ingested_at)) FROM {tables.TRADES}").strip()) / 1000
    cpu = {name: round(s - cpu_before[name], 1) for name, s in fleet.cpu_seconds().items()}
    emitted = fills_per_source(fleet)
    with fleet.redis() as client:
        redis_commands = redis_command_figures(client.info("commandstats"), expected)
    stages = {}
    for stage, attr in (("ingest", "ingested"), ("processor", "processed"), ("writer", "written")):
        done = last_row if stage == "writer" else (sampler.reached(attr, expected) or last_row)
        stages[stage] = {
            "fills": expected,
            "seconds": round(done - started, 2),
            "fills_per_s": round(expected / (done - started)),
            "best_5s_fills_per_s": round(sampler.best_window(attr)),
            "counted": sampler.units.get(stage, "rows"),  # items, entries (no `stream:items`), rows (in `trades`)
        }
    fills_per_s = expected / (last_row - started)
    return {
        "fills": expected,
        "seconds": round(last_row - started, 2),
        "fills_per_s": round(fills_per_s),
        "stages": stages,
        "backfill": backfill_projection.project(fills_per_s),
        "cpu_s": cpu,  # per process, from services start to drained (includes the convergence checks' tail)
        "fills_per_source": emitted,  # rows in `trades` per ingester source, the /own figures' denominators
        "cpu_us_per_fill": cpu_per_fill(cpu, expected, emitted),
        "memory": memory_figures(fleet, sampler),
        "redis_commands": redis_commands,
    }


def fills_per_source(fleet: Fleet) -> dict[str, int]:
    """Rows in `trades` per `source` (goldsky, chain): the fills each ingester emitted, since the bench's world has
    no fill that both sources serve and the writer stores each fill once."""
    rows = fleet.ch(f"SELECT source, count() FROM {tables.TRADES} GROUP BY source")
    return {source: int(n) for source, n in (line.split("\t") for line in rows.splitlines())}


def memory_figures(fleet: Fleet, sampler: Sampler) -> dict[str, Any]:
    return {
        "peak_rss_mb": {name: round(fleet.peak_rss_mb(name), 1) for name in fleet.programs},
        "redis_used_memory_max_mb": round(sampler.redis_used_mb, 1),
        "redis_used_memory_peak_mb": round(sampler.redis_peak_mb, 1),
        "max_stream_len": sampler.max_stream_len,
    }


def latency_phase(fleet: Fleet, rate: float, seconds: float, log) -> dict[str, Any]:
    before = fetch_truth(fleet)
    fleet.sim("POST", "/_sim/config", json={"rate": rate})
    sampler = Sampler(fleet)
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        sampler.sample()
        time.sleep(SAMPLE_INTERVAL_S)
    fleet.sim("POST", "/_sim/config", json={"rate": 0})
    after = fetch_truth(fleet)
    wait_converged(fleet, int(after["count"]), 120.0)
    first, last = int(before["count"]), int(after["count"])
    params = {"offset": first, "limit": last - first, "fields": "id,first_visible_at"}
    truth = fleet.sim("GET", "/_sim/truth", params=params)
    visible = {fill["id"]: float(fill["first_visible_at"]) for fill in truth["fills"]}
    rows = fleet.ch(
        f"SELECT id, toUnixTimestamp64Milli(ingested_at) FROM {tables.TRADES} "
        f"WHERE block_number > {int(before['head_block'])}"
    )
    latencies = []
    for line in rows.splitlines():
        fill_id, ingested_ms = line.split("\t")
        if fill_id in visible:
            latencies.append(int(ingested_ms) / 1000 - visible[fill_id])
    latencies.sort()
    log(f"  {len(latencies):,} live fills of {last - first:,} matched")
    return {
        "rate": rate,
        "seconds": seconds,
        "fills": last - first,
        "measured": len(latencies),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "max_s": round(latencies[-1], 3) if latencies else None,
        "peak_rss_mb": {name: round(fleet.peak_rss_mb(name), 1) for name in SERVICE_MODULES},
    }


def run_bench(
    mode: str, history: int, live_s: float, rate: float, workdir: Path, env: dict[str, str], log=print
) -> dict[str, Any]:
    # Fills of tokens no market owns (unlisted markets, Combo positions) are held UNKNOWN_MARKET_WAIT_S (300 s) by
    # design (docs/CONTRACT.md §5): with them, the run would time that wait, not the pipeline.
    sim_args = ["--history-fills", str(history), "--unlisted-markets", "0", "--combo-share", "0"]
    sim_args += ["--finalized-lag-blocks", "0", "--live-block-interval-s", "0.5"]
    result: dict[str, Any] = {"mode": mode, "machine": machine(), "load_average_start": load_average()}
    result["settings"] = {"simulator": " ".join(sim_args)}
    with Fleet(workdir, simulator_args=sim_args, service_env=env) as fleet:
        result["settings"]["services"] = SERVICE_DEFAULTS | fleet.service_env
        fleet.start_servers()
        truth = fetch_truth(fleet)
        log(f"bench ({mode}): {truth['count']:,} history fills ({truth['per_source']['goldsky']:,} via Goldsky), "
            f"load {load_average()}")  # fmt: skip
        result["throughput"] = throughput_phase(fleet, truth, 1800.0, log)
        result["throughput"]["load_average_end"] = load_average()
        verdict = check_against_truth(fleet, truth)
        result["throughput"]["check"] = verdict.summary()
        log(f"  throughput: {result['throughput']['fills_per_s']:,} fills/s end to end, "
            f"{result['throughput']['cpu_us_per_fill']['total']} CPU-µs per fill, load {load_average()}; "
            f"{verdict.summary()}")  # fmt: skip
        result["latency"] = latency_phase(fleet, rate, live_s, log)
        result["latency"]["load_average_end"] = load_average()
        final = check_against_truth(fleet)
        result["final_check"] = final.summary() if final.ok else "; ".join(final.problems)
    result["load_average_end"] = load_average()
    return result


def dedup_phase(log) -> dict[str, Any]:
    """bench/bench_dedup.py, after the fleet is gone (it starts servers of its own); it prints its figures."""
    log(f"unique inserts: bench/bench_dedup.py ({bench_dedup.SEED_ROWS:,} rows stored)")
    return bench_dedup.run()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="250,000 fills and 30 s of live fills (under 3 minutes)")
    p.add_argument("--fills", type=int, help="history fills (default 2,000,000; --quick 250,000)")
    p.add_argument("--live-s", type=float, help="seconds of live fills (default 120; --quick 30)")
    p.add_argument("--live-rate", type=float, help=f"live fills/s (default {targets.LATENCY_RATE:,}; --fleet-live 50)")
    p.add_argument("--fleet-live", action="store_true", help="the demo's fleet at a live rate: CPU and memory")
    p.add_argument("--warmup-s", type=float, default=60.0, help="--fleet-live: seconds before measuring")
    p.add_argument("--label", default="", help="--fleet-live: a word added to the results' file names")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a service setting (repeatable)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "bench" / "results"))
    p.add_argument("--workdir", help="keep data and logs here (default: a temp folder, removed afterwards)")
    p.add_argument("--skip-dedup", action="store_true", help="leave out the unique-insert measurement")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fleet_live:
        return fleet_live_main(args)
    mode = "quick" if args.quick else "full"
    history, live_s = MODES[mode]
    history = args.fills or history
    live_s = args.live_s if args.live_s is not None else live_s
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    try:
        env = dict(item.split("=", 1) for item in args.env)
        result = run_bench(mode, history, live_s, args.live_rate or float(targets.LATENCY_RATE), workdir, env)
        if not args.skip_dedup:
            result["dedup"] = dedup_phase(print)
    except (TimeoutError, RuntimeError) as exc:
        print(f"bench: {exc} (logs in {workdir})", file=sys.stderr)
        return 1
    paths = write_results(result, Path(args.out))
    print(paths["summary"])
    print(f"written: {', '.join(str(p) for k, p in paths.items() if k != 'summary')}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def fleet_live_main(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pipeline-fleet-live-"))
    env = dict(item.split("=", 1) for item in args.env)
    live_s = args.live_s if args.live_s is not None else 180.0
    try:
        result = run_fleet_live(args.live_rate or 50.0, args.warmup_s, live_s, workdir, env)
    except (TimeoutError, RuntimeError) as exc:
        print(f"bench: {exc} (logs in {workdir})", file=sys.stderr)
        return 1
    print(f"written: {write_fleet_live(result, Path(args.out), args.label)}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
