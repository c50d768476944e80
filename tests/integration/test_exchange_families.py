"""Every trade Polymarket settles today, end to end: v1, CLOB v2 and Protocol V2 (ExchangeV3) fills, Combos included.

The simulator's default world is today's Polymarket (V2 markets, Combos, late-listed V2 markets), whose Gamma
hides V2 markets from a request that names no `version`. The markets
ingester, the chain ingester, the trade processor and the writer run against it with a real Redis and the embedded
ClickHouse; every trade cell is then compared with a computation from the simulator's truth made here, with
Decimal arithmetic and without the pipeline's code.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from common import keys
from common.clickhouse import make_client
from common.config import HttpSettings, RedisSettings, SourceSettings
from common.status.snapshot import query_clickhouse
from ingesters import chain_ingester
from ingesters import polymarket_ingester as markets_ingester
from ingesters.gamma import Connections
from processors import clickhouse_writer, trade_processor
from tests.fixtures.helpers import UNCLAIMED_STREAMS, first_seen_ms, items_added, wait_until
from tests.fixtures.simulator import SimulatorFactory

LATE_LISTING_DELAY_S = 20.0
WAIT_S = LATE_LISTING_DELAY_S + 8.0  # the late V2 market is listed well within the wait; Combos wait it out
WORLD = {"seed": 23, "markets": 40, "history_fills": 6_000, "v2_fills": 3_000,
         "late_listing_delay_s": LATE_LISTING_DELAY_S}  # fmt: skip
HTTP = HttpSettings(connect_timeout_s=2, read_timeout_s=2, backoff_base_s=0.02, backoff_max_s=0.2)
COLUMNS = ("id", "token_id", "market_id", "condition_id", "outcome", "outcome_index", "maker_direction",
           "taker_direction", "usd_amount", "token_amount", "price", "is_taker_side", "exchange", "fee")  # fmt: skip


def expected_trade(fill: dict[str, Any]) -> dict[str, Any]:
    """docs/CONTRACT.md §4 from the truth's fill: the market cells as the truth states them, the rest computed here."""
    buy = fill["maker_asset_id"] == "0"
    usdc, tokens = (fill["maker_amount"], fill["taker_amount"]) if buy else (fill["taker_amount"], fill["maker_amount"])
    usd, shares = Decimal(usdc) / 10**6, Decimal(tokens) / 10**6
    return {
        "id": fill["id"], "token_id": fill["taker_asset_id"] if buy else fill["maker_asset_id"],
        "market_id": fill["market_id"], "condition_id": fill["condition_id"], "outcome": fill["outcome"],
        "outcome_index": fill["outcome_index"], "maker_direction": "BUY" if buy else "SELL",
        "taker_direction": "SELL" if buy else "BUY", "usd_amount": usd, "token_amount": shares,
        "price": float(usd / shares), "is_taker_side": fill["is_taker_side"], "exchange": fill["exchange"],
        "fee": fill["fee"],
    }  # fmt: skip


async def run_pipeline(sim: Any, truth: dict[str, Any], redis: aioredis.Redis, redis_settings: RedisSettings) -> None:
    """Markets (full sync, then lookups only: no refresh pass could find the late market), chain, processor."""
    source = SourceSettings(gamma_api_url=sim.gamma_url, polygon_rpc_url=SecretStr(sim.rpc_url))
    markets = markets_ingester.MarketsSettings(markets_refresh_s=3600, token_lookup_interval_s=0.2,
                                               gamma_rate_per_s=30)  # fmt: skip
    chain = chain_ingester.ChainConfig(chain_ingester.ChainSettings(start_block=truth["first_block"]), source, HTTP,
                                       redis_settings)  # fmt: skip
    gamma = Connections(redis_settings, HTTP, source)
    processor = trade_processor.ProcessorSettings(unknown_market_wait_s=WAIT_S, held_check_interval_s=0.1)
    stop = asyncio.Event()
    await markets_ingester.run(markets, gamma, once=True)  # the full sync
    services = [
        asyncio.create_task(markets_ingester.run(markets, gamma, stop=stop)),
        asyncio.create_task(trade_processor.run(processor, redis=redis_settings, streams=UNCLAIMED_STREAMS, stop=stop)),
    ]
    try:
        await chain_ingester.run(chain, once=True)
        await wait_until(lambda: items_added(redis, keys.STREAM_TRADES), "a trade for every fill",
                               accept=lambda n: n == truth["count"], timeout_s=WAIT_S + 30)  # fmt: skip
    finally:
        stop.set()
        await asyncio.gather(*services)


