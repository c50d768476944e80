"""Today's Gamma shapes (docs/upstream-gamma.md), each through the markets ingester's validation, the writer and the
embedded ClickHouse: a market without volume fields stores NULL, not 0; the rows stored before migration 005
migrate; and the simulator serves each shape, which a real sync stores."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from common import keys
from common.clickhouse import apply_migrations, make_client
from common.config import ClickHouseSettings, HttpSettings, RedisSettings, SourceSettings
from common.payloads import decode_market_ref
from ingesters import polymarket_events_ingester as events_ingester
from ingesters import polymarket_ingester as markets_ingester
from ingesters.gamma import Connections, append_changed
from processors import clickhouse_writer
from processors.rows import market_row
from simulator.gamma_shapes import V1_SHAPES, V2_SHAPES
from tests.fixtures.gamma_shapes import POSITIONS, SHAPES, V2_EVENT
from tests.fixtures.helpers import UNCLAIMED_STREAMS

HTTP = HttpSettings(connect_timeout_s=2, read_timeout_s=2, backoff_base_s=0.02, backoff_max_s=0.2)
COLUMNS = ("version", "position_ids", "clob_token_ids", "resolution_status", "volume", "liquidity", "outcomes",
           "outcome_prices", "neg_risk", "closed", "toString(start_date)", "toString(created_at)",
           "toString(updated_at)")  # fmt: skip


def stored_values(row: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The `expected` columns of a stored row (dates as ClickHouse's text, read with toString)."""
    return {name: row.get(name, row.get(f"toString({name})")) for name in expected}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_real_shape_is_a_valid_market_with_the_expected_row(shape: str) -> None:
    market, expected = SHAPES[shape]
    markets_ingester.validate_market(market)
    row = market_row(orjson.dumps(market), datetime.now().astimezone())._asdict()
    for name, value in expected.items():
        got = row[name]
        if isinstance(got, datetime):
            got = got.strftime("%Y-%m-%d %H:%M:%S.%f")
        assert got == value, (name, got)


def test_a_v2_market_maps_its_position_ids_whether_native_or_json_text() -> None:
    for shape in ("v2_native", "v2_text_ids"):
        index = markets_ingester.token_index(SHAPES[shape][0])[keys.MARKETS_BY_TOKEN]
        assert sorted(index) == sorted(POSITIONS)  # the ids its fills carry, even beside clobTokenIds
        assert [decode_market_ref(index[p]).outcome for p in POSITIONS] == ["Yes", "No"]


async def write_through_pipeline(redis: aioredis.Redis, redis_settings: RedisSettings, ch: ClickHouseSettings) -> None:
    await append_changed(redis, markets_ingester.MARKETS, [market for market, _ in SHAPES.values()], None)
    await append_changed(redis, events_ingester.EVENTS, [V2_EVENT], None)
    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch,
                                streams=UNCLAIMED_STREAMS, once=True)  # fmt: skip


async def test_every_shape_is_stored_and_a_market_without_volume_fields_has_null_volume(
    redis_client: aioredis.Redis, redis_settings: RedisSettings, ch_settings: ClickHouseSettings
) -> None:
    await write_through_pipeline(redis_client, redis_settings, ch_settings)
    client = make_client(ch_settings)
    try:
        rows = client.query(f"SELECT id, {', '.join(COLUMNS)} FROM markets").result_rows
        nulls = client.query("SELECT id FROM markets WHERE volume IS NULL AND liquidity IS NULL").result_rows
        event = client.query("SELECT version, market_ids FROM events WHERE id = '940002'").result_rows
    finally:
        client.close()
    by_id = {row[0]: dict(zip(COLUMNS, row[1:], strict=True)) for row in rows}
    assert len(by_id) == len(SHAPES)
    for market, expected in SHAPES.values():
        stored = by_id[market["id"]]
        approx = {k: pytest.approx(v) if isinstance(v, float | list) else v for k, v in expected.items()}
        assert stored_values(stored, expected) == approx, market["id"]
    assert nulls == [(SHAPES["no_volume"][0]["id"],)]  # NULL, not a zero that looks like a real volume
    assert event == [("v2", ["930005"])]


