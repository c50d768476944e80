"""`python -m pipeline dlq list|retry|purge` against a real Redis and ClickHouse.

retry re-delivers an entry only when every group of its stream gave up on it; then the pipeline stores it exactly
once. An entry only some groups dead-lettered, and an ingester's malformed item, are skipped with the reason.
"""

from __future__ import annotations

import random

import orjson

from common import keys
from common.payloads import encode_dead_letter, encode_order_event
from pipeline.ops import dlq as ops_dlq
from tests.fixtures.dashboard_world import run_command, set_pipeline_env
from tests.fixtures.fills_world import make_fills


async def dead_letter(redis, *, group: str, entry_id: str | None, payload: bytes) -> str:
    letter = encode_dead_letter(stream=keys.STREAM_ORDER_EVENTS, entry_id=entry_id, payload=payload,
                                error=f"boom in {group or 'ingester'}", deliveries=3, group=group)  # fmt: skip
    return (await redis.xadd(keys.STREAM_DLQ, {"data": letter})).decode()


async def test_retry_redelivers_what_every_group_gave_up_on_exactly_once(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    both, partial = make_fills(random.Random(7), world.markets, groups=2, start_ts=1_777_200_000)[:2]
    both_payload = encode_order_event(both)
    await dead_letter(world.redis, group=keys.GROUP_TRADE_PROCESSOR, entry_id="1-1", payload=both_payload)
    await dead_letter(world.redis, group=keys.GROUP_CLICKHOUSE_WRITER, entry_id="1-1", payload=both_payload)
    partial_id = await dead_letter(world.redis, group=keys.GROUP_CLICKHOUSE_WRITER, entry_id="1-2",
                                   payload=encode_order_event(partial))  # fmt: skip
    source_id = await dead_letter(world.redis, group="", entry_id=None, payload=b'{"id": "broken"}')

    assert await run_command(ops_dlq.main, "list") == 0
    listing = capsys.readouterr().out
    assert "4 entries" in listing and "boom in trade-processor" in listing and "(ingester)" in listing

    assert await run_command(ops_dlq.main, "retry", "--all") == 1  # two skipped
    out = capsys.readouterr().out
    assert "retried stream:order_events entry 1-1" in out and "2 dead letter(s) removed" in out
    assert f"{partial_id}: trade-processor already processed entry 1-2" in out
    assert f"{source_id}: malformed at the source" in out
    remaining = {entry_id.decode() for entry_id, _ in await world.redis.xrange(keys.STREAM_DLQ)}
    assert remaining == {partial_id, source_id}

    await world.run_pipeline()
    assert world.query("SELECT count() FROM trades") == len(world.fills) + 1
    assert world.query(f"SELECT count() FROM trades WHERE id = '{both.id}'") == 1
    assert world.query("SELECT count() FROM order_filled_events") == len(world.fills) + 1

    assert await run_command(ops_dlq.main, "retry", "--id", partial_id) == 1  # still refused without --force
    assert await run_command(ops_dlq.main, "purge", "--all", "--yes") == 0
    assert await world.redis.xlen(keys.STREAM_DLQ) == 0


async def test_purge_by_id_and_selection_flags(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    first = await dead_letter(world.redis, group=keys.GROUP_TRADE_PROCESSOR, entry_id="1-1", payload=b"{}")
    second = await dead_letter(world.redis, group=keys.GROUP_CLICKHOUSE_WRITER, entry_id="1-2", payload=b"{}")
    assert await run_command(ops_dlq.main, "purge") == 2  # nothing chosen
    assert await run_command(ops_dlq.main, "purge", "--all", "--group", keys.GROUP_CLICKHOUSE_WRITER, "--yes") == 0
    assert [i.decode() for i, _ in await world.redis.xrange(keys.STREAM_DLQ)] == [first]
    assert await run_command(ops_dlq.main, "purge", "--id", first, "--yes") == 0
    assert await world.redis.xlen(keys.STREAM_DLQ) == 0 and second


async def test_list_json_shows_every_dead_letter_even_an_unreadable_one(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    good = await dead_letter(world.redis, group=keys.GROUP_TRADE_PROCESSOR, entry_id="1-1", payload=b'{"a": 1}')
    broken = (await world.redis.xadd(keys.STREAM_DLQ, {"data": b"{written by hand"})).decode()
    assert await run_command(ops_dlq.main, "list", "--json") == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [letter["id"] for letter in listed] == [good, broken]
    assert listed[0] | {"time": None} == {
        "id": good, "stream": keys.STREAM_ORDER_EVENTS, "group": keys.GROUP_TRADE_PROCESSOR, "entry_id": "1-1",
        "item": None, "payload": '{"a": 1}', "error": "boom in trade-processor", "deliveries": 3, "time": None,
    }  # fmt: skip
    assert listed[0]["time"] > 0
    assert listed[1]["payload"] == "{written by hand" and listed[1]["error"].startswith("unparseable dead letter")
