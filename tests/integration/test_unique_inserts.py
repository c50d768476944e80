"""Nothing counted twice, whatever overlaps (issue 13): every table unique by `id` at insert time, without FINAL.

Merges of `trades` are stopped (SYSTEM STOP MERGES) for these tests, so a duplicate that got in stays visible to
count() (of `trades` and of its view `order_filled_events`): ReplacingMergeTree cannot hide it.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from common import keys, tables
from common.clickhouse import apply_migrations, make_client
from common.config import ClickHouseSettings, SourceSettings
from common.unique_insert import (
    MAX_RANGES,
    STORED_IDS_BLOCK_ROWS,
    UniqueKey,
    first_of_each_id,
    select_new,
    take,
    time_ranges,
)
from ingesters import chain_ingester, goldsky_ingester
from pipeline.ops import dedupe as ops_dedupe
from pipeline.ops import verify as ops_verify
from processors import clickhouse_writer, trade_processor
from tests.fixtures.dashboard_world import run_command, set_pipeline_env
from tests.fixtures.fills_world import make_fills, make_markets, publish_fills, publish_markets
from tests.fixtures.helpers import FAST_STREAMS, items_added, wait_until
from tests.integration.test_fill_ingesters import FAST_HTTP, WORLD

FILL_TABLES = tables.FILL_TABLES


@pytest.fixture(name="ch")
def ch_fixture(clickhouse_server: Any) -> Iterator[ClickHouseSettings]:
    """A fresh database, migrated, with merges of `trades` stopped."""
    settings = ClickHouseSettings(host="127.0.0.1", port=clickhouse_server.port, database=f"u_{uuid.uuid4().hex[:10]}",
                                  batch_size=3000, flush_interval_s=0.05, insert_max_attempts=2)  # fmt: skip
    apply_migrations(settings)
    client = make_client(settings)
    client.command(f"SYSTEM STOP MERGES {settings.database}.{tables.TRADES}")
    yield settings
    client.command(f"DROP DATABASE IF EXISTS {settings.database}")
    client.close()


def counts(ch: ClickHouseSettings, table: str) -> tuple[int, int]:
    client = make_client(ch)
    try:
        count, unique = client.query(f"SELECT count(), uniqExact(id) FROM {table}").result_rows[0]
        return int(count), int(unique)
    finally:
        client.close()


async def run_processor_and_writer(redis_settings: Any, ch: ClickHouseSettings) -> None:
    """Markets unknown: trades go out at once with market_id '' (enough for counting)."""
    await trade_processor.run(trade_processor.ProcessorSettings(unknown_market_wait_s=0, held_check_interval_s=0.1),
                              redis=redis_settings, streams=FAST_STREAMS, once=True)  # fmt: skip
    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch,
                                streams=FAST_STREAMS, once=True)  # fmt: skip


async def ingest_both_sources_over_v1(sim: Any, redis_settings: Any) -> int:
    """Goldsky and the chain ingester (from the first block, before the cutover) both serve the v1 fills."""
    truth = sim.truth()
    sources = SourceSettings(goldsky_url=sim.goldsky_url, polygon_rpc_url=SecretStr(sim.rpc_url))
    await goldsky_ingester.run(goldsky_ingester.GoldskyConfig(goldsky_ingester.GoldskySettings(), sources, FAST_HTTP,
                                                              redis_settings), once=True)  # fmt: skip
    chain = chain_ingester.ChainSettings(start_block=truth["first_block"])
    await chain_ingester.run(chain_ingester.ChainConfig(chain, sources, FAST_HTTP, redis_settings), once=True)
    return len({f["id"] for f in truth["fills"] if f["block_number"] <= truth["finalized_block"] or
                "goldsky" in f["sources"]})  # fmt: skip


def test_first_of_each_id_keeps_the_first_or_the_newest_row_of_an_id_from_columns() -> None:
    names = ("id", "v")
    immutable, versioned = UniqueKey(time_column="v"), UniqueKey(version_column="v")
    assert first_of_each_id([["a", "b", "c"], [1, 2, 3]], names, immutable) == [0, 1, 2]
    columns = [["a", "b", "a", "c", "b"], [1, 5, 3, 1, 5]]
    assert first_of_each_id(columns, names, immutable) == [0, 1, 3]
    assert first_of_each_id(columns, names, versioned) == [1, 2, 3]  # b's tie: the first
    assert take(columns, [1, 2, 3]) == [["b", "a", "c"], [5, 3, 1]]
    assert all(kept is column for kept, column in zip(take(columns, range(5)), columns, strict=True))


def test_time_ranges_split_at_gaps_and_merge_the_closest_beyond_the_cap() -> None:
    assert time_ranges([]) == []
    assert time_ranges([5, 3, 3, 4, 100, 200, 161]) == [(3, 5), (100, 100), (161, 200)]
    assert time_ranges([0, 1000, 1100, 5000], max_ranges=2) == [(0, 1100), (5000, 5000)]


def test_a_batch_scattered_over_many_stored_rows_keeps_exactly_its_new_ones(ch: ClickHouseSettings) -> None:
    # Fills held for their market and released together: their times scatter over hours of stored rows, so the
    # merged ranges hold far more stored ids than the batch (read in blocks, only the batch's kept).
    rng = random.Random(5)
    client = make_client(ch)
    client.command("CREATE TABLE scattered (timestamp DateTime, id String) ENGINE = MergeTree ORDER BY (timestamp, id)")
    stored = [(1_700_000_000 + rng.randrange(64_000), f"stored-{n}") for n in range(3 * STORED_IDS_BLOCK_ROWS)]
    client.insert("scattered", stored, column_names=["timestamp", "id"])
    again = rng.sample(stored, 300)  # served a second time: stored already
    new = [(1_700_000_000 + rng.randrange(64_000), f"new-{n}") for n in range(700)]
    batch = rng.sample(again + new, 1000)
    columns = [[row[0] for row in batch], [row[1] for row in batch]]
    key = UniqueKey(time_column="timestamp")
    assert len(time_ranges(columns[0])) == MAX_RANGES  # merged ranges: wide, over the stored rows
    fresh, replaced = select_new(client, "scattered", ["timestamp", "id"], columns, list(range(1000)), key, {})
    assert [batch[index][1] for index in fresh] == [row[1] for row in batch if row[1].startswith("new-")]
    assert replaced == []
    client.close()


async def test_goldsky_and_chain_over_the_same_range_store_each_fill_once(
    simulator, redis_client, redis_settings, ch
) -> None:
    sim = simulator(**WORLD)
    distinct = await ingest_both_sources_over_v1(sim, redis_settings)
    fills = await items_added(redis_client, keys.STREAM_ORDER_EVENTS)
    assert fills - distinct == sim.truth()["v1_count"] >= 5_000  # every v1 fill arrived twice, bursts included

    await run_processor_and_writer(redis_settings, ch)

    for table in FILL_TABLES:
        assert (table, *counts(ch, table)) == (table, distinct, distinct)
    heartbeat = await redis_client.hgetall(keys.service_key("clickhouse_writer"))
    assert int(heartbeat[b"count:duplicates_skipped"]) == sim.truth()["v1_count"]


async def test_two_writers_and_three_processors_on_one_stream_store_each_fill_once(
    redis_client, redis_settings, ch
) -> None:
    rng = random.Random(13)
    markets = make_markets(rng, 10)
    fills = make_fills(rng, markets, groups=3000)
    await publish_markets(redis_client, markets)
    await publish_fills(redis_client, fills)
    await publish_fills(redis_client, fills[::2])  # half of them a second time, as another source would
    stop = asyncio.Event()
    services = [
        *(trade_processor.run(trade_processor.ProcessorSettings(trade_processor_consumer=f"processor-{n}",
                                                                trade_processor_batch_max=500),
                              redis=redis_settings, streams=FAST_STREAMS, stop=stop) for n in range(3)),
        *(clickhouse_writer.run(clickhouse_writer.WriterSettings(clickhouse_writer_consumer=f"writer-{n}"),
                                redis=redis_settings, clickhouse=ch.model_copy(update={"batch_size": 700}),
                                streams=FAST_STREAMS, stop=stop) for n in range(2)),
    ]  # fmt: skip
    running = [asyncio.create_task(service) for service in services]
    try:
        async def drained() -> bool:
            return counts(ch, "trades")[1] >= len(fills) and counts(ch, "order_filled_events")[1] >= len(fills)

        await wait_until(drained, "the pipeline drained", timeout_s=120, interval_s=0.3)
    finally:
        stop.set()
        await asyncio.gather(*running)
    for table in FILL_TABLES:
        assert (table, *counts(ch, table)) == (table, len(fills), len(fills))
    assert await redis_client.exists(keys.insert_lock_key("trades")) == 0  # released


async def test_a_newer_market_replaces_the_stored_one_and_an_older_or_equal_one_is_skipped(
    redis_client, redis_settings, ch
) -> None:
    def market(market_id: str, updated_at: str, question: str) -> dict[str, str]:
        return {"id": market_id, "question": question, "updatedAt": updated_at}

    versions = [market("1", "2026-01-01T00:00:00Z", "v1"), market("2", "2026-01-01T00:00:00Z", "v1"),
                market("1", "2026-01-03T00:00:00Z", "v3"), market("1", "2026-01-02T00:00:00Z", "v2")]  # fmt: skip
    for batch in ([versions[0], versions[1]], [versions[2], versions[3], versions[1]], [versions[0]]):
        for item in batch:
            await redis_client.xadd(keys.STREAM_MARKETS, {"data": orjson.dumps(item)})
        await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch,
                                    streams=FAST_STREAMS, once=True)  # fmt: skip
    client = make_client(ch)
    try:
        rows = client.query("SELECT id, question FROM markets ORDER BY id").result_rows
    finally:
        client.close()
    assert [tuple(row) for row in rows] == [("1", "v3"), ("2", "v1")]
    assert counts(ch, "markets") == (2, 2)


async def test_verify_reports_pre_existing_duplicates_per_bucket_and_dedupe_removes_them(
    simulator, redis_client, redis_settings, ch, monkeypatch, capsys
) -> None:
    sim = simulator(**WORLD)
    distinct = await ingest_both_sources_over_v1(sim, redis_settings)
    # the writer as it was before this change: no check, so both sources' copies go in
    await run_processor_and_writer(redis_settings, ch.model_copy(update={"unique_keys": False}))
    v1 = sim.truth()["v1_count"]
    assert [counts(ch, table) for table in FILL_TABLES] == [(distinct + v1, distinct)] * 2  # merges stopped: kept
    set_pipeline_env(monkeypatch, redis_settings, ch)
    stamps = [f["timestamp"] for f in sim.truth()["fills"]]
    span = ("--from", str(min(stamps)), "--to", str(max(stamps)))

    assert await run_command(ops_verify.main, *span) == 1
    report = capsys.readouterr().out
    assert f"duplicates  {v1:>9,}" in report and "trades" in report and "duplicate row(s)" in report

    client = make_client(ch)
    # OPTIMIZE needs merges running; this limit keeps background merges from racing it to the duplicates
    client.command(f"ALTER TABLE {tables.TRADES} MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 1")
    client.command(f"SYSTEM START MERGES {ch.database}.{tables.TRADES}")
    client.close()
    assert await run_command(ops_dedupe.main, *span, "--yes") == 0
    out = capsys.readouterr().out
    assert f"dedupe trades: removed {v1:,} duplicate row(s)" in out  # and so from its view
    assert [counts(ch, table) for table in FILL_TABLES] == [(distinct, distinct)] * 2
    assert await run_command(ops_verify.main, *span) == 0
