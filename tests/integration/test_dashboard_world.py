"""A small running pipeline for the dashboard and operator-command tests, and the dashboard served in a thread.

`dashboard_world` publishes markets (questions full of HTML: untrusted text), events and fills, runs the trade
processor and the ClickHouse writer over them (`once=True`) against the session's real Redis and embedded
ClickHouse (a database of its own per test), and adds heartbeats of a degraded and a dead ingester.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from common import keys
from common.clickhouse import make_client
from common.config import ClickHouseSettings, RedisSettings, StreamSettings
from common.payloads import OrderEvent
from dashboard.app import DashboardConfig, create_app
from dashboard.settings import DashboardSettings
from processors import clickhouse_writer, trade_processor
from tests.fixtures import fills_world
from tests.fixtures.fills_world import make_fills, make_markets, publish_fills

FAST_STREAMS = StreamSettings(block_ms=50, claim_min_idle_ms=5000, claim_interval_s=1.0, max_deliveries=3,
                              trim_interval_s=0.2)  # fmt: skip
HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def question_of(market: fills_world.TestMarket) -> str:
    return f"{HOSTILE}Will market {market.id} resolve <b>YES</b>?"


@dataclass
class World:
    redis: aioredis.Redis
    redis_settings: RedisSettings
    ch: ClickHouseSettings
    markets: list[fills_world.TestMarket]
    fills: list[OrderEvent]

    async def run_pipeline(self) -> None:
        """The processor and the writer over everything in the streams, then exit (state `stopped`)."""
        await trade_processor.run(trade_processor.ProcessorSettings(held_check_interval_s=0.1),
                                  redis=self.redis_settings, streams=FAST_STREAMS, once=True)  # fmt: skip
        await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=self.redis_settings,
                                    clickhouse=self.ch, streams=FAST_STREAMS, once=True)  # fmt: skip

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        client = make_client(self.ch)
        try:
            return [tuple(row) for row in client.query(sql).result_rows]
        finally:
            client.close()

    def query(self, sql: str) -> Any:
        client = make_client(self.ch)
        try:
            return client.command(sql)
        finally:
            client.close()


async def publish_markets_with_questions(redis: aioredis.Redis, markets: list[fills_world.TestMarket]) -> None:
    """The token map (what the processor and the dashboard read) and Gamma-shaped markets and events."""
    mapping = {}
    for market in markets:
        for index, token in enumerate(market.token_ids):
            ref = {"market_id": market.id, "condition_id": market.condition_id, "outcome": market.outcomes[index],
                   "outcome_index": index, "question": question_of(market)}  # fmt: skip
            mapping[token] = orjson.dumps(ref)
        gamma = {
            "id": market.id,
            "question": question_of(market),
            "conditionId": market.condition_id,
            "outcomes": orjson.dumps(list(market.outcomes)).decode(),
            "clobTokenIds": orjson.dumps(list(market.token_ids)).decode(),
            "updatedAt": "2026-01-01T00:00:00Z",
        }
        await redis.xadd(keys.STREAM_MARKETS, {"data": orjson.dumps(gamma)})  # fmt: skip
    await redis.hset(keys.MARKETS_BY_TOKEN, mapping=mapping)
    for index in range(2):
        event = {"id": f"90{index}", "title": f"{HOSTILE} event {index}", "updatedAt": "2026-01-01T00:00:00Z"}
        await redis.xadd(keys.STREAM_EVENTS, {"data": orjson.dumps(event)})


async def add_fake_heartbeats(redis: aioredis.Redis) -> None:
    now = time.time()
    await redis.hset(keys.service_key("goldsky_ingester"), mapping={
        "state": "degraded", "pid": "4242", "started_at": f"{now - 100:.3f}", "heartbeat_at": f"{now:.3f}",
        "last_error": "goldsky orderFilledEvents: HTTP 503 after 8 attempts", "last_error_at": f"{now - 1:.3f}",
        "count:fills": "1200", "count:pages": "3", "count:errors": "2",
    })  # fmt: skip
    await redis.hset(keys.service_key("chain_ingester"), mapping={
        "state": "running", "pid": "4343", "started_at": f"{now - 900:.3f}", "heartbeat_at": f"{now - 600:.3f}",
        "last_error": "", "last_error_at": "0.000", "count:fills": "77",
        "gauge:chain_head": "84903000", "gauge:safe_head": "84902500",
    })  # fmt: skip
    await redis.mset({keys.STATE_GOLDSKY_LAST_TIMESTAMP: str(int(now) - 30), keys.STATE_GOLDSKY_LAST_ID: "0xabc_0x1",
                      keys.STATE_CHAIN_LAST_BLOCK: "84902400"})  # fmt: skip


@pytest.fixture(name="dashboard_world")
async def dashboard_world_fixture(redis_client: aioredis.Redis, redis_settings: RedisSettings, ch_settings) -> World:
    rng = random.Random(21)
    markets = make_markets(rng, 5)
    fills = make_fills(rng, markets, groups=60)
    await publish_markets_with_questions(redis_client, markets)
    await publish_fills(redis_client, fills)
    world = World(redis_client, redis_settings, ch_settings, markets, fills)
    await world.run_pipeline()
    await add_fake_heartbeats(redis_client)
    return world


def dashboard_config(world: World, **dashboard: Any) -> DashboardConfig:
    settings = DashboardSettings(**{"sample_interval_s": 0.5, "clickhouse_refresh_s": 0.5, **dashboard})
    return DashboardConfig(settings, world.redis_settings, world.ch)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """uvicorn on a free loopback port in a daemon thread; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                            lifespan="on", loop="asyncio", http="h11", timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("dashboard failed to start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def running_dashboard(world: World, **dashboard: Any) -> Iterator[str]:
    with serve_in_thread(create_app(dashboard_config(world, **dashboard))) as url:
        yield url


async def until(read: Callable[[], Awaitable[Any]], predicate: Callable[[Any], bool], *, timeout_s: float) -> Any:
    """Poll `read` until `predicate` holds; raise with the last value at the deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await read()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last value {value!r}")
        await asyncio.sleep(0.05)


def set_pipeline_env(monkeypatch: pytest.MonkeyPatch, redis_settings: RedisSettings, ch: ClickHouseSettings) -> None:
    """Point the operator commands (which read the environment) at the test's Redis and ClickHouse database."""
    env = {
        "REDIS_HOST": redis_settings.host,
        "REDIS_PORT": str(redis_settings.port),
        "CLICKHOUSE_HOST": ch.host,
        "CLICKHOUSE_PORT": str(ch.port),
        "CLICKHOUSE_DATABASE": ch.database,
        "COLUMNS": "250",
    }  # fmt: skip  (rich wraps tables at the terminal width)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


async def run_command(main: Callable[[list[str]], int], *argv: str) -> int:
    """An operator command's `main` (which runs its own event loop) in a thread, as `python -m pipeline` would."""
    return await asyncio.to_thread(main, list(argv))