async def test_every_trade_of_the_three_families_matches_the_truth_and_combos_wait_then_keep_their_index(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings, ch_settings
) -> None:
    sim = simulator(**WORLD)
    truth = sim.truth()
    fills = {fill["id"]: fill for fill in truth["fills"]}
    late_v2 = set(truth["late_market_ids"]) & set(truth["v2_market_ids"])
    late_v2_fills = {f["id"] for f in truth["fills"] if f["market_id"] in late_v2}
    combo_fills = {f["id"] for f in truth["fills"] if f["token_id"] in set(truth["combo_position_ids"])}
    assert all(truth["per_family"][family] for family in ("v1", "clob_v2", "v3"))
    assert late_v2_fills and len(combo_fills) == truth["combo_count"] > 0

    await run_pipeline(sim, truth, redis_client, redis_settings)

    # When each trade was written (its stream:trades entry) against when its fill arrived (stream:order_events).
    arrived = first_seen_ms(await redis_client.xrange(keys.STREAM_ORDER_EVENTS))
    written = first_seen_ms(await redis_client.xrange(keys.STREAM_TRADES))
    assert all(written[fid] - arrived[fid] >= WAIT_S * 1000 for fid in combo_fills)  # held the whole wait
    # the late V2 market's fills were held until it was listed, then written with it before their wait was over
    listed_ms = sim.truth(fills=False)["late_listed_at"] * 1000
    assert all(listed_ms <= written[fid] < arrived[fid] + WAIT_S * 1000 for fid in late_v2_fills)

    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch_settings,
                                streams=UNCLAIMED_STREAMS, once=True)  # fmt: skip
    client = make_client(ch_settings)
    try:
        rows = client.query(f"SELECT {', '.join(COLUMNS)} FROM trades").result_rows
        got = {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in rows}
        assert len(rows) == len(got) == len(fills)
        for fid, fill in fills.items():
            expected, actual = expected_trade(fill), got[fid]
            assert actual.pop("price") == pytest.approx(expected.pop("price"), rel=1e-12)
            assert actual == expected, (fill["family"], fid)
        by_market = client.query(
            "SELECT market_id, count(), toString(sum(usd_amount)), toString(sum(token_amount)) FROM trades "
            "WHERE is_taker_side = 1 GROUP BY market_id"
        ).result_rows
        status, _ = query_clickhouse(client, ch_settings.database)
        v2_stored = {row[0] for row in client.query("SELECT id FROM markets WHERE version = 'v2'").result_rows}
    finally:
        client.close()
    expected_volume = {market: (v["count"], Decimal(v["usdc_sum"]) / 10**6, Decimal(v["token_sum"]) / 10**6)
                       for market, v in truth["taker_side_by_market"].items()}  # fmt: skip
    assert {m: (n, Decimal(usd), Decimal(tokens)) for m, n, usd, tokens in by_market} == expected_volume
    assert v2_stored == set(truth["v2_market_ids"])  # Gamma hides them unless asked: every one was asked for
    assert all(got[fid]["market_id"] in late_v2 for fid in late_v2_fills)  # resolved by a position_ids lookup
    assert all(got[fid]["market_id"] == "" and got[fid]["outcome_index"] in (0, 1) for fid in combo_fills)
    unlisted = sum(1 for f in fills.values() if f["market_id"] == "" and f["family"] != "v3")
    assert status.trades_without_market_by_module == {"ctf_token": unlisted, "combinatorial": len(combo_fills)}
    by_family = defaultdict(int)
    for fill in fills.values():
        by_family[fill["family"]] += 1
    assert dict(by_family) == truth["per_family"]
