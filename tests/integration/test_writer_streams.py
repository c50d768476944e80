"""The writer fills `trades` from `stream:trades` alone (`order_filled_events` is a view over it), and drains the group
an earlier writer left on `stream:order_events` (real redis-server, embedded ClickHouse)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from common import keys
from common.clickhouse import apply_migrations, make_client
from common.config import ClickHouseSettings, RedisSettings
from common.pages import items_of, page
from common.payloads import UINT64_MAX, OrderEvent, decode_dead_letter, encode_trade
from common.streams import StreamConsumer
from common.unique_insert import UniqueTarget, insert_unique
from processors import clickhouse_writer
from processors.rows import STREAMS, StreamSpec
from processors.trades import derive_trade
from tests.fixtures.fills_world import make_fills, make_markets, publish_fills
from tests.fixtures.helpers import FAST_STREAMS

WRITER = clickhouse_writer.WriterSettings()
(TRADES_STREAM,) = [spec for spec in STREAMS if spec.stream == keys.STREAM_TRADES]
NOW = datetime.now(UTC)


async def run_writer_once(redis_settings: RedisSettings, ch_settings: ClickHouseSettings):
    return await clickhouse_writer.run(WRITER, redis=redis_settings, clickhouse=ch_settings, streams=FAST_STREAMS,
                                       once=True)  # fmt: skip


async def publish_trades(redis: aioredis.Redis, fills: list[OrderEvent], page_items: int = 100) -> list[str]:
    """The trades of `fills` (without a market) as the processor writes them: pages of `page_items`."""
    trades = [encode_trade(derive_trade(fill, None)) for fill in fills]
    async with redis.pipeline(transaction=False) as pipe:
        for start in range(0, len(trades), page_items):
            pipe.xadd(keys.STREAM_TRADES, {"data": page(trades[start : start + page_items])})
        return [entry_id.decode() for entry_id in await pipe.execute()]


def counts(ch_settings: ClickHouseSettings, table: str) -> tuple[int, int]:
    client = make_client(ch_settings)
    try:
        return tuple(client.query(f"SELECT count(), uniqExact(id) FROM {table}").result_rows[0])
    finally:
        client.close()


async def read_as(redis: aioredis.Redis, stream: str, consumer: str, count: int) -> list:
    """Entries delivered to `consumer` of the writer's group and left pending, as a writer that died holds them."""
    reader = StreamConsumer(redis, stream=stream, group=keys.GROUP_CLICKHOUSE_WRITER, consumer=consumer,
                            settings=FAST_STREAMS, batch_max=count)  # fmt: skip
    await reader.ensure_group()
    return await reader.read()


async def insert_as_the_writer(redis, ch_settings, spec: StreamSpec, entries: list) -> None:
    """What a writer inserts for `entries` of `spec`'s stream (all convertible), with the token every writer sent:
    in the stream's namespace, before migration 007 (when it also inserted each fill's own row, under
    `stream:trades>order_filled_events`) and after."""
    client = make_client(ch_settings)
    try:
        table = spec.table
        converted = spec.convert([entry.data for entry in entries], NOW)
        assert converted.poison == []
        target = UniqueTarget(table.table, table.columns, table.unique, owner=WRITER.clickhouse_writer_consumer,
                              token_source="stream:trades")  # fmt: skip
        row_ids = converted.row_ids([entry.id for entry in entries])
        await insert_unique(client, redis, target, converted.columns, row_ids, ch_settings)
    finally:
        client.close()


async def test_trades_fill_trades_and_its_view_and_the_writer_has_no_group_on_order_events(
    redis_settings, redis_client, ch_settings
):
    fills = make_fills(random.Random(3), make_markets(random.Random(3), 4), groups=100)
    await publish_fills(redis_client, fills)  # the processor's input: the writer must leave it alone
    await publish_trades(redis_client, fills)
    await run_writer_once(redis_settings, ch_settings)
    assert counts(ch_settings, "order_filled_events") == counts(ch_settings, "trades") == (len(fills), len(fills))
    groups = {g["name"].decode() for g in await redis_client.xinfo_groups(keys.STREAM_ORDER_EVENTS)}
    assert keys.GROUP_CLICKHOUSE_WRITER not in groups


