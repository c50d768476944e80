"""Benchmark: Goldsky backfill fills/s with 1 range and with N concurrent ranges, 50 ms added to every request.

    python bench/bench_goldsky_backfill.py [--fills 250000] [--latency-ms 50] [--workers 4] [--rate-limit 100]

Starts the simulator (`python -m simulator`, its own process, so it doesn't share the GIL with the ingester) with
`latency_ms` added to every request, and a redis-server (AOF, appendfsync always) in a temp folder. Then runs
`goldsky_ingester.backfill()` over the whole v1 history once with 1 range and once with N (Redis flushed in
between) and checks that both runs wrote exactly the subgraph's fills. The rate limit defaults to Goldsky's
published 100 req/s (the service's default is 50).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import HttpSettings, LogSettings, SourceSettings
from common.log import configure_logging
from common.redis_client import make_redis
from ingesters import goldsky_ingester
from ingesters.goldsky_ingester import GoldskyConfig, GoldskySettings
from simulator.constants import block_timestamp
from tests.fixtures.redis_server import RedisServer, free_port
from tests.fixtures.simulator import start_simulator_process


async def timed_backfill(config: GoldskyConfig, first: int, last: int, workers: int) -> tuple[int, float]:
    redis = make_redis(config.redis)
    await redis.flushall()
    await redis.aclose()
    started = time.perf_counter()
    fills = await goldsky_ingester.backfill(config, start_ts=first, end_ts=last, workers=workers)
    return fills, time.perf_counter() - started


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    redis_server = RedisServer(workdir, free_port())
    redis_server.start()
    sim_port = free_port()
    sim_args = ("--history-fills", str(args.fills), "--v2-fills", "0", "--faults", f"latency_ms={args.latency_ms}")
    sim = start_simulator_process(sim_port, *sim_args, log_path=workdir / "simulator.log")
    try:
        truth = httpx.get(f"http://127.0.0.1:{sim_port}/_sim/truth", params={"fills": 0}, timeout=60).json()
        base = f"http://127.0.0.1:{sim_port}"
        # The history's time span: from its first block to the last block before the cutover.
        first_ts, last_ts = block_timestamp(truth["first_block"]), block_timestamp(truth["cutover_block"] - 1)
        source = SourceSettings(
            goldsky_url=base + "/goldsky/subgraphs/orderbook-subgraph/0.0.1/gn",
            polygon_rpc_url=SecretStr(base + "/rpc"),
        )
        settings = GoldskySettings(rate_limit_per_s=args.rate_limit)
        config = GoldskyConfig(settings, source, HttpSettings(), redis_server.settings)
        print(
            f"simulator: {truth['v1_count']:,} subgraph fills, {args.latency_ms:g} ms added per request; "
            f"rate limit {args.rate_limit:g} req/s"
        )
        results = {}
        for workers in (1, args.workers):
            fills, seconds = await timed_backfill(config, first_ts, last_ts, workers)
            assert fills == truth["v1_count"], f"{workers} ranges wrote {fills} fills, expected {truth['v1_count']}"
            results[workers] = fills / seconds
            print(f"{workers} range(s): {fills / seconds:,.0f} fills/s ({fills:,} fills in {seconds:.2f} s)")
        speedup = results[args.workers] / results[1]
        print(f"speed-up with {args.workers} ranges: {speedup:.2f}x")
        return 0 if speedup >= 3 or args.workers < 4 else 1
    finally:
        sim.terminate()
        sim.wait(30)
        redis_server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=250_000, help="subgraph (v1) fills in the simulated history")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate-limit", type=float, default=100.0, help="client-side req/s (Goldsky: 100)")
    args = parser.parse_args(argv)
    configure_logging("bench_goldsky_backfill", LogSettings(level="warning"), to_file=False)  # no line per page
    with tempfile.TemporaryDirectory() as workdir:
        return asyncio.run(bench(args, Path(workdir)))


if __name__ == "__main__":
    raise SystemExit(main())
