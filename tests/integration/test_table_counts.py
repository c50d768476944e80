"""The dashboard's, `status`'s and /metrics' table counts are what count() returns, also after a re-listing.

A re-listed market (a newer `updatedAt`) replaces the stored row: the writer masks the old one with a lightweight
DELETE (common/unique_insert.py). system.tables.total_rows, which the dashboard used to read, counts the masked
row until a merge drops it (the report: 91, then 89, where count() was 60).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from common import keys, tables
from common.clickhouse import apply_migrations, make_client
from common.config import ClickHouseSettings, RedisSettings
from common.pages import page
from common.status.snapshot import query_clickhouse
from processors import clickhouse_writer
from tests.fixtures.helpers import FAST_STREAMS


@pytest.fixture(name="ch")
def ch_fixture(clickhouse_server: Any) -> Iterator[ClickHouseSettings]:
    settings = ClickHouseSettings(host="127.0.0.1", port=clickhouse_server.port, database=f"c_{uuid.uuid4().hex[:10]}")
    apply_migrations(settings)
    yield settings
    client = make_client(settings)
    client.command(f"DROP DATABASE IF EXISTS {settings.database}")
    client.close()


def market(market_id: int, updated_at: str) -> bytes:
    return orjson.dumps({"id": str(market_id), "question": f"Question {market_id}?", "updatedAt": updated_at})


async def test_after_a_relisting_that_replaced_rows_the_dashboard_count_is_count(
    redis_client: aioredis.Redis, redis_settings: RedisSettings, ch: ClickHouseSettings
) -> None:
    for day in ("01", "02", "03"):  # 60 markets, listed three times (a page each), each time newer: 120 replaced
        listing = page([market(market_id, f"2026-01-{day}T00:00:00Z") for market_id in range(60)])
        await redis_client.xadd(keys.STREAM_MARKETS, {"data": listing})
        await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch,
                                    streams=FAST_STREAMS, once=True)  # fmt: skip
    client = make_client(ch)
    try:
        client.command(f"SYSTEM STOP MERGES {ch.database}.markets")  # the masked rows stay until a merge
        status, _ = query_clickhouse(client, ch.database)
        truth = {t: int(client.query(f"SELECT count() FROM {t}").result_rows[0][0]) for t in tables.ALL}
        total_rows = client.query(
            "SELECT total_rows FROM system.tables WHERE database = {db:String} AND name = 'markets'",
            parameters={"db": ch.database},
        ).result_rows[0][0]
    finally:
        client.close()
    assert truth["markets"] == 60
    assert {t.name: t.rows for t in status.tables} == truth
    assert total_rows > 60, "no masked row left: the test no longer shows what total_rows gets wrong"


def skip_index_granules(plan: Any, name: str) -> tuple[int, int] | None:
    """(selected, initial) granules of skip index `name` in an `EXPLAIN indexes = 1, json = 1` plan."""
    if isinstance(plan, dict):
        if plan.get("Type") == "Skip" and plan.get("Name") == name:
            return int(plan["Selected Granules"]), int(plan["Initial Granules"])
        plan = list(plan.values())
    if isinstance(plan, list):
        for item in plan:
            if found := skip_index_granules(item, name):
                return found
    return None


def test_trades_without_a_market_are_counted_from_their_own_granules(ch: ClickHouseSettings) -> None:
    """The dashboard counts `market_id = ''` every refresh. Migration 006's minmax index makes that read the
    granules of the unresolved tokens, not the whole column (a billion rows every 5 s otherwise), on any server
    version. (chDB 26.9 may also answer it from the parts' num_defaults counters,
    optimize_trivial_count_with_sparsity_filter, which older servers lack: off here, to see the plan's reads.)"""
    client = make_client(ch)
    try:
        # 200,000 trades of 100 tokens over 23 days; the trades of tokens 0-1 (4,000) have no market
        client.command(
            f"INSERT INTO {tables.TRADES} (id, timestamp, token_id, market_id) SELECT toString(number), "
            "toDateTime('2026-11-01 00:00:00', 'UTC') + number * 10, toString(number % 100), "
            "if(number % 100 < 2, '', concat('0xmarket', toString(number % 100))) FROM numbers(200000)"
        )
        status, _ = query_clickhouse(client, ch.database)
        plan = client.query(
            f"EXPLAIN indexes = 1, json = 1 SELECT count() FROM {tables.TRADES} WHERE market_id = '' "
            "SETTINGS optimize_trivial_count_with_sparsity_filter = 0"
        ).result_rows[0][0]
        truth = client.query(f"SELECT countIf(market_id = '') FROM {tables.TRADES}").result_rows[0][0]
    finally:
        client.close()
    assert status.trades_without_market == 4000 == truth
    assert status.newest_trade_at == 1793491200 + 199999 * 10
    granules = skip_index_granules(orjson.loads(plan), "market_id_minmax")
    assert granules is not None, "the count does not use the market_id_minmax index"
    selected, initial = granules
    assert initial >= 24 and selected <= 2, (selected, initial)  # 8,192 rows a granule: the first one or two