async def test_rows_stored_before_migration_005_get_null_volumes_and_their_v2_fields(
    clickhouse_client: Any, ch_settings: ClickHouseSettings
) -> None:
    apply_migrations(ch_settings)
    client = make_client(ch_settings)
    try:
        # rows as the writer stored them before: a zero volume for a market whose raw object had none
        no_volume, _ = SHAPES["no_volume"]
        v2, _ = SHAPES["v2_native"]
        old = [("930001", 0.0, 0.0, orjson.dumps(no_volume).decode()), ("930005", 1834.220518, 912.5,
               orjson.dumps(v2).decode())]  # fmt: skip
        client.insert("markets", [[i, vol, liq, raw, 1_777_000_000, 1_777_000_000_000] for i, vol, liq, raw in old],
                      column_names=["id", "volume", "liquidity", "raw", "updated_at", "ingested_at"])  # fmt: skip
        client.insert("events", [["940002", orjson.dumps(V2_EVENT).decode(), 1_777_000_000, 1_777_000_000_000]],
                      column_names=["id", "raw", "updated_at", "ingested_at"])  # fmt: skip
        client.command("ALTER TABLE schema_migrations DELETE WHERE version = 5 SETTINGS mutations_sync = 1")
        assert apply_migrations(ch_settings) == [5]  # as on the first start after the upgrade
        markets = client.query("SELECT id, volume, liquidity, resolution_status FROM markets ORDER BY id").result_rows
        events = client.query("SELECT version FROM events").result_rows
    finally:
        client.close()
    assert markets == [("930001", None, None, ""), ("930005", 1834.220518, 912.5, "active")]
    assert events == [("v2",)]


async def test_the_simulator_serves_every_shape_and_a_sync_stores_them(
    simulator: Any, redis_client: aioredis.Redis, redis_settings: RedisSettings, ch_settings: ClickHouseSettings
) -> None:
    sim = simulator(seed=3, markets=60, history_fills=300, late_listing_delay_s=3600)
    shaped = {m.id: m for m in sim.world.catalogue.markets if m.gamma_shape}
    assert {m.gamma_shape for m in shaped.values()} == set(V1_SHAPES + V2_SHAPES)
    source = SourceSettings(gamma_api_url=sim.gamma_url)
    settings = markets_ingester.MarketsSettings(gamma_rate_per_s=30)
    await markets_ingester.run(settings, Connections(redis_settings, HTTP, source), once=True)
    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch_settings,
                                streams=UNCLAIMED_STREAMS, once=True)  # fmt: skip
    client = make_client(ch_settings)
    try:
        rows = client.query(
            "SELECT id, volume, outcomes, outcome_prices, position_ids, JSONHas(raw, 'marketMakerAddress'), "
            "toString(created_at), start_date FROM markets"
        ).result_rows
    finally:
        client.close()
    stored = {row[0]: row[1:] for row in rows}
    listed = [m for m in sim.world.catalogue.markets if m.listing == "listed"]
    assert set(stored) == {m.id for m in listed}
    for market_id, market in shaped.items():
        volume, outcomes, prices, positions, has_mm, created_at, start_date = stored[market_id]
        shape = market.gamma_shape
        assert (volume is None) == (shape == "no_volume")
        assert has_mm == (shape == "amm")  # omitted for every other market
        assert (start_date is None) == (shape == "no_start_date")
        if shape == "scalar":
            assert outcomes == ["Long", "Short"]
        if shape == "long_prices":
            assert sum(prices) == pytest.approx(1.0) and prices[0] == pytest.approx(market.price)
        if shape == "short_fraction":
            assert created_at.startswith(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(market.created_s)))
        if shape == "position_ids_text":
            assert positions == list(market.position_ids)
