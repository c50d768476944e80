"""REDIS_KEY_PREFIX: a prefix change strands nothing. A service refuses to start while the pipeline's keys live
under another prefix, naming `python -m pipeline migrate-keys`, which moves them keeping a stream's groups and
pending entries (RENAMENX on one server; the cross-slot copy is tested on a real cluster in tests/scaleout)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from common import keys
from common.errors import ConfigError
from common.key_prefix import check_key_prefix, migrate_keys
from common.payloads import Heartbeat, encode_heartbeat
from common.service import run_worker
from tests.fixtures.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


async def seed_pipeline_keys(redis: aioredis.Redis, prefix: str) -> None:
    """A stream with a group and one pending entry, a cursor, a hash and an expiring lock, under `prefix`."""
    stream = prefix + "stream:order_events"
    await redis.xadd(stream, {"data": b"a"})
    await redis.xadd(stream, {"data": b"b"})
    await redis.xgroup_create(stream, "trade-processor", id="0")
    await redis.xreadgroup("trade-processor", "worker-1", {stream: ">"}, count=1)
    await redis.set(prefix + "state:chain_last_block", "42")
    await redis.hset(prefix + "markets:by_token", "t1", "m1")
    await redis.set(prefix + "lock:insert:trades", "writer", ex=300)
    await redis.hset(prefix + "stream:items", stream, 2)
    await redis.set("unrelated:key", "not the pipeline's")


async def test_a_service_refuses_to_start_while_the_keys_live_under_another_prefix(redis_client, redis_settings):
    await seed_pipeline_keys(redis_client, "{pm}:")
    with pytest.raises(ConfigError, match=r"REDIS_KEY_PREFIX is '' .*migrate-keys --from '\{pm\}:'"):
        await check_key_prefix(redis_client)

    ran = []

    async def body(service):  # never reached
        ran.append(service)

    with pytest.raises(ConfigError, match="migrate-keys"):
        await run_worker("demo", redis_settings, body)
    assert ran == []


async def test_no_pipeline_keys_or_only_this_prefix_passes(redis_client):
    await check_key_prefix(redis_client)  # empty Redis
    await redis_client.set("stream_of_consciousness", "x")  # not a pipeline name
    await seed_pipeline_keys(redis_client, keys.PREFIX)
    await check_key_prefix(redis_client)


async def test_migrate_keys_renames_keeping_groups_pending_entries_and_ttls(redis_client):
    await seed_pipeline_keys(redis_client, "")
    counts = await migrate_keys(redis_client, "", "{pm}:")
    assert counts == {"renamed": 5, "copied": 0}
    stream = "{pm}:stream:order_events"
    groups = await redis_client.xinfo_groups(stream)
    assert [(g["name"], g["pending"]) for g in groups] == [(b"trade-processor", 1)]
    pending = await redis_client.xpending_range(stream, "trade-processor", "-", "+", 10)
    assert [p["consumer"] for p in pending] == [b"worker-1"]
    assert await redis_client.get("{pm}:state:chain_last_block") == b"42"
    assert 0 < await redis_client.ttl("{pm}:lock:insert:trades") <= 300
    assert await redis_client.hgetall("{pm}:stream:items") == {stream.encode(): b"2"}  # counted under the new name
    assert await redis_client.exists("stream:order_events", "state:chain_last_block", "markets:by_token") == 0
    assert await redis_client.get("unrelated:key") == b"not the pipeline's"


async def test_migrate_keys_refuses_before_moving_anything_when_a_target_exists(redis_client):
    await seed_pipeline_keys(redis_client, "")
    await redis_client.set("{pm}:state:chain_last_block", "7")
    with pytest.raises(ConfigError, match="exist already"):
        await migrate_keys(redis_client, "", "{pm}:")
    assert await redis_client.exists("stream:order_events") == 1


def run_cli(redis_server: RedisServer, *args: str, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env |= {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port), "REDIS_KEY_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


async def test_the_command_refuses_while_a_service_heartbeats_then_moves(redis_client, redis_server):
    await seed_pipeline_keys(redis_client, "")
    running = Heartbeat(state="running", heartbeat_at=time.time())
    await redis_client.hset(keys.service_key("trade_processor"), mapping=encode_heartbeat(running))
    refused = run_cli(redis_server, "migrate-keys", "--from", "", "--yes", prefix="{pm}:")
    assert refused.returncode == 1
    assert "services still running (service:trade_processor)" in refused.stderr
    await redis_client.hset(keys.service_key("trade_processor"), "state", "stopped")
    moved = run_cli(redis_server, "migrate-keys", "--yes", prefix="{pm}:")
    assert moved.returncode == 0, moved.stderr
    assert "6 renamed, 0 copied across slots" in moved.stdout
    assert await redis_client.exists("{pm}:service:trade_processor", "{pm}:stream:order_events") == 2
