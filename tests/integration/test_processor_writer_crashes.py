"""Crashes and outages: SIGKILLed processor and writer, and a ClickHouse that goes away (issue 5's proofs).

The services run as real subprocesses (`python -m processors.…`), configured only through the environment,
exactly as supervisord runs them.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import redis.asyncio as aioredis

from common import keys, tables
from common.clickhouse import apply_migrations, make_client
from common.config import ClickHouseSettings, StreamSettings
from common.errors import SinkCommandError
from common.payloads import decode_dead_letter
from common.streams import Finished, StreamConsumer
from processors import clickhouse_writer, trade_processor
from tests.fixtures.fills_world import expected_trade, make_fills, make_markets, publish_fills, publish_markets
from tests.fixtures.helpers import wait_until
from tests.fixtures.redis_server import group_backlog

FILL_TABLES = tables.FILL_TABLES
SERVICES = {"trade_processor": "processors.trade_processor", "clickhouse_writer": "processors.clickhouse_writer"}


@pytest.fixture
def database(clickhouse_server):
    name = f"crash_{uuid.uuid4().hex[:8]}"
    yield name
    client = clickhouse_server.client()
    client.command(f"DROP DATABASE IF EXISTS {name}")
    client.close()


def service_env(redis_server, clickhouse_server, database: str, log_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_server.port),
        "CLICKHOUSE_HOST": "127.0.0.1",
        "CLICKHOUSE_PORT": str(clickhouse_server.port),
        "CLICKHOUSE_DATABASE": database,
        "CLICKHOUSE_BATCH_SIZE": "3000",
        "CLICKHOUSE_FLUSH_INTERVAL_S": "0.05",
        "CLICKHOUSE_INSERT_MAX_ATTEMPTS": "2",
        "CLICKHOUSE_CONNECT_TIMEOUT_S": "1",
        "STREAM_BLOCK_MS": "100",
        "STREAM_TRIM_INTERVAL_S": "0.5",
        "TRADE_PROCESSOR_BATCH_MAX": "2000",
        "LOG_DIR": str(log_dir),
        "LOG_FORMAT": "json",
    }


def start(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", SERVICES[name]], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


async def drained(redis: aioredis.Redis) -> bool:
    """Every group of every stream has been given every entry and acked it."""
    for stream, groups in keys.STREAM_GROUPS.items():
        if not await redis.exists(stream):
            continue
        names = {g["name"].decode() for g in await redis.xinfo_groups(stream)}
        for group in groups:
            if group not in names or await group_backlog(redis, stream, group):
                return False
    return True


async def wait_drained(redis: aioredis.Redis, timeout_s: float) -> None:
    await wait_until(lambda: drained(redis), "the pipeline drained", timeout_s=timeout_s, interval_s=0.2)


def stop_all(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM every service at once, then wait for each (each finishes its batch first)."""
    for process in processes.values():
        process.send_signal(signal.SIGTERM)
    for process in processes.values():
        process.wait(20)


def assert_exactly_once(settings: ClickHouseSettings, fills, markets) -> None:
    client = make_client(settings)
    try:
        for table in FILL_TABLES:
            count, unique = client.query(f"SELECT count(), uniqExact(id) FROM {table}").result_rows[0]
            assert (table, count, unique) == (table, len(fills), len(fills))
        usd = Decimal(client.command("SELECT toString(sum(usd_amount)) FROM trades"))
        assert usd == sum(Decimal(expected_trade(f, markets)["usd_amount"]) for f in fills)
    finally:
        client.close()


async def test_killing_processor_and_writer_ten_times_each_loses_and_duplicates_nothing(
    redis_server, clickhouse_server, redis_client, database, tmp_path
):
    rng = random.Random(42)
    markets = make_markets(rng, 20)
    fills = make_fills(rng, markets, groups=12_000)  # ~42,000 fills
    await publish_markets(redis_client, markets)
    env = service_env(redis_server, clickhouse_server, database, tmp_path)
    processes = {name: start(name, env) for name in SERVICES}
    chunks = [fills[i::10] for i in range(10)]
    kills = {name: 0 for name in SERVICES}
    try:
        for round_ in range(20):
            if chunks:
                await publish_fills(redis_client, chunks.pop())
            victim = "trade_processor" if round_ % 2 == 0 else "clickhouse_writer"
            await asyncio.sleep(rng.uniform(0.6, 1.6))
            processes[victim].send_signal(signal.SIGKILL)
            processes[victim].wait(10)
            kills[victim] += 1
            processes[victim] = start(victim, env)
        await wait_drained(redis_client, timeout_s=90)
    finally:
        stop_all(processes)

    assert kills == {"trade_processor": 10, "clickhouse_writer": 10}
    settings = ClickHouseSettings(host="127.0.0.1", port=clickhouse_server.port, database=database)
    assert_exactly_once(settings, fills, markets)
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0


