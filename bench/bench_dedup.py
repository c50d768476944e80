"""Benchmark: what keeping every table unique by `id` costs (common/unique_insert.py), with 10M rows stored.

    python bench/bench_dedup.py [--seed-rows 10000000] [--fills 100000] [--json]

Starts its own redis-server and embedded ClickHouse (over HTTP, as the services reach it) in a temp folder and
seeds `trades` with `--seed-rows` rows (`INSERT ... SELECT ... FROM numbers(N)`, 25 fills a second, ending where the
benchmark's fills begin; `order_filled_events` is a view over it). Then:
1. the check alone (`select_new`) on 10,000-fill batches: new fills (the live case) and fills already stored (a
   re-run or the second source), milliseconds per batch and microseconds per fill, client and server CPU;
2. the writer end to end (`clickhouse_writer --once` over the trades of `--fills` fills) with the check off
   (CLICKHOUSE_UNIQUE_KEYS=false, the bench knob) and on: rows/s, and CPU per row of the writer and of ClickHouse.
Prints one line per figure with the load average beside it; `--json` prints the figures as one JSON object last
(`python -m pipeline bench` adds them to its report).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import deployment, tables
from common.clickhouse import apply_migrations, make_client
from common.config import ClickHouseSettings, StreamSettings
from common.redis_client import make_redis
from common.unique_insert import first_of_each_id, select_new
from pipeline.harness.fleet import load_average, read_cpu_s
from processors import clickhouse_writer, trade_processor
from processors.rows import IMMUTABLE
from tests.fixtures.clickhouse_server import ClickHouseServer
from tests.fixtures.fills_world import make_fills, make_markets, publish_fills, publish_markets
from tests.fixtures.redis_server import RedisServer, free_port

SEED_ROWS = 10_000_000  # rows stored in trades before measuring
FILLS = 100_000  # fills through the writer, with the check and without
STREAMS = StreamSettings(block_ms=100, trim_interval_s=1.0)
FILLS_START_TS = 1_777_000_000
SEED_FILLS_PER_S = 25
BATCH = 10_000


def seed(client: Any, rows: int) -> None:
    base = FILLS_START_TS - rows // SEED_FILLS_PER_S
    ts = f"toDateTime({base} + intDiv(number, {SEED_FILLS_PER_S}))"
    fill_id = "concat('0x', hex(cityHash64(number)), '_0x', hex(number))"
    client.command(f"INSERT INTO {tables.TRADES} (id, timestamp, token_id) "
                   f"SELECT {fill_id}, {ts}, toString(number % 5000) FROM numbers({rows})")  # fmt: skip


KEY_COLUMNS = ("id", "timestamp")  # all the check reads of a row


def time_check(
    client: Any, server_pid: int, table: str, rows: list[tuple[str, int]], consistency: dict[str, Any]
) -> dict[str, float]:
    """The check of `rows` in batches of BATCH, read with `consistency` (the deployment's check settings): ms per
    batch, µs per fill (client wall clock, server CPU)."""
    # as columns, as the writer has them (built before the clock starts)
    batches = [[list(column) for column in zip(*rows[start : start + BATCH], strict=True)]
               for start in range(0, len(rows), BATCH)]  # fmt: skip
    started, server_cpu = time.perf_counter(), read_cpu_s(server_pid)
    new = 0
    for batch in batches:
        new += len(select_new(client, table, KEY_COLUMNS, batch, first_of_each_id(batch, KEY_COLUMNS, IMMUTABLE),
                              IMMUTABLE, consistency)[0])  # fmt: skip
    seconds, server_s = time.perf_counter() - started, read_cpu_s(server_pid) - server_cpu
    return {
        "new": new,
        "ms_per_batch": round(seconds * 1e3 * BATCH / len(rows), 1),
        "us_per_fill": round(seconds * 1e6 / len(rows), 2),
        "server_cpu_us_per_fill": round(server_s * 1e6 / len(rows), 2),
    }


def check_figures(ch: ClickHouseSettings, server_pid: int, fills: list[Any]) -> dict[str, Any]:
    """The check of new fills (after the stored ones) and of fills stored already, in `trades`."""
    client = make_client(ch)
    try:
        fresh = [(fill.id, fill.timestamp) for fill in fills]
        figures: dict[str, Any] = {}
        for table in (tables.TRADES,):
            stored = client.query(
                f"SELECT id, toUInt32(timestamp) AS ts FROM {table} ORDER BY ts DESC LIMIT {len(fresh)}"
            )
            present = [(row[0], int(row[1])) for row in reversed(stored.result_rows)]
            consistency = dict(deployment.PROFILES[ch.deployment].check_settings)
            figures[table] = {"new": time_check(client, server_pid, table, fresh, consistency),
                              "stored": time_check(client, server_pid, table, present, consistency)}  # fmt: skip
        return figures
    finally:
        client.close()


async def time_writer(redis_settings: Any, ch: ClickHouseSettings, server_pid: int, rows: int) -> dict[str, Any]:
    cpu, server_cpu, started = time.process_time(), read_cpu_s(server_pid), time.perf_counter()
    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch,
                                streams=STREAMS, once=True)  # fmt: skip
    seconds = time.perf_counter() - started
    return {"rows": rows, "rows_per_s": round(rows / seconds), "seconds": round(seconds, 2),
            "writer_cpu_us_per_row": round((time.process_time() - cpu) * 1e6 / rows, 1),
            "server_cpu_us_per_row": round((read_cpu_s(server_pid) - server_cpu) * 1e6 / rows, 1),
            "load_average": load_average()}  # fmt: skip


def print_check(check: dict[str, Any]) -> None:
    for table, cases in check.items():
        for case, f in cases.items():
            print(f"check {table} ({case} fills): {f['ms_per_batch']} ms per {BATCH:,}-fill batch, {f['us_per_fill']} "
                  f"µs/fill, ClickHouse CPU {f['server_cpu_us_per_fill']} µs/fill, load {load_average()}")  # fmt: skip


async def writer_phase(redis_server: RedisServer, ch: ClickHouseSettings, server_pid: int, fills_n: int) -> dict:
    """The writer over the trades of `fills_n` new fills, without the check and then with it."""
    rng = random.Random(2)
    markets = make_markets(rng, 200)
    redis = make_redis(redis_server.settings)
    figures: dict[str, Any] = {}
    try:
        await publish_markets(redis, markets)
        start_ts = FILLS_START_TS + 10**6  # after the check phase's fills
        for label, unique in (("without check", False), ("with check", True)):
            fills = make_fills(rng, markets, groups=fills_n // 3, start_ts=start_ts)
            start_ts = fills[-1].timestamp + 1
            await publish_fills(redis, fills)
            await trade_processor.run(trade_processor.ProcessorSettings(), redis=redis_server.settings,
                                      streams=STREAMS, once=True)  # fmt: skip
            f = figures[label] = await time_writer(redis_server.settings, ch.model_copy(update={"unique_keys": unique}),
                                                   server_pid, len(fills))  # fmt: skip
            print(f"writer {label}: {f['rows_per_s']:,} rows/s ({f['rows']:,} rows in {f['seconds']} s), writer CPU "
                  f"{f['writer_cpu_us_per_row']} µs/row, ClickHouse CPU {f['server_cpu_us_per_row']} µs/row, "
                  f"load {f['load_average']}")  # fmt: skip
    finally:
        await redis.aclose()
    return figures


async def bench(seed_rows: int, fills_n: int, workdir: Path) -> dict[str, Any]:
    (workdir / "redis").mkdir()
    redis_server = RedisServer(workdir / "redis", free_port())
    redis_server.start()
    server = ClickHouseServer(workdir / "clickhouse", free_port())
    server.start()
    assert server.process is not None
    ch = ClickHouseSettings(host="127.0.0.1", port=server.port, database="bench_dedup", batch_size=BATCH)
    result: dict[str, Any] = {"seed_rows": seed_rows, "load_average_start": load_average()}
    try:
        apply_migrations(ch)
        client = make_client(ch)
        started = time.perf_counter()
        seed(client, seed_rows)
        client.close()
        print(f"seeded {seed_rows:,} rows into trades in {time.perf_counter() - started:.0f} s, "
              f"load {load_average()}")  # fmt: skip
        rng = random.Random(1)
        # new fills among the stored ones (the seconds they fall in hold stored rows): the check reads those seconds
        check_fills = make_fills(rng, make_markets(rng, 200), groups=5 * BATCH // 3, start_ts=FILLS_START_TS - 3000)
        result["check"] = check_figures(ch, server.process.pid, check_fills)
        print_check(result["check"])
        result["writer"] = await writer_phase(redis_server, ch, server.process.pid, fills_n)
    finally:
        server.stop()
        redis_server.stop()
    result["load_average_end"] = load_average()
    return result


def run(seed_rows: int = SEED_ROWS, fills_n: int = FILLS) -> dict[str, Any]:
    """The whole benchmark in a temporary folder: its figures (`python -m pipeline bench` calls this)."""
    with tempfile.TemporaryDirectory() as workdir:
        return asyncio.run(bench(seed_rows, fills_n, Path(workdir)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-rows", type=int, default=SEED_ROWS)
    parser.add_argument("--fills", type=int, default=FILLS)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object last")
    args = parser.parse_args()
    result = run(args.seed_rows, args.fills)
    if args.json:
        print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
