"""A stream entry is a page of items, and every guarantee stays per item (docs/CONTRACT.md §3), against a real Redis
and the embedded ClickHouse: a poison item is dead-lettered alone, a fill waiting for its market waits alone
(keeping its arrival time) while its page-mates' trades are written, an item that kills its consumer is isolated by
splitting its entry, a dead item is retried alone, and entries of the shape before pages are still read."""

from __future__ import annotations

import asyncio
import random
import time

import orjson

from common import keys
from common.clickhouse import make_client
from common.pages import items_of, page
from common.payloads import DeadLetter, OrderEvent, encode_dead_letter, encode_items, encode_order_event
from common.streams import DEATHS_ALONE_LIMIT, BatchHandler, Entry, StreamConsumer, pages_for
from pipeline.ops import dlq as ops_dlq
from processors import trade_processor
from tests.fixtures.dashboard_world import run_command, set_pipeline_env
from tests.fixtures.fills_world import make_fills, make_markets, publish_fills, publish_markets
from tests.fixtures.helpers import FAST_STREAMS, UNCLAIMED_STREAMS, items_added, items_in, wait_until
from tests.integration.test_processor_writer import processor_settings, run_processor_once, run_writer_once
from tests.integration.test_streams import consumer, run_until_killed


async def dead_letters(redis) -> list[DeadLetter]:
    return [DeadLetter(**{("entry_id" if k == "id" else k): v for k, v in orjson.loads(fields[b"data"]).items()})
            for _, fields in await redis.xrange(keys.STREAM_DLQ)]  # fmt: skip


def trade_ids(ch_settings) -> list[str]:
    client = make_client(ch_settings)
    try:
        return [row[0] for row in client.query("SELECT id FROM trades ORDER BY id").result_rows]
    finally:
        client.close()


async def test_a_poison_item_among_999_good_ones_is_dead_lettered_alone(redis_settings, redis_client, ch_settings):
    # Given one page of 1,000 fills whose 501st has an amount that is no number
    rng = random.Random(25)
    markets = make_markets(rng, 5)
    fills = make_fills(rng, markets, groups=500)[:1000]
    items = [encode_order_event(fill) for fill in fills]
    items[500] = items[500].replace(b'"taker_amount":', b'"taker_amount":"lots","was":', 1)
    await publish_markets(redis_client, markets)
    await redis_client.xadd(keys.STREAM_ORDER_EVENTS, {"data": page(items)})
    # When the processor runs
    await run_processor_once(redis_settings)
    # Then that item alone is in the dead-letter stream, with its reason and its place in the page
    [letter] = await dead_letters(redis_client)
    assert (letter.group, letter.item, letter.payload.encode()) == (keys.GROUP_TRADE_PROCESSOR, 500, items[500])
    assert "taker_amount" in letter.error
    # and its 999 page-mates became one page of trades, in source order, all stored by the writer
    [(_, trades)] = await redis_client.xrange(keys.STREAM_TRADES)
    good = [fill.id for index, fill in enumerate(fills) if index != 500]
    assert [orjson.loads(item)["id"] for item in items_of(trades[b"data"])] == good
    await run_writer_once(redis_settings, ch_settings)
    assert trade_ids(ch_settings) == sorted(good)
    assert (await redis_client.xpending(keys.STREAM_ORDER_EVENTS, keys.GROUP_TRADE_PROCESSOR))["pending"] == 0


async def test_a_poison_trade_among_999_is_dead_lettered_alone_by_the_writer(redis_settings, redis_client, ch_settings):
    # Given a page of 1,000 trades on stream:trades whose 10th is not a trade
    rng = random.Random(26)
    markets = make_markets(rng, 5)
    await publish_markets(redis_client, markets)
    await publish_fills(redis_client, make_fills(rng, markets, groups=500)[:1000], page_items=1000)
    await run_processor_once(redis_settings)
    [(entry_id, fields)] = await redis_client.xrange(keys.STREAM_TRADES)
    items = items_of(fields[b"data"])
    items[9] = b'{"id":"not a trade"}'
    await redis_client.xdel(keys.STREAM_TRADES, entry_id)
    await redis_client.xadd(keys.STREAM_TRADES, {"data": page(items)})
    # When the writer runs
    await run_writer_once(redis_settings, ch_settings)
    # Then the 999 others are stored and that one is dead-lettered alone, by the writer
    [letter] = await dead_letters(redis_client)
    assert (letter.group, letter.item, letter.payload) == (keys.GROUP_CLICKHOUSE_WRITER, 9, '{"id":"not a trade"}')
    assert trade_ids(ch_settings) == sorted(orjson.loads(item)["id"] for index, item in enumerate(items) if index != 9)


