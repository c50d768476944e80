"""GAMMA_VERSIONS through the real services, in a world where Gamma hides Protocol V2 markets unless asked (the
simulator's default, as Gamma's): `v1` leaves the V2 markets out on purpose, their fills written at once and counted
as excluded, and the dashboard and `doctor` say so; and the upgrade of a deployment that stored V2 trades without
a market: its first start re-lists with both versions, and `replay --unresolved` gives those trades their market
with `count()` unchanged. (Both versions, the default, over the same kind of world: test_exchange_families.py.)
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from common import keys
from common.clickhouse import make_client
from common.config import ClickHouseSettings, GammaSettings, RedisSettings, SourceSettings
from common.status.snapshot import ClickHouseReader, collect_status
from ingesters import chain_ingester
from ingesters import polymarket_ingester as markets_ingester
from ingesters.gamma import Connections
from ingesters.gamma_listing import SYNCED, synced
from pipeline.ops import doctor
from pipeline.ops import replay as ops_replay
from processors import clickhouse_writer, trade_processor
from tests.fixtures.dashboard_world import run_command, set_pipeline_env
from tests.fixtures.helpers import UNCLAIMED_STREAMS, first_seen_ms, items_added, wait_until
from tests.fixtures.simulator import SimulatorFactory
from tests.integration.test_exchange_families import COLUMNS, HTTP, expected_trade

# No unlisted or late market: every fill of a selected version finds its market at once, so none waits out the
# long wait below, and every V2 market can be listed by the upgraded ingester.
WORLD = {"seed": 29, "markets": 40, "history_fills": 5_000, "v2_fills": 2_500, "unlisted_markets": 0,
         "late_markets": 0}  # fmt: skip
LONG_WAIT_S = 600.0  # a fill that waited for its market would stall the test: excluded ones must not wait
V1 = GammaSettings(versions=("v1",))


async def run_pipeline(
    sim: Any, truth: dict[str, Any], redis: aioredis.Redis, redis_settings: RedisSettings, gamma: GammaSettings
) -> trade_processor.Service:
    """The markets ingester's full sync, then the chain ingester and the trade processor until every fill is a
    trade; the processor's service (its counters) is returned."""
    source = SourceSettings(gamma_api_url=sim.gamma_url, polygon_rpc_url=SecretStr(sim.rpc_url))
    markets = markets_ingester.MarketsSettings(markets_refresh_s=3600, token_lookup_interval_s=0.2,
                                               gamma_rate_per_s=30)  # fmt: skip
    chain = chain_ingester.ChainConfig(chain_ingester.ChainSettings(start_block=truth["first_block"]), source, HTTP,
                                       redis_settings)  # fmt: skip
    processor = trade_processor.ProcessorSettings(unknown_market_wait_s=LONG_WAIT_S, held_check_interval_s=0.1)
    await markets_ingester.run(markets, Connections(redis_settings, HTTP, source, gamma), once=True)
    stop = asyncio.Event()
    processing = asyncio.create_task(
        trade_processor.run(processor, redis=redis_settings, streams=UNCLAIMED_STREAMS, gamma=gamma, stop=stop)
    )
    try:
        await chain_ingester.run(chain, once=True)
        await wait_until(lambda: items_added(redis, keys.STREAM_TRADES), "a trade for every fill",
                         accept=lambda n: n == truth["count"], timeout_s=60)
    finally:
        stop.set()
    return await processing


async def write_tables(redis_settings: RedisSettings, ch: ClickHouseSettings) -> None:
    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch,
                                streams=UNCLAIMED_STREAMS, once=True)  # fmt: skip


def stored_trades(ch: ClickHouseSettings) -> dict[str, dict[str, Any]]:
    client = make_client(ch)
    try:
        rows = client.query(f"SELECT {', '.join(COLUMNS)} FROM trades").result_rows
    finally:
        client.close()
    return {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in rows}


