"""`python -m pipeline reset` against a real Redis and ClickHouse: exactly the listed keys go, and only on a yes."""

from __future__ import annotations

import builtins

from common import keys
from pipeline.ops import reset as ops_reset
from tests.fixtures.dashboard_world import run_command, set_pipeline_env

RESET_PATTERNS = ("stream:*", "state:*", "markets:*", "events:*", "failures:*", "service:*")


async def pipeline_keys(redis) -> set[str]:
    return {key.decode() for pattern in RESET_PATTERNS for key in await redis.keys(pattern)}


async def test_reset_refuses_while_a_service_heartbeats_and_without_a_yes(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    before = await pipeline_keys(world.redis)
    assert await run_command(ops_reset.main, "--yes") == 1  # goldsky_ingester heartbeats (degraded)
    assert "services still running: goldsky_ingester" in capsys.readouterr().err
    monkeypatch.setattr(builtins, "input", lambda prompt: "n")
    assert await run_command(ops_reset.main, "--force") == 1
    listing = capsys.readouterr().out
    assert "stream:order_events" in listing and "state:*" in listing and "service:*" in listing
    assert await pipeline_keys(world.redis) == before


async def test_reset_deletes_streams_and_state_and_truncates_tables(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    await world.redis.sadd(keys.TOKEN_LOOKUPS, "123")
    await world.redis.xadd(keys.STREAM_DLQ, {"data": b"{}"})
    await world.redis.set("unrelated:key", "stays")
    assert await pipeline_keys(world.redis)
    assert await run_command(ops_reset.main, "--yes", "--force", "--truncate-clickhouse") == 0
    assert await pipeline_keys(world.redis) == set()
    assert await world.redis.get("unrelated:key") == b"stays"
    for table in ("markets", "events", "order_filled_events", "trades"):
        assert world.query(f"SELECT count() FROM {table}") == 0
    # the pipeline starts over cleanly: the same fills give the same trades
    from tests.fixtures.dashboard_world import publish_markets_with_questions
    from tests.fixtures.fills_world import publish_fills

    await publish_markets_with_questions(world.redis, world.markets)
    await publish_fills(world.redis, world.fills)
    await world.run_pipeline()
    assert world.query("SELECT count() FROM trades") == len(world.fills)
