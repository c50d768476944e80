"""`python -m pipeline chaos`: the whole pipeline under SIGKILLs and upstream faults, then checked against the truth.

    python -m pipeline chaos [--fills 300000] [--kills 20] [--kill-interval-s 3] [--seed 1]
                             [--faults 429=0.05,500=0.05,timeout=0.02,truncate=0.03]

Starts the simulator, Redis, the embedded ClickHouse and the six services as separate processes
(pipeline/harness/fleet.py).
Half of the fills are history (v1 through Goldsky and, unless `--disjoint-sources`, also through the chain ingester,
started at the first block: both sources serve the same v1 fills, as issue 13 asks; v2 through the chain), the
other half are produced live while a
service is SIGKILLed every few seconds, so kills land while data flows. Victims rotate so every kind is hit (the four
ingesters, the processor, the writer, Redis and ClickHouse); each is restarted (the servers on the same port and data
folder) and must recover by itself. Then the live source stops, the pipeline drains, and `pipeline.harness.truth_check`
compares ClickHouse with the simulator's truth. One verdict line; exit code 0 on PASS, 1 on FAIL.

The simulator serves `finalized` = latest (lag 0), so the last live blocks are ingestible once production stops.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common import keys
from pipeline.harness.fleet import SERVICE_MODULES, Fleet, appended, load_average, wait_converged
from pipeline.harness.truth_check import Verdict, check_against_truth, fetch_truth

VICTIMS = (*SERVICE_MODULES, "redis", "clickhouse")
DEFAULT_FAULTS = "429=0.05,500=0.05,timeout=0.02,truncate=0.03"
SHORT_NAMES = {
    "polymarket_ingester": "markets",
    "polymarket_events_ingester": "events",
    "goldsky_ingester": "goldsky",
    "chain_ingester": "chain",
    "trade_processor": "processor",
    "clickhouse_writer": "writer",
    "redis": "redis",
    "clickhouse": "clickhouse",
}
# Late markets are listed 5 s after the simulator starts; a fill waits this long for its market (then market_id='').
UNKNOWN_MARKET_WAIT_S = 30


@dataclass
class ChaosResult:
    verdict: Verdict
    kills: Counter[str]
    seconds: float
    line: str
    not_converged: str = ""  # what did not drain in time, when something did not
    appended: int = 0  # fills appended to stream:order_events, by both sources
    served_twice: int = 0  # fills both sources served (the v1 history when they overlap)

    @property
    def passed(self) -> bool:
        return self.verdict.ok and not self.not_converged and all(self.kills[v] for v in VICTIMS)


def kill_schedule(rng: random.Random, kills: int) -> list[str]:
    """`kills` victims; each round of len(VICTIMS) kills hits every kind once, in a random order."""
    schedule: list[str] = []
    while len(schedule) < kills:
        round_ = list(VICTIMS)
        rng.shuffle(round_)
        schedule += round_
    return schedule[:kills]


def service_env() -> dict[str, str]:
    return {
        "UNKNOWN_MARKET_WAIT_S": str(UNKNOWN_MARKET_WAIT_S),
        "HTTP_READ_TIMEOUT_S": "5",
        "HTTP_CONNECT_TIMEOUT_S": "2",
        "HTTP_BACKOFF_BASE_S": "0.2",
        "HTTP_BACKOFF_MAX_S": "3",
        "CLICKHOUSE_CONNECT_TIMEOUT_S": "2",
        "CLICKHOUSE_INSERT_MAX_ATTEMPTS": "2",
        "CLICKHOUSE_BATCH_SIZE": "20000",
        "STREAM_CLAIM_INTERVAL_S": "5",
    }


def run_chaos(
    workdir: Path,
    *,
    fills: int,
    kills: int,
    kill_interval_s: float,
    faults: str,
    seed: int,
    converge_timeout_s: float = 300.0,
    overlap: bool = True,
    log=print,
) -> ChaosResult:
    rng = random.Random(seed)
    history = max(2, fills // 2)
    live_rate = max(100.0, (fills - history) / max(1.0, kills * kill_interval_s))
    sim_faults = faults if "timeout_s" in faults or not faults else f"{faults},timeout_s=2"
    sim_args = ["--seed", str(seed), "--history-fills", str(history), "--rate", f"{live_rate:.0f}"]
    sim_args += ["--finalized-lag-blocks", "0", "--live-block-interval-s", "1"]
    sim_args += ["--faults", sim_faults] if sim_faults else []
    started = time.monotonic()
    done: Counter[str] = Counter()
    with Fleet(workdir, simulator_args=sim_args, service_env=service_env()) as fleet:
        fleet.start_servers()
        if overlap:  # the chain ingester from the first block: every v1 fill arrives from both sources
            first_block = str(fetch_truth(fleet)["first_block"])
            fleet.programs["chain_ingester"].env["CHAIN_START_BLOCK"] = first_block
        fleet.start_services()
        log(f"chaos: {history:,} history fills + live at {live_rate:,.0f}/s, faults {sim_faults or 'none'}, "
            f"{kills} kills every ~{kill_interval_s:g} s, load {load_average()}, work dir {workdir}")  # fmt: skip
        for victim in kill_schedule(rng, kills):
            time.sleep(kill_interval_s * rng.uniform(0.5, 1.5))
            fleet.kill(victim)
            done[victim] += 1
            time.sleep(rng.uniform(0.0, 1.0))  # down for a moment: writes and reads fail meanwhile
            fleet.start(victim)
            log(f"  killed and restarted {victim} ({sum(done.values())}/{kills})")
        while int(fetch_truth(fleet)["count"]) < fills:  # keep the live source going until enough fills exist
            time.sleep(0.5)
        fleet.sim("POST", "/_sim/config", json={"rate": 0, "reset_faults": True, "faults": {}})
        truth = fetch_truth(fleet)
        log(f"  live source stopped at {truth['count']:,} fills; waiting for the pipeline to drain")
        not_converged = ""
        try:
            wait_converged(fleet, int(truth["count"]), converge_timeout_s)
        except TimeoutError as exc:
            not_converged = str(exc)
            log(f"  {exc}")
        verdict = check_against_truth(fleet, truth)
        client = fleet.redis()
        try:
            added = appended(client, keys.under(fleet.key_prefix, keys.STREAM_ORDER_EVENTS), fleet.key_prefix).count
        finally:
            client.close()
    seconds = time.monotonic() - started
    served_twice = int(truth["v1_count"]) if overlap else 0
    result = ChaosResult(verdict, done, seconds, "", not_converged, added, served_twice)
    result.line = verdict_line(result)
    return result


def verdict_line(result: ChaosResult) -> str:
    kills = ", ".join(f"{SHORT_NAMES[v]} {result.kills[v]}" for v in VICTIMS)
    status = "PASS" if result.passed else "FAIL"
    missing = [SHORT_NAMES[v] for v in VICTIMS if not result.kills[v]]
    extra = f" (never killed: {', '.join(missing)})" if missing else ""
    extra += " (did not drain in time)" if result.not_converged else ""
    return (
        f"chaos: {result.verdict.expected:,} fills, {sum(result.kills.values())} kills ({kills}), "
        f"{result.verdict.summary()}, {result.appended:,} fills appended ({result.served_twice:,} served "
        f"twice) in {result.seconds:.0f} s, load {load_average()} — {status}{extra}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--fills", type=int, default=300_000, help="fills to run through (half history, half live)")
    p.add_argument("--kills", type=int, default=20, help=f"SIGKILLs (at least {len(VICTIMS)}: one per kind)")
    p.add_argument("--kill-interval-s", type=float, default=3.0)
    p.add_argument("--faults", default=DEFAULT_FAULTS, help="simulator faults ('' for none)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout-s", type=float, default=300.0, help="how long to wait for the drain after the kills")
    p.add_argument("--workdir", help="keep data and logs here (default: a temp folder, removed on PASS)")
    p.add_argument("--disjoint-sources", action="store_true", help="the chain ingester from the v2 genesis only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kills < len(VICTIMS):
        print(f"chaos: --kills must be at least {len(VICTIMS)} so every kind is killed", file=sys.stderr)
        return 2
    keep = args.workdir is not None
    workdir = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix="pipeline-chaos-"))
    result = run_chaos(
        workdir,
        fills=args.fills,
        kills=args.kills,
        kill_interval_s=args.kill_interval_s,
        faults=args.faults,
        seed=args.seed,
        converge_timeout_s=args.timeout_s,
        overlap=not args.disjoint_sources,
    )
    for problem in result.verdict.problems:
        print(f"  problem: {problem}")
    print(result.line, flush=True)
    if result.passed and not keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    elif not result.passed:
        print(f"  logs and data kept in {workdir}")
    return 0 if result.passed else 1