def assert_trade(actual: dict[str, Any], fill: dict[str, Any], **market: Any) -> None:
    """The stored trade is the truth's (with `market` cells overriding the truth's market cells)."""
    expected = expected_trade(fill) | market
    actual = dict(actual)
    assert actual.pop("price") == pytest.approx(expected.pop("price"), rel=1e-12)
    assert actual == expected, (fill["family"], fill["id"])


def taker_volume(ch: ClickHouseSettings) -> dict[str, tuple[int, Decimal, Decimal]]:
    client = make_client(ch)
    try:
        rows = client.query("SELECT market_id, count(), toString(sum(usd_amount)), toString(sum(token_amount)) "
                            "FROM trades WHERE is_taker_side = 1 GROUP BY market_id").result_rows  # fmt: skip
    finally:
        client.close()
    return {m: (n, Decimal(usd), Decimal(tokens)) for m, n, usd, tokens in rows}


def truth_volume(truth: dict[str, Any]) -> dict[str, tuple[int, Decimal, Decimal]]:
    return {market: (v["count"], Decimal(v["usdc_sum"]) / 10**6, Decimal(v["token_sum"]) / 10**6)
            for market, v in truth["taker_side_by_market"].items()}  # fmt: skip


def without_market(fill: dict[str, Any]) -> dict[str, Any]:
    """The market cells of a trade stored without its market: a position id keeps the outcome index it encodes."""
    return {"market_id": "", "condition_id": "", "outcome": "", "outcome_index": fill["outcome_index"]}


@pytest.fixture
def world(simulator: SimulatorFactory) -> tuple[Any, dict[str, Any], dict[str, dict[str, Any]]]:
    """The simulator of WORLD, its truth, and the truth's fills by id."""
    sim = simulator(**WORLD)
    truth = sim.truth()
    return sim, truth, {fill["id"]: fill for fill in truth["fills"]}


