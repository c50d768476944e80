"""Trade processor and ClickHouse writer against a real Redis and the embedded ClickHouse (docs/CONTRACT.md §3–§5)."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import orjson
import pytest

from common import keys
from common.clickhouse import make_client
from common.payloads import encode_order_event
from processors import clickhouse_writer, trade_processor
from tests.fixtures.fills_world import (
    expected_trade,
    make_fills,
    make_markets,
    publish_fills,
    publish_markets,
)
from tests.fixtures.helpers import FAST_STREAMS, items_added, wait_until


def processor_settings(**overrides: object) -> trade_processor.ProcessorSettings:
    values: dict[str, object] = {"unknown_market_wait_s": 30.0, "held_check_interval_s": 0.1}
    values.update(overrides)
    return trade_processor.ProcessorSettings(**values)


async def run_processor_once(redis_settings, **overrides: object):
    return await trade_processor.run(processor_settings(**overrides), redis=redis_settings, streams=FAST_STREAMS,
                                     once=True)  # fmt: skip


async def run_writer_once(redis_settings, ch_settings):
    return await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings,
                                       clickhouse=ch_settings, streams=FAST_STREAMS, once=True)  # fmt: skip


TRADE_COLUMNS = ("id", "token_id", "maker_direction", "taker_direction", "usd_amount", "token_amount", "price",
                 "is_taker_side", "market_id", "condition_id", "outcome", "outcome_index", "fee", "block_number",
                 "log_index", "source", "exchange", "maker", "taker", "timestamp")  # fmt: skip


async def test_every_trade_column_matches_an_independent_computation(redis_settings, redis_client, ch_settings):
    rng = random.Random(11)
    markets = make_markets(rng, 12)
    fills = make_fills(rng, markets, groups=300)
    await publish_markets(redis_client, markets)
    await publish_fills(redis_client, fills)

    await run_processor_once(redis_settings)
    await run_writer_once(redis_settings, ch_settings)

    client = make_client(ch_settings)
    rows = client.query(f"SELECT {', '.join(TRADE_COLUMNS)} FROM trades").result_rows
    got = {row[0]: dict(zip(TRADE_COLUMNS, row, strict=True)) for row in rows}
    assert len(rows) == len(fills) == len(got)
    for event in fills:
        expected, actual = expected_trade(event, markets), got[event.id]
        actual["timestamp"] = int(actual["timestamp"].timestamp())
        assert actual["price"] == pytest.approx(expected.pop("price"), rel=1e-12)
        actual.pop("price")
        assert actual == expected
    assert client.command("SELECT count() FROM order_filled_events") == len(fills)
    # volume without double counting: one taker-side row per match group
    groups = len({event.tx_hash for event in fills})
    assert client.command("SELECT countIf(is_taker_side = 1) FROM trades") == groups
    client.close()


async def test_poison_fills_go_to_dlq_and_the_stream_keeps_flowing(redis_settings, redis_client, ch_settings):
    rng = random.Random(5)
    markets = make_markets(rng, 3)
    fills = make_fills(rng, markets, groups=20)
    await publish_markets(redis_client, markets)
    await publish_fills(redis_client, fills[:10])
    good = orjson.loads(encode_order_event(fills[0]))
    poison = [
        {k: v for k, v in good.items() if k != "maker_amount"},  # missing field
        {**good, "taker_amount": "lots"},  # non-numeric amount
        {**good, "maker_asset_id": "5", "taker_asset_id": "7"},  # neither asset is USDC
    ]
    for payload in poison:
        await redis_client.xadd(keys.STREAM_ORDER_EVENTS, {"data": orjson.dumps(payload)})
    await publish_fills(redis_client, fills[10:])

    await run_processor_once(redis_settings)
    await run_writer_once(redis_settings, ch_settings)

    dead = [orjson.loads(fields[b"data"]) for _, fields in await redis_client.xrange(keys.STREAM_DLQ)]
    # each poison fill is refused once, by the one group that reads order events: the processor's
    assert len(dead) == 3
    reasons = " | ".join(entry["error"] for entry in dead)
    assert "maker_amount" in reasons and "taker_amount" in reasons and "exactly one asset id" in reasons
    assert {entry["group"] for entry in dead} == {keys.GROUP_TRADE_PROCESSOR}
    client = make_client(ch_settings)
    assert client.command("SELECT count() FROM trades") == len(fills)
    assert client.command("SELECT count() FROM order_filled_events") == len(fills)
    client.close()


async def test_late_market_is_filled_in_and_missing_market_times_out(redis_settings, redis_client, ch_settings):
    rng = random.Random(8)
    known, late, never = make_markets(rng, 3)
    fills = make_fills(rng, [known, late, never], groups=30)
    await publish_markets(redis_client, [known])
    await publish_fills(redis_client, fills)

    async def list_late_market_after(delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await publish_markets(redis_client, [late])

    settings = processor_settings(unknown_market_wait_s=4.0)
    lister = asyncio.create_task(list_late_market_after(2.0))
    stop = asyncio.Event()
    service_task = asyncio.create_task(
        trade_processor.run(settings, redis=redis_settings, streams=FAST_STREAMS, stop=stop)
    )
    # the processor asks the markets ingester for the unknown tokens
    await wait_until(lambda: redis_client.scard(keys.TOKEN_LOOKUPS), "a token lookup", accept=lambda n: n > 0,
                           timeout_s=5)  # fmt: skip
    lookups = {token.decode() for token in await redis_client.smembers(keys.TOKEN_LOOKUPS)}
    assert set(late.token_ids + never.token_ids) >= lookups and lookups
    await wait_until(lambda: items_added(redis_client, keys.STREAM_TRADES), "every trade",
                           accept=lambda n: n == len(fills), timeout_s=20)  # fmt: skip
    stop.set()
    await asyncio.wait_for(service_task, timeout=10)
    service = await redis_client.hgetall(keys.service_key("trade_processor"))
    await lister

    await run_writer_once(redis_settings, ch_settings)
    client = make_client(ch_settings)
    by_market = dict(client.query("SELECT market_id, count() FROM trades GROUP BY market_id").result_rows)
    expected = {m.id: sum(1 for f in fills if (f.maker_asset_id if f.maker_asset_id != "0" else f.taker_asset_id)
                          in m.token_ids) for m in (known, late, never)}  # fmt: skip
    assert by_market == {known.id: expected[known.id], late.id: expected[late.id], "": expected[never.id]}
    assert int(service[b"count:unresolved_markets"]) == expected[never.id]
    client.close()


async def test_stream_usd_sum_matches(redis_settings, redis_client, ch_settings):
    rng = random.Random(3)
    markets = make_markets(rng, 5)
    fills = make_fills(rng, markets, groups=200)
    await publish_markets(redis_client, markets)
    await publish_fills(redis_client, fills)
    await run_processor_once(redis_settings)
    await run_writer_once(redis_settings, ch_settings)
    client = make_client(ch_settings)
    expected_usd = sum(Decimal(expected_trade(f, markets)["usd_amount"]) for f in fills)
    assert Decimal(client.command("SELECT toString(sum(usd_amount)) FROM trades")) == expected_usd
    assert client.command("SELECT uniqExact(id) FROM trades") == len(fills)
    client.close()


async def test_volume_view_counts_each_match_once_and_candles_follow_prices(redis_settings, redis_client, ch_settings):
    rng = random.Random(9)
    markets = make_markets(rng, 4)
    fills = make_fills(rng, markets, groups=150)
    await publish_markets(redis_client, markets)
    await publish_fills(redis_client, fills)
    await run_processor_once(redis_settings)
    await run_writer_once(redis_settings, ch_settings)

    client = make_client(ch_settings)
    expected: dict[str, Decimal] = {}
    for f in fills:
        trade = expected_trade(f, markets)
        if trade["is_taker_side"]:
            expected[trade["market_id"]] = expected.get(trade["market_id"], Decimal(0)) + trade["usd_amount"]
    rows = client.query("SELECT market_id, toString(sum(volume_usd)) FROM market_volume_hourly GROUP BY market_id")
    assert {market: Decimal(total) for market, total in rows.result_rows} == expected

    taker_rows = sorted((f for f in fills if f.taker == f.exchange), key=lambda f: (f.timestamp, f.block_number))
    token = taker_rows[0].taker_asset_id if taker_rows[0].maker_asset_id == "0" else taker_rows[0].maker_asset_id
    candle = client.query(
        "SELECT open, high, low, close, matches FROM token_candles(bucket_s = 86400) WHERE token_id = {t:String}",
        parameters={"t": token},
    ).result_rows
    prices = [expected_trade(f, markets)["price"] for f in taker_rows if token in (f.maker_asset_id, f.taker_asset_id)]
    assert len(candle) == 1
    open_, high, low, close, matches = candle[0]
    assert matches == len(prices)
    assert (high, low) == (pytest.approx(max(prices)), pytest.approx(min(prices)))
    assert open_ == pytest.approx(prices[0]) and close == pytest.approx(prices[-1])
    client.close()


async def test_stream_lengths_stay_bounded_while_fills_flow(redis_settings, redis_client, ch_settings):
    """Trimming keeps pace: with 50,000 fills flowing at ~5,000/s, no stream holds more than a fraction of them,
    and once they are through the streams are empty again. (The 1,000,000-fill run is in
    bench/bench_processor_writer.py --flow.)"""
    rng = random.Random(21)
    markets = make_markets(rng, 20)
    await publish_markets(redis_client, markets)
    stop = asyncio.Event()
    streams = FAST_STREAMS.model_copy(update={"trim_interval_s": 0.1})
    services = [
        asyncio.create_task(trade_processor.run(processor_settings(), redis=redis_settings, streams=streams,
                                                stop=stop)),
        asyncio.create_task(clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings,
                                                  clickhouse=ch_settings, streams=streams, stop=stop)),
    ]  # fmt: skip
    published, longest = 0, 0
    try:
        while published < 50_000:
            chunk = make_fills(rng, markets, groups=150)
            await publish_fills(redis_client, chunk)
            published += len(chunk)
            for stream in (keys.STREAM_ORDER_EVENTS, keys.STREAM_TRADES):
                longest = max(longest, await redis_client.xlen(stream))
            await asyncio.sleep(0.1)
        for stream in (keys.STREAM_ORDER_EVENTS, keys.STREAM_TRADES):
            await wait_until(lambda stream=stream: redis_client.xlen(stream), f"{stream} trimmed",
                                   accept=lambda n: n == 0, timeout_s=60)  # fmt: skip
    finally:
        stop.set()
        await asyncio.gather(*services)
    assert longest < published * 0.4, f"a stream reached {longest:,} entries of {published:,}"
    client = make_client(ch_settings)
    assert client.command("SELECT count() FROM trades") == published
    client.close()