async def test_a_row_trades_refuses_dead_letters_its_item_and_the_rest_go_in(
    redis_settings, redis_client, ch_settings
):
    fills = make_fills(random.Random(4), make_markets(random.Random(4), 3), groups=20)
    buyer = next(fill for fill in fills if fill.maker_asset_id == "0")
    # UInt64's maximum is a fill's amount but beyond trades' Decimal(18, 6) as USD
    huge = OrderEvent(**{**{f: getattr(buyer, f) for f in OrderEvent.__struct_fields__},
                         "id": buyer.id[:-4] + "beef", "order_hash": buyer.order_hash[:-4] + "beef",
                         "maker_amount": UINT64_MAX})  # fmt: skip
    entry_ids = await publish_trades(redis_client, [*fills, huge])
    service = await run_writer_once(redis_settings, ch_settings)

    assert counts(ch_settings, "order_filled_events") == counts(ch_settings, "trades") == (len(fills), len(fills))
    (letter,) = [decode_dead_letter(fields[b"data"]) for _, fields in await redis_client.xrange(keys.STREAM_DLQ)]
    assert (letter.stream, letter.group, letter.entry_id, letter.item) == (
        keys.STREAM_TRADES, keys.GROUP_CLICKHOUSE_WRITER, entry_ids[-1], len(fills) % 100
    )  # fmt: skip  (the refused trade alone: its page-mates are stored)
    assert "rejected by clickhouse (trades)" in letter.error and "order_filled_events" not in letter.error
    (group,) = await redis_client.xinfo_groups(keys.STREAM_TRADES)
    assert group["pending"] == 0 and service.counters["dead_lettered"] == 1


@pytest.mark.parametrize("unique_keys", [True, False])
async def test_a_batch_inserted_before_a_crash_is_not_stored_again_by_the_replay(
    redis_settings, redis_client, ch_settings, unique_keys: bool
):
    ch_settings = ch_settings.model_copy(update={"unique_keys": unique_keys})  # False: the dedup token alone
    fills = make_fills(random.Random(5), make_markets(random.Random(5), 3), groups=100)
    await publish_trades(redis_client, fills)
    apply_migrations(ch_settings)
    # a writer (of this release or the one before: the same token) inserted the batch, then died before its ack
    batch = await read_as(redis_client, keys.STREAM_TRADES, WRITER.clickhouse_writer_consumer, len(fills))
    await insert_as_the_writer(redis_client, ch_settings, TRADES_STREAM, batch)
    assert counts(ch_settings, "trades") == (len(fills), len(fills))

    service = await run_writer_once(redis_settings, ch_settings)
    assert counts(ch_settings, "order_filled_events") == counts(ch_settings, "trades") == (len(fills), len(fills))
    assert service.counters["rows_trades"] == (0 if unique_keys else len(fills))  # sent again: the token drops it
    (group,) = await redis_client.xinfo_groups(keys.STREAM_TRADES)
    assert group["pending"] == 0


async def test_a_batch_the_writer_was_killed_on_past_max_deliveries_is_written_not_dead_lettered(
    redis_settings, redis_client, ch_settings
):
    fills = make_fills(random.Random(6), make_markets(random.Random(6), 3), groups=30)
    await publish_trades(redis_client, fills)
    # a writer killed 3 times (max_deliveries) before it could finish its batch: each start re-read it
    for _ in range(FAST_STREAMS.max_deliveries):
        batch = await read_as(redis_client, keys.STREAM_TRADES, WRITER.clickhouse_writer_consumer, len(fills))
        assert sum(len(items_of(entry.data)) for entry in batch) == len(fills)

    service = await run_writer_once(redis_settings, ch_settings)

    # its 4th delivery, past the limit with no failure recorded: the batch is written, not parked in the DLQ
    assert counts(ch_settings, "order_filled_events") == counts(ch_settings, "trades") == (len(fills), len(fills))
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0 and service.counters["dead_lettered"] == 0
    (group,) = await redis_client.xinfo_groups(keys.STREAM_TRADES)
    assert group["pending"] == 0
