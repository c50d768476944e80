"""`python -m pipeline replay` and `verify --source clickhouse` against a real Redis and ClickHouse.

A gap is punched into `trades` (rows deleted) under fills stored before the upgrade to migration 007 (the kept
table): verify finds exactly those ids, replay refills exactly them, and a replay of a complete range inserts
nothing: count() of trades stays what it was. Without fills of their own (`order_filled_events` is a view over
`trades`), ClickHouse holds no fill without its trade: the gap shows only at a source.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from msgspec.structs import astuple

from common import tables
from common.clickhouse import describe_columns, insert_batch, make_client
from pipeline.ops import replay as ops_replay
from pipeline.ops import verify as ops_verify
from tests.fixtures.dashboard_world import run_command, set_pipeline_env
from tests.fixtures.fills_world import make_fills, publish_fills


def delete_trades(world, ids: str) -> None:
    """A synchronous mutation: trades refuses lightweight DELETE (see common/migrations/004_unique_keys.sql)."""
    world.query(f"ALTER TABLE trades DELETE WHERE id IN ({ids}) SETTINGS mutations_sync = 1")


def time_range(world) -> tuple[str, str]:
    stamps = [fill.timestamp for fill in world.fills]
    return str(min(stamps)), str(max(stamps))


async def test_replay_of_a_complete_range_leaves_count_unchanged(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    start, end = time_range(world)
    before = world.query("SELECT count() FROM trades")
    assert await run_command(ops_replay.main, "--from", start, "--to", end) == 0
    assert await run_command(ops_replay.main, "--from", start, "--to", end) == 0
    assert "0 fill(s) in range without a trade" in capsys.readouterr().out
    assert world.query("SELECT count() FROM trades") == before == len(world.fills)


async def keep_fills_as_before_the_upgrade(world) -> None:
    """The world's fills in the kept table, as the writer stored them in `order_filled_events` before migration 007."""
    client = make_client(world.ch)
    try:
        types = describe_columns(client, tables.FILLS_BEFORE_VIEW)
        rows = [(*astuple(fill), datetime.now(UTC)) for fill in world.fills]
        await insert_batch(client, tables.FILLS_BEFORE_VIEW, list(types), [list(c) for c in zip(*rows, strict=True)],
                           "test:kept", column_types=list(types.values()))  # fmt: skip
    finally:
        client.close()


async def test_verify_from_clickhouse_finds_no_gap_without_fills_stored_apart(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    start, end = time_range(world)
    delete_trades(world, repr(world.fills[0].id))
    assert await run_command(ops_verify.main, "--from", start, "--to", end) == 0  # the view lost it too
    assert "missing             0" in capsys.readouterr().out


async def test_verify_finds_a_punched_gap_and_replay_refills_exactly_it(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    start, end = time_range(world)
    await keep_fills_as_before_the_upgrade(world)
    assert await run_command(ops_verify.main, "--from", start, "--to", end) == 0
    punched = sorted(fill.id for fill in random.Random(4).sample(world.fills, 7))
    ids = ", ".join(repr(i) for i in punched)
    columns = (
        "id, market_id, condition_id, outcome, outcome_index, token_id, maker_direction, taker_direction, "
        "price, usd_amount, token_amount, fee, is_taker_side, timestamp, block_number, log_index, source"
    )
    original = world.rows(f"SELECT {columns} FROM trades WHERE id IN ({ids}) ORDER BY id")
    delete_trades(world, ids)
    assert world.query("SELECT count() FROM trades") == len(world.fills) - 7
    capsys.readouterr()

    assert await run_command(ops_verify.main, "--from", start, "--to", end) == 1
    report = capsys.readouterr().out
    assert "missing             7" in report and all(fill_id in report for fill_id in punched)

    assert await run_command(ops_replay.main, "--from", start, "--to", end) == 0
    assert "inserted 7 trade(s)" in capsys.readouterr().out
    assert world.query("SELECT count() FROM trades") == len(world.fills)
    assert world.query("SELECT uniqExact(id) FROM trades") == len(world.fills)
    # the same rows the processor and the writer made, market and outcome included
    assert world.rows(f"SELECT {columns} FROM trades WHERE id IN ({ids}) ORDER BY id") == original
    assert await run_command(ops_verify.main, "--from", start, "--to", end) == 0


async def test_a_replay_batch_sent_twice_is_stored_once(dashboard_world):
    world = dashboard_world
    gap = sorted(random.Random(6).sample(world.fills, 5), key=lambda fill: fill.id)
    delete_trades(world, ", ".join(repr(fill.id) for fill in gap))
    markets = await ops_replay.markets_for(world.redis, gap)
    client = make_client(world.ch)
    try:
        # the reply to the first insert is lost; the retry (later, so with another ingested_at) finds them stored
        assert await ops_replay.insert_trades(client, world.redis, world.ch, gap, markets) == (5, 0)
        assert await ops_replay.insert_trades(client, world.redis, world.ch, gap, markets) == (0, 0)
    finally:
        client.close()
    assert world.query("SELECT count() FROM trades") == world.query("SELECT uniqExact(id) FROM trades")
    assert world.query("SELECT count() FROM trades") == len(world.fills)


async def test_replay_refuses_while_trades_are_in_flight(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    fresh = make_fills(random.Random(5), world.markets, groups=5, start_ts=1_777_300_000)
    await publish_fills(world.redis, fresh)  # in stream:order_events, not processed yet
    span = ("--from", str(fresh[0].timestamp), "--to", str(fresh[-1].timestamp))
    assert await run_command(ops_replay.main, *span) == 1
    assert "trades are in flight" in capsys.readouterr().err
    assert await run_command(ops_replay.main, *span, "--source", "stream", "--dry-run") == 0
    assert f"{len(fresh)} fill(s) in range without a trade" in capsys.readouterr().out
    assert world.query("SELECT count() FROM trades") == len(world.fills)