def token(fill: OrderEvent) -> str:
    return fill.taker_asset_id if fill.maker_asset_id == "0" else fill.maker_asset_id


async def test_a_fill_waiting_for_its_market_waits_alone_and_keeps_its_arrival_time(
    redis_settings, redis_client, ch_settings
):
    # Given a page of 20 fills, 2 of them of markets not listed yet (one listed later, one never)
    rng = random.Random(27)
    known, late, never = make_markets(rng, 3)
    fills = make_fills(rng, [known], groups=9)[:18]
    fills += [make_fills(rng, [market], groups=1)[0] for market in (late, never)]
    await publish_markets(redis_client, [known])
    [entry_id] = await publish_fills(redis_client, fills, page_items=len(fills))
    arrived_ms = int(entry_id.partition("-")[0])
    wait_s = 4.0
    stop = asyncio.Event()
    service = asyncio.create_task(trade_processor.run(processor_settings(unknown_market_wait_s=wait_s),
                                                      redis=redis_settings, streams=UNCLAIMED_STREAMS, stop=stop))
    try:
        # When the processor runs: the 18 known fills' trades are written in the finish that acks the page, and the
        # two waiting fills are appended again, as one entry that keeps the page's arrival time
        await wait_until(lambda: items_added(redis_client, keys.STREAM_TRADES), "the known trades",
                         accept=lambda n: n >= 18, timeout_s=10)  # fmt: skip
        [(_, first)] = await redis_client.xrange(keys.STREAM_TRADES)
        assert [orjson.loads(item)["id"] for item in items_of(first[b"data"])] == [fill.id for fill in fills[:18]]
        [_, (_, waiting)] = await redis_client.xrange(keys.STREAM_ORDER_EVENTS)
        assert waiting[b"since"] == str(arrived_ms).encode()
        assert [orjson.loads(item)["id"] for item in items_of(waiting[b"data"])] == [fills[18].id, fills[19].id]
        # the late market listed: its fill's trade is written with it; the other waits on
        await publish_markets(redis_client, [late])
        await wait_until(lambda: items_added(redis_client, keys.STREAM_TRADES), "the late market's trade",
                         accept=lambda n: n >= 19, timeout_s=10)  # fmt: skip
        # the never-listed one is written without a market once its *original* wait runs out
        await wait_until(lambda: items_added(redis_client, keys.STREAM_TRADES), "the unresolved trade",
                         accept=lambda n: n == 20, timeout_s=10)  # fmt: skip
        released_ms = time.time() * 1000
    finally:
        stop.set()
        await asyncio.wait_for(service, timeout=10)
    assert wait_s * 1000 <= released_ms - arrived_ms < (wait_s + 3) * 1000
    trades = [orjson.loads(item) for item in items_in(await redis_client.xrange(keys.STREAM_TRADES))]
    assert [(t["id"], t["market_id"]) for t in trades[18:]] == [(fills[18].id, late.id), (fills[19].id, "")]
    assert (await redis_client.xpending(keys.STREAM_ORDER_EVENTS, keys.GROUP_TRADE_PROCESSOR))["pending"] == 0
    await run_writer_once(redis_settings, ch_settings)
    assert trade_ids(ch_settings) == sorted(fill.id for fill in fills)


async def test_an_item_that_kills_its_consumer_is_isolated_by_splitting_its_entry(redis_client) -> None:
    # Given a page of 5 items, the third of which kills the process whenever it is handled (os._exit, OOM)
    items = [b'"kill"' if i == 2 else b'"%d"' % i for i in range(5)]
    await redis_client.xadd("stream:test", {"data": page(items)})
    handled: list[bytes] = []
    deaths = 0

    def killed_by_one_item(worker: StreamConsumer, died: asyncio.Event) -> BatchHandler:
        async def handle(batch: list[Entry]) -> None:
            items = [item for entry in batch for item in items_of(entry.data)]
            if b'"kill"' in items:
                died.set()
                await asyncio.Event().wait()  # like a process past its last line
            handled.extend(items)
            await worker.finish([entry.id for entry in batch])

        return handle

    # When the consumer is restarted after each death (as supervisord does)
    while deaths < 20:
        worker, died = consumer(redis_client, "worker-1"), asyncio.Event()
        if not await run_until_killed(worker, killed_by_one_item(worker, died), died):
            break
        deaths += 1
    # Then the page died max_deliveries times in a batch, once more past the limit, DEATHS_ALONE_LIMIT times alone;
    # then it was split into its items, and the killing item (now an entry of its own) went the same way alone
    assert deaths == 2 * (3 + 1 + DEATHS_ALONE_LIMIT)
    [letter] = await dead_letters(redis_client)
    assert (letter.item, letter.payload) == (0, '"kill"')
    assert "died 2 times while handling this entry alone" in letter.error
    assert sorted(handled) == [b'"0"', b'"1"', b'"3"', b'"4"']
    assert (await redis_client.xpending("stream:test", "g"))["pending"] == 0