async def test_clickhouse_down_30s_loses_nothing_and_backlog_drains(
    redis_server, clickhouse_server, redis_client, database, tmp_path
):
    rng = random.Random(7)
    markets = make_markets(rng, 10)
    fills = make_fills(rng, markets, groups=3000)
    await publish_markets(redis_client, markets)
    env = service_env(redis_server, clickhouse_server, database, tmp_path)
    processes = {name: start(name, env) for name in SERVICES}
    try:
        await publish_fills(redis_client, fills[: len(fills) // 2])
        await wait_drained(redis_client, timeout_s=60)
        clickhouse_server.stop()
        try:
            await publish_fills(redis_client, fills[len(fills) // 2 :])
            await asyncio.sleep(30)
            # while ClickHouse is away the backlog waits in Redis, and the writer is alive and says why
            assert processes["clickhouse_writer"].poll() is None
            heartbeat = await redis_client.hgetall(keys.service_key("clickhouse_writer"))
            assert heartbeat[b"state"] == b"degraded"
            assert b"clickhouse" in heartbeat[b"last_error"]
            assert not await drained(redis_client)
        finally:
            clickhouse_server.start()
        await wait_drained(redis_client, timeout_s=90)
    finally:
        stop_all(processes)
    settings = ClickHouseSettings(host="127.0.0.1", port=clickhouse_server.port, database=database)
    assert_exactly_once(settings, fills, markets)


async def test_a_batch_whose_insert_landed_but_whose_ack_failed_is_replayed_entry_by_entry_without_a_duplicate(
    redis_client, redis_settings, clickhouse_server, database, monkeypatch
):
    """The bisection path: one row of the batch is refused by `trades` (log_index beyond its UInt32), so the insert
    bisects and the other rows land; then the ack fails (as if the process died on that line), so the
    consumer rewinds and re-reads the batch one entry at a time, each with a token of its own."""
    settings = ClickHouseSettings(host="127.0.0.1", port=clickhouse_server.port, database=database, batch_size=5000,
                                  flush_interval_s=0.05, insert_max_attempts=2)  # fmt: skip
    apply_migrations(settings)
    client = make_client(settings)
    client.command(f"SYSTEM STOP MERGES {database}.{tables.TRADES}")  # a duplicate would stay visible
    markets = make_markets(random.Random(3), 5)
    fills = make_fills(random.Random(3), markets, groups=60)
    refused = msgspec.structs.replace(fills[0], log_index=2**40)
    await publish_markets(redis_client, markets)
    await publish_fills(redis_client, [*fills[1:], refused])
    await trade_processor.run(trade_processor.ProcessorSettings(), redis=redis_settings,
                              streams=StreamSettings(block_ms=50), once=True)  # fmt: skip
    real_finish = StreamConsumer.finish
    failed: list[int] = []

    async def finish_failing_once(self: StreamConsumer, done: Any, output_stream: str | None = None) -> Finished:
        if self.stream == keys.STREAM_TRADES and not failed:
            failed.append(len(done))
            raise SinkCommandError("the process died before the ack", sink="redis")
        return await real_finish(self, done, output_stream)

    monkeypatch.setattr(StreamConsumer, "finish", finish_failing_once)
    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=settings,
                                streams=StreamSettings(block_ms=50), once=True)  # fmt: skip

    assert failed == [len(range(0, len(fills), 100))]  # the whole batch (2 pages) had landed, bisected around the row
    for table in FILL_TABLES:
        count, unique = client.query(f"SELECT count(), uniqExact(id) FROM {table}").result_rows[0]
        assert (table, count, unique) == (table, len(fills) - 1, len(fills) - 1)
    client.close()
    heartbeat = await redis_client.hgetall(keys.service_key("clickhouse_writer"))
    # the isolated replays inserted nothing
    assert int(heartbeat[b"count:duplicates_skipped"]) == len(fills) - 1
    (letter,) = [decode_dead_letter(fields[b"data"]) for _, fields in await redis_client.xrange(keys.STREAM_DLQ)]
    assert (letter.stream, orjson.loads(letter.payload)["id"]) == (keys.STREAM_TRADES, refused.id)
    assert "rejected by clickhouse (trades)" in letter.error
