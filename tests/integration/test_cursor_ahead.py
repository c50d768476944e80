"""A stored cursor past its source's head is an alarm, not a wait (ingesters/cursor_ahead.py).

The chain ingester with `state:chain_last_block` set past the simulator's head: beyond the tolerance it is
`degraded` once the grace period has passed, with a message naming the setting and `reset`; within the tolerance
it waits without an alarm. The same for Goldsky's cursor past the subgraph's newest fill. `doctor` fails on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from common import keys
from common.config import HttpSettings, RedisSettings, SourceSettings
from common.payloads import Heartbeat, decode_heartbeat
from ingesters import chain_ingester, goldsky_ingester
from ingesters.chain_ingester import ChainConfig, ChainSettings
from ingesters.goldsky_ingester import GoldskyConfig, GoldskySettings
from pipeline.ops import doctor
from tests.fixtures.simulator import SimulatorFactory

WORLD = {"seed": 6, "markets": 10, "history_fills": 800}
GRACE_S = 1.5
FAST_HTTP = HttpSettings(read_timeout_s=2.0, backoff_base_s=0.02, backoff_max_s=0.2)


def head_of(sim: Any) -> int:
    reply = httpx.post(sim.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    return int(reply.json()["result"], 16)


async def heartbeat(client: aioredis.Redis, name: str) -> Heartbeat:
    return decode_heartbeat(await client.hgetall(keys.service_key(name)))


async def watch(
    client: aioredis.Redis, name: str, run: Callable[[asyncio.Event], Awaitable[Any]], seconds: float
) -> list[tuple[float, Heartbeat]]:
    """Run a service for `seconds`, reading its heartbeat every 0.1 s: (seconds since start, heartbeat)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    started, seen = time.monotonic(), []
    while (elapsed := time.monotonic() - started) < seconds:
        await asyncio.sleep(0.1)
        seen.append((elapsed, await heartbeat(client, name)))
    stop.set()
    await task
    return seen


@pytest.fixture(autouse=True)
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_HEARTBEAT_INTERVAL_S", "0.1")


async def chain_with_cursor_ahead(
    sim: Any, client: aioredis.Redis, redis_settings: RedisSettings, lead: int
) -> tuple[int, list[tuple[float, Heartbeat]]]:
    """The chain ingester for 3.5 s with its cursor `lead` blocks past the head: (head, heartbeats seen)."""
    head = head_of(sim)
    await client.set(keys.STATE_CHAIN_LAST_BLOCK, head + lead)
    settings = ChainSettings(cursor_ahead_grace_s=GRACE_S, poll_interval_s=0.2)  # tolerance: the default, 8
    sources = SourceSettings(polygon_rpc_url=SecretStr(sim.rpc_url))
    config = ChainConfig(settings, sources, FAST_HTTP, redis_settings)
    return head, await watch(client, chain_ingester.NAME, lambda stop: chain_ingester.run(config, stop=stop), 3.5)


async def test_chain_cursor_past_the_head_beyond_the_tolerance_degrades_after_the_grace_period(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    head, seen = await chain_with_cursor_ahead(simulator(**WORLD), redis_client, redis_settings, 9)

    early = [hb for at, hb in seen if 0.3 < at < GRACE_S - 0.3]
    assert early and all(hb.state == "running" and not hb.last_error for hb in early)  # within the grace period
    late = seen[-1][1]
    assert late.state == "degraded", seen[-1]
    assert f"{head + 9:,} is 9 blocks past the node's head {head:,}" in late.last_error
    assert "CHAIN_CURSOR_AHEAD_TOLERANCE_BLOCKS=8" in late.last_error
    assert "python -m pipeline reset" in late.last_error
    assert await redis_client.get(keys.STATE_CHAIN_LAST_BLOCK) == str(head + 9).encode()  # the cursor stays


async def test_chain_cursor_within_the_tolerance_waits_without_an_alarm(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    _, seen = await chain_with_cursor_ahead(simulator(**WORLD), redis_client, redis_settings, 8)

    running = [hb for at, hb in seen if at > 0.3]
    assert running and all(hb.state == "running" and not hb.last_error for hb in running), seen[-1]


async def test_goldsky_cursor_past_the_newest_fill_degrades_after_the_grace_period(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**WORLD)
    newest = max(fill["timestamp"] for fill in sim.truth()["fills"] if "goldsky" in fill["sources"])
    await redis_client.set(keys.STATE_GOLDSKY_LAST_TIMESTAMP, newest + 61)
    await redis_client.set(keys.STATE_GOLDSKY_LAST_ID, "0x")
    settings = GoldskySettings(cursor_ahead_grace_s=GRACE_S, poll_interval_s=0.2)  # tolerance: the default, 60 s
    config = GoldskyConfig(settings, SourceSettings(goldsky_url=sim.goldsky_url), FAST_HTTP, redis_settings)

    seen = await watch(redis_client, goldsky_ingester.NAME, lambda stop: goldsky_ingester.run(config, stop=stop), 3.5)

    assert all(hb.state == "running" for at, hb in seen if 0.3 < at < GRACE_S - 0.3)
    late = seen[-1][1]
    assert late.state == "degraded", seen[-1]
    assert f"newest fill at {newest:,}" in late.last_error and "GOLDSKY_CURSOR_AHEAD_TOLERANCE_S=60" in late.last_error


async def test_doctor_fails_on_a_chain_cursor_past_the_head(
    simulator: SimulatorFactory,
    redis_client: aioredis.Redis,
    redis_settings: RedisSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = simulator(**WORLD)
    for name, value in {**sim.env(), "REDIS_PORT": str(redis_settings.port), "COLUMNS": "400"}.items():
        monkeypatch.setenv(name, value)
    head = head_of(sim)
    await redis_client.set(keys.STATE_CHAIN_LAST_BLOCK, head - 100)
    assert await asyncio.to_thread(doctor.main, ["--blocks", "100", "--only", "sources"]) in (0, 1)
    assert "OK    cursors" in capsys.readouterr().out

    await redis_client.set(keys.STATE_CHAIN_LAST_BLOCK, head + 50)
    assert await asyncio.to_thread(doctor.main, ["--blocks", "100", "--only", "sources"]) == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if "cursors" in line)
    assert line.startswith("FAIL") and f"{head + 50:,} is 50 blocks past the node's head {head:,}" in line
