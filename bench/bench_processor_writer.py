"""Benchmark: trade processor fills/s and ClickHouse writer rows/s, each in one process on one core.

    python bench/bench_processor_writer.py [--fills 200000] [--batch-size 50000] [--flow 1000000]

Starts its own redis-server (AOF, appendfsync always) and embedded ClickHouse on free ports in a temp folder.
1. processor: N fills already in `stream:order_events`, markets known; time `trade_processor --once`.
2. writer: the resulting N trades; time `clickhouse_writer --once` (fills/s: one row each, in `trades`;
   `order_filled_events` is a view over it), CLICKHOUSE_BATCH_SIZE `--batch-size`. Then the storage per fill:
   `bytes_on_disk` of the active parts of every table holding fills (`system.parts`, projections included), after
   `OPTIMIZE TABLE ... FINAL` so that the figure is the merged state the data settles in.
Each stage prints its rate and CPU-µs per fill of the service (this process: user +
system, threads included), of redis-server and of the embedded ClickHouse, with the load average beside it, and
this process's peak RSS over the stage (the kernel's high-water mark, reset at the stage's start) and how far it
rose above the RSS at the start: the peak includes the bench's own fills, the rise is what the stage added.
3. flow (with --flow M): processor and writer running together while M fills are appended at full speed;
   samples every stream's length and reports the maximum: trimming keeps Redis bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import keys
from common.clickhouse import make_client
from common.config import ClickHouseSettings, StreamSettings
from common.redis_client import make_redis
from common.service import tune_gc
from pipeline.harness.fleet import load_average, read_cpu_s, read_status_kb
from processors import clickhouse_writer, trade_processor
from tests.fixtures.clickhouse_server import ClickHouseServer
from tests.fixtures.fills_world import make_fills, make_markets, publish_fills, publish_markets
from tests.fixtures.redis_server import RedisServer, free_port

STREAMS = StreamSettings(block_ms=100, trim_interval_s=1.0)


class StageClock:
    """Wall time and CPU seconds of this process, redis-server and the embedded ClickHouse over one stage."""

    def __init__(self, redis_pid: int, clickhouse_pid: int) -> None:
        self.pids = {"redis": redis_pid, "clickhouse": clickhouse_pid}

    def cpu_s(self) -> dict[str, float]:
        times = os.times()
        return {"service": times.user + times.system} | {name: read_cpu_s(pid) for name, pid in self.pids.items()}

    def __enter__(self) -> StageClock:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS, so the peak is this stage's
        self.rss_before_mb = read_status_kb(os.getpid(), "VmRSS") / 1024
        self.cpu_before, self.started = self.cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu = {name: s - self.cpu_before[name] for name, s in self.cpu_s().items()}
        self.peak_rss_mb = read_status_kb(os.getpid(), "VmHWM") / 1024

    def report(self, stage: str, units: int, unit: str) -> str:
        per_unit = ", ".join(f"{name} {s * 1e6 / units:.1f}" for name, s in self.cpu.items())
        total = sum(self.cpu.values()) * 1e6 / units
        return (f"{stage}: {units / self.seconds:,.0f} {unit}s/s ({units:,} in {self.seconds:.2f} s); CPU-µs per "
                f"{unit}: {per_unit}, total {total:.1f}; peak RSS {self.peak_rss_mb:.0f} MB "
                f"(+{self.peak_rss_mb - self.rss_before_mb:.0f} over the stage's start); "
                f"load {load_average()}")  # fmt: skip


async def bench(fills_n: int, batch_size: int, flow_n: int, workdir: Path) -> None:
    redis_server = RedisServer(workdir / "redis", free_port())
    (workdir / "redis").mkdir()
    redis_server.start()
    clickhouse = ClickHouseServer(workdir / "clickhouse", free_port())
    clickhouse.start()
    ch = ClickHouseSettings(host="127.0.0.1", port=clickhouse.port, database="bench", batch_size=batch_size)
    redis = make_redis(redis_server.settings)
    try:
        rng = random.Random(1)
        markets = make_markets(rng, 200)
        fills = make_fills(rng, markets, groups=fills_n // 3)
        await publish_markets(redis, markets)
        await publish_fills(redis, fills, page_items=1000)  # the Goldsky ingester's pages in a backfill
        print(f"fills: {len(fills):,} (in stream:order_events)")

        assert redis_server.process is not None and clickhouse.process is not None
        with StageClock(redis_server.process.pid, clickhouse.process.pid) as clock:
            await trade_processor.run(trade_processor.ProcessorSettings(), redis=redis_server.settings,
                                      streams=STREAMS, once=True)  # fmt: skip
        print(clock.report("processor", len(fills), "fill"))

        with StageClock(redis_server.process.pid, clickhouse.process.pid) as clock:
            await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_server.settings,
                                        clickhouse=ch, streams=STREAMS, once=True)  # fmt: skip
        print(clock.report("writer", len(fills), "fill"))
        print(storage_per_fill(ch, len(fills)))
        if flow_n:
            await flow(redis, redis_server.settings, ch, rng, markets, flow_n)
    finally:
        await redis.aclose()
        clickhouse.stop()
        redis_server.stop()


def storage_per_fill(ch: ClickHouseSettings, fills_n: int) -> str:
    """Bytes on disk per fill of each table holding fills, merged (module docstring)."""
    client = make_client(ch)
    try:
        stored = client.query("SELECT name FROM system.tables WHERE database = {db:String} AND name IN "
                              "('trades', 'order_filled_events') AND engine LIKE '%MergeTree'",
                              parameters={"db": ch.database}).result_columns[0]  # fmt: skip
        for table in stored:
            client.command(f"OPTIMIZE TABLE {table} FINAL")
        sizes = dict(client.query("SELECT table, sum(bytes_on_disk) FROM system.parts WHERE database = {db:String} "
                                  "AND active AND table IN {names:Array(String)} GROUP BY table",
                                  parameters={"db": ch.database, "names": list(stored)}).result_rows)  # fmt: skip
    finally:
        client.close()
    per_table = ", ".join(f"{table} {int(sizes[table]) / fills_n:.1f}" for table in sorted(sizes))
    return (
        f"storage: bytes on disk per fill: {per_table}, total {sum(map(int, sizes.values())) / fills_n:.1f} "
        f"({fills_n:,} fills, merged); load {load_average()}"
    )


async def flow(redis, redis_settings, ch, rng, markets, total: int) -> None:
    stop = asyncio.Event()
    services = [
        asyncio.create_task(trade_processor.run(trade_processor.ProcessorSettings(), redis=redis_settings,
                                                streams=STREAMS, stop=stop)),
        asyncio.create_task(clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings,
                                                  clickhouse=ch, streams=STREAMS, stop=stop)),
    ]  # fmt: skip
    max_len = dict.fromkeys(keys.STREAM_GROUPS, 0)
    published = 0
    started = time.perf_counter()
    while published < total:
        chunk = make_fills(rng, markets, groups=20_000 // 3)
        await publish_fills(redis, chunk, page_items=1000)
        published += len(chunk)
        for stream in max_len:
            max_len[stream] = max(max_len[stream], await redis.xlen(stream))
    while (await redis.xinfo_groups(keys.STREAM_TRADES) or [{}])[0].get("lag", 1) or await redis.xlen(
        keys.STREAM_ORDER_EVENTS
    ) > 50_000:
        for stream in max_len:
            max_len[stream] = max(max_len[stream], await redis.xlen(stream))
        await asyncio.sleep(0.5)
    seconds = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*services)
    info = await redis.info("memory")
    print(f"flow: {published:,} fills through processor + writer in {seconds:.1f} s ({published / seconds:,.0f}/s)")
    print("flow: max stream lengths " + ", ".join(f"{s}={n:,}" for s, n in max_len.items()))
    print(f"flow: redis used_memory at the end {info['used_memory'] / 2**20:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=50_000, help="the writer's CLICKHOUSE_BATCH_SIZE")
    parser.add_argument("--flow", type=int, default=0, help="fills to push through both services together")
    args = parser.parse_args()
    tune_gc()  # as service_main does for every service process
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(bench(args.fills, args.batch_size, args.flow, Path(workdir)))


if __name__ == "__main__":
    main()