async def test_dlq_retry_of_an_item_redelivers_it_alone(
    redis_settings, redis_client, ch_settings, monkeypatch, capsys
) -> None:
    # Given a fill dead-lettered as item 7 of its page by a processor bug since fixed, its page-mates processed
    rng = random.Random(28)
    markets = make_markets(rng, 2)
    await publish_markets(redis_client, markets)
    [fill] = make_fills(rng, markets, groups=1)[:1]
    letter = encode_dead_letter(stream=keys.STREAM_ORDER_EVENTS, entry_id="1700000000000-0", item=7,
                                payload=encode_order_event(fill), error="a bug", deliveries=4,
                                group=keys.GROUP_TRADE_PROCESSOR)  # fmt: skip
    letter_id = (await redis_client.xadd(keys.STREAM_DLQ, {"data": letter})).decode()
    set_pipeline_env(monkeypatch, redis_settings, ch_settings)
    # When it is retried
    assert await run_command(ops_dlq.main, "retry", "--id", letter_id) == 0
    assert "item 7 of entry 1700000000000-0" in capsys.readouterr().out
    # Then it is back on its stream as a page of one, its dead letter gone, and its trade is stored once
    [(_, fields)] = await redis_client.xrange(keys.STREAM_ORDER_EVENTS)
    assert fields[b"data"] == encode_items([fill])
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0
    await run_processor_once(redis_settings)
    await run_writer_once(redis_settings, ch_settings)
    assert trade_ids(ch_settings) == [fill.id]


async def test_entries_of_the_shape_before_pages_are_read_until_trimmed(redis_settings, redis_client, ch_settings):
    # Given streams written before the upgrade, one item per entry (a fill, a trade, a market), and pages after it
    rng = random.Random(29)
    markets = make_markets(rng, 4)
    await publish_markets(redis_client, markets)
    fills = make_fills(rng, markets, groups=150)[:300]
    await publish_fills(redis_client, fills[:100], page_items=1)
    await run_processor_once(redis_settings)  # their trades: one per entry too
    [(_, old_trade)] = (await redis_client.xrange(keys.STREAM_TRADES, count=1))
    single = items_of(old_trade[b"data"])[0]
    await redis_client.xadd(keys.STREAM_TRADES, {"data": single})  # a trade of the old shape, written twice
    await redis_client.xadd(keys.STREAM_MARKETS, {"data": orjson.dumps({"id": "m-old", "question": "Before?",
                                                                         "updatedAt": "2026-01-01T00:00:00Z"})})
    await publish_fills(redis_client, fills[100:], page_items=50)
    # When the upgraded processor and writer run over both shapes
    await run_processor_once(redis_settings)
    await run_writer_once(redis_settings, ch_settings)
    # Then every fill is stored once, the old market too, nothing is dead-lettered, and the streams are trimmed
    assert trade_ids(ch_settings) == sorted(fill.id for fill in fills)
    client = make_client(ch_settings)
    assert client.command("SELECT question FROM markets WHERE id = 'm-old'") == "Before?"
    client.close()
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0
    for stream in (keys.STREAM_ORDER_EVENTS, keys.STREAM_TRADES):
        pending = await redis_client.xpending(stream, keys.STREAM_GROUPS[stream][0])
        assert pending["pending"] == 0


async def test_a_batch_is_bounded_in_items_not_entries(redis_client) -> None:
    # Given 12 pages of 1,000 fills
    rng = random.Random(30)
    await publish_fills(redis_client, make_fills(rng, make_markets(rng, 3), groups=6000)[:12_000], page_items=1000)
    # When a consumer whose batch is 5,000 items reads (the processor's default TRADE_PROCESSOR_BATCH_MAX)
    reader = StreamConsumer(redis_client, stream=keys.STREAM_ORDER_EVENTS, group=keys.GROUP_TRADE_PROCESSOR,
                            consumer="p", settings=FAST_STREAMS,
                            batch_max=pages_for(processor_settings().trade_processor_batch_max, FAST_STREAMS))
    await reader.ensure_group()
    batch = await reader.read()
    # Then it holds 5 pages, 5,000 fills, not 5,000 pages
    assert len(batch) == 5 and sum(len(items_of(entry.data)) for entry in batch) == 5000