async def test_with_gamma_versions_v1_v2_markets_are_absent_and_their_fills_written_at_once_as_excluded(
    world: Any, redis_client: aioredis.Redis, redis_settings: RedisSettings, ch_settings: ClickHouseSettings,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    sim, truth, fills = world
    v3_fills = {fid for fid, fill in fills.items() if fill["family"] == "v3"}
    v2_markets = set(truth["v2_market_ids"])
    assert v3_fills and v2_markets and all(f["family"] == "v3" for f in fills.values() if f["market_id"] in v2_markets)

    processor = await run_pipeline(sim, truth, redis_client, redis_settings, V1)

    # written at once, not after the 600 s wait for a market that is never asked for
    arrived = first_seen_ms(await redis_client.xrange(keys.STREAM_ORDER_EVENTS))
    written = first_seen_ms(await redis_client.xrange(keys.STREAM_TRADES))
    assert max(written[fid] - arrived[fid] for fid in v3_fills) < 30_000
    assert processor.counters["excluded_markets"] == len(v3_fills)
    assert processor.counters.get("unresolved_markets", 0) == 0
    assert not await redis_client.smembers(keys.TOKEN_LOOKUPS)  # no position id was asked for

    await write_tables(redis_settings, ch_settings)
    client = make_client(ch_settings)
    try:
        stored_markets = {row[0]: row[1] for row in client.query("SELECT id, version FROM markets").result_rows}
    finally:
        client.close()
    listed_v1 = {m.id for m in sim.world.catalogue.markets if m.listing == "listed" and m.version != "v2"}
    assert set(stored_markets) == listed_v1 and "v2" not in stored_markets.values()
    trades = stored_trades(ch_settings)
    assert len(trades) == len(fills)
    for fid, fill in fills.items():
        assert_trade(trades[fid], fill, **(without_market(fill) if fid in v3_fills else {}))

    # the dashboard says so
    status = await collect_status(redis_client, ClickHouseReader(ch_settings))
    assert status.unresolved.excluded_by_versions == len(v3_fills)
    assert status.unresolved.trades_without_market == len(v3_fills)
    # and so does doctor, naming the count
    set_pipeline_env(monkeypatch, redis_settings, ch_settings)
    for name, value in {**sim.env(), "GAMMA_VERSIONS": "v1", "HTTP_BACKOFF_BASE_S": "0.01"}.items():
        monkeypatch.setenv(name, value)
    assert await run_command(doctor.main) == 0  # a warning, not a failure: it is the operator's choice
    gamma_line = next(line for line in capsys.readouterr().out.splitlines() if "gamma" in line and "keyset" in line)
    assert gamma_line.startswith("WARN") and "GAMMA_VERSIONS=v1:" in gamma_line
    assert "0% version v2" in gamma_line and "Protocol V2 markets are left out on purpose" in gamma_line
    assert f"{len(v3_fills):,} trades written without a market as excluded" in gamma_line


async def test_an_upgraded_deployment_relists_both_versions_and_replay_unresolved_repairs_its_old_trades(
    world: Any, redis_client: aioredis.Redis, redis_settings: RedisSettings, ch_settings: ClickHouseSettings,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    sim, truth, fills = world
    combos = set(truth["combo_position_ids"])

    # Before the upgrade: Gamma asked for v1 only, as the old ingester (which named no version) got; its V2 fills
    # were stored without a market. The old ingester stored its position without versions.
    await run_pipeline(sim, truth, redis_client, redis_settings, V1)
    await write_tables(redis_settings, ch_settings)
    await redis_client.set(keys.STATE_POLYMARKET_OFFSET, SYNCED)
    old = stored_trades(ch_settings)
    orphaned = {fid for fid, t in old.items() if t["market_id"] == "" and fills[fid]["token_id"] not in combos}
    assert orphaned and all(fills[fid]["family"] == "v3" for fid in orphaned)

    # The first start after the upgrade (default GAMMA_VERSIONS): the stored position is not of this selection, so
    # the full sync runs again, and only the markets it had not seen are appended.
    before = await items_added(redis_client, keys.STREAM_MARKETS)
    source = SourceSettings(gamma_api_url=sim.gamma_url)
    settings = markets_ingester.MarketsSettings(markets_refresh_s=3600, gamma_rate_per_s=30)
    await markets_ingester.run(settings, Connections(redis_settings, HTTP, source), once=True)
    listed_v2 = {m.id for m in sim.world.catalogue.markets if m.listing == "listed" and m.version == "v2"}
    assert await items_added(redis_client, keys.STREAM_MARKETS) - before == len(listed_v2)
    assert await redis_client.get(keys.STATE_POLYMARKET_OFFSET) == synced(("v1", "v2")).encode()
    await write_tables(redis_settings, ch_settings)
    # half the V2 tokens only in ClickHouse's markets table: the repair reads both places
    v2_tokens = sorted({fills[fid]["token_id"] for fid in orphaned})
    await redis_client.hdel(keys.MARKETS_BY_TOKEN, *v2_tokens[::2])

    set_pipeline_env(monkeypatch, redis_settings, ch_settings)
    assert await run_command(ops_replay.main, "--unresolved", "--dry-run") == 0
    assert f"{len(orphaned):,} trade(s) to repair" in capsys.readouterr().out
    assert await run_command(ops_replay.main, "--unresolved") == 0
    out = capsys.readouterr().out
    assert f"{len(orphaned):,} trade(s) got their market" in out and f"count() {len(fills):,} -> {len(fills):,}" in out

    repaired = stored_trades(ch_settings)
    assert len(repaired) == len(fills)
    for fid, fill in fills.items():
        assert_trade(repaired[fid], fill)  # every trade as the truth has it; Combos keep no market
    assert taker_volume(ch_settings) == truth_volume(truth)
    assert await run_command(ops_replay.main, "--unresolved") == 0  # idempotent: nothing left it can resolve
    assert "0 token(s) now have a market" in capsys.readouterr().out
