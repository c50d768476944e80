"""`python -m pipeline verify --against data-api` on the simulator: the pipeline's taker-side trades per market and
hour against the simulator's Data API v2 (`/v2/trades`, served from its truth). A clean run has no difference; a
trade the Data API drops, or one whose size it alters, is found and named with its market and hour.

The pipeline (markets ingester, chain ingester, trade processor, writer) runs against the simulator with a real
Redis and the embedded ClickHouse. The Data API is paged 50 rows at a time and answers 429 to a fifth of the
requests, so the cursor walk and the backoff are exercised too.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from common import keys
from common.config import HttpSettings, RedisSettings, SourceSettings
from ingesters import chain_ingester
from ingesters import polymarket_ingester as markets_ingester
from ingesters.gamma import Connections
from pipeline.ops import verify as ops_verify
from pipeline.ops import verify_data_api
from pipeline.ops.command import iso
from processors import clickhouse_writer, trade_processor
from tests.fixtures.dashboard_world import run_command, set_pipeline_env
from tests.fixtures.helpers import UNCLAIMED_STREAMS, items_added, wait_until
from tests.fixtures.simulator import SimulatorFactory

WORLD = {"seed": 31, "markets": 24, "history_fills": 4_000, "v2_fills": 2_000, "late_markets": 0,
         "faults": "data_api.429=0.2,retry_after_s=0"}  # fmt: skip
HTTP = HttpSettings(connect_timeout_s=2, read_timeout_s=2, backoff_base_s=0.02, backoff_max_s=0.2)


async def run_pipeline(sim: Any, truth: dict[str, Any], redis: aioredis.Redis, redis_settings: RedisSettings,
                       ch_settings: Any) -> None:  # fmt: skip
    """Every fill of the history into `trades` (unlisted markets and Combos end with market_id '' after 1 s)."""
    source = SourceSettings(gamma_api_url=sim.gamma_url, polygon_rpc_url=SecretStr(sim.rpc_url))
    gamma = Connections(redis_settings, HTTP, source)
    await markets_ingester.run(markets_ingester.MarketsSettings(gamma_rate_per_s=30), gamma, once=True)
    chain = chain_ingester.ChainConfig(chain_ingester.ChainSettings(start_block=truth["first_block"]), source, HTTP,
                                       redis_settings)  # fmt: skip
    await chain_ingester.run(chain, once=True)
    stop = asyncio.Event()
    processor = trade_processor.ProcessorSettings(unknown_market_wait_s=1.0, held_check_interval_s=0.1)
    processing = trade_processor.run(processor, redis=redis_settings, streams=UNCLAIMED_STREAMS, stop=stop)
    task = asyncio.create_task(processing)
    try:
        await wait_until(lambda: items_added(redis, keys.STREAM_TRADES), "a trade for every fill",
                         accept=lambda n: n == truth["count"], timeout_s=60)
    finally:
        stop.set()
        await task
    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch_settings,
                                streams=UNCLAIMED_STREAMS, once=True)  # fmt: skip


def busiest_hours(truth: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(market id, hour, taker-side trades) of named markets, most trades first."""
    counts: dict[tuple[str, int], int] = {}
    for fill in truth["fills"]:
        if fill["is_taker_side"] and fill["market_id"]:
            key = (fill["market_id"], fill["timestamp"] // 3600 * 3600)
            counts[key] = counts.get(key, 0) + 1
    return sorted(((m, h, n) for (m, h), n in counts.items()), key=lambda x: -x[2])


async def test_verify_against_the_data_api_is_clean_then_names_each_planted_discrepancy_by_market_and_hour(
    simulator: SimulatorFactory,
    redis_client: aioredis.Redis,
    redis_settings: RedisSettings,
    ch_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = simulator(**WORLD)
    truth = sim.truth()
    await run_pipeline(sim, truth, redis_client, redis_settings, ch_settings)
    set_pipeline_env(monkeypatch, redis_settings, ch_settings)
    for name, value in {"DATA_API_URL": sim.data_api_url, "HTTP_BACKOFF_BASE_S": "0.01", "HTTP_MAX_ATTEMPTS": "20",
                        "HTTP_BACKOFF_MAX_S": "0.1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(verify_data_api, "PAGE", 50)
    stamps = [fill["timestamp"] for fill in truth["fills"]]
    window = ("--from", str(min(stamps)), "--to", str(max(stamps)))
    named = {m: v for m, v in truth["taker_side_by_market"].items() if m}
    taker_trades = sum(v["count"] for v in named.values())

    assert await run_command(ops_verify.main, "--against", "data-api", *window) == 0
    out = capsys.readouterr().out
    assert f"{len(named)} market(s), {taker_trades:,} taker-side trade(s) here, {taker_trades:,} at the Data API" in out
    unnamed = truth["taker_side_by_market"][""]["count"]
    assert f"not compared: {unnamed:,} taker-side trade(s) without a market" in out
    assert "differences: 0 market(s), 0 hour(s)" in out and "DIFF" not in out
    assert sim.config()["faults_injected"].get("data_api.429", 0) > 0  # the 429s were retried through

    hours = busiest_hours(truth)
    dropped_market, dropped_hour, n = hours[0]
    altered_market, altered_hour, m = next(h for h in hours if h[0] != dropped_market)
    planted = sim.plant(data_api_discrepancy={"market_id": dropped_market, "hour": dropped_hour, "mode": "drop"})
    sim.plant(data_api_discrepancy={"market_id": altered_market, "hour": altered_hour, "mode": "alter"})
    assert len(planted["data_api_discrepancies"]) == 1

    assert await run_command(ops_verify.main, "--against", "data-api", *window) == 1
    diffs = [line for line in capsys.readouterr().out.splitlines() if "DIFF" in line]
    dropped = [line for line in diffs if f"market {dropped_market} " in line]
    altered = [line for line in diffs if f"market {altered_market} " in line]
    assert len(diffs) == 4 and len(dropped) == len(altered) == 2  # each: its market's total and its hour
    assert any(f"hour {iso(dropped_hour)}: trades {n:,} here / {n - 1:,} at the Data API" in line for line in dropped)
    hour_line = next(line for line in altered if f"hour {iso(altered_hour)}:" in line)
    assert f"trades {m:,} here / {m:,} at the Data API" in hour_line  # same count, other shares
    shares = re.search(r"shares ([\d,.]+) / ([\d,.]+)", hour_line)
    assert shares is not None
    ours, theirs = (float(x.replace(",", "")) for x in shares.groups())
    assert theirs > ours

    # --market narrows the check to one market (by id or condition id); --all prints its every hour too
    argv = ("--against", "data-api", *window, "--market", altered_market, "--all")
    assert await run_command(ops_verify.main, *argv) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("  DIFF", "  same"))]
    hours = {h for market, h, _ in busiest_hours(truth) if market == altered_market}
    assert len(lines) == 1 + len(hours) and all(f"market {altered_market} " in line for line in lines)
    assert sum(line.startswith("  DIFF") for line in lines) == 2


async def test_the_simulated_data_api_pages_newest_first_by_cursor_and_refuses_what_the_real_one_refuses(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator(seed=8, markets=12, history_fills=2_000)
    truth = sim.truth()
    by_market = truth["taker_side_by_market"]
    market = max((m for m in by_market if m), key=lambda m: by_market[m]["count"])
    condition = next(f["condition_id"] for f in truth["fills"] if f["market_id"] == market)
    url = f"{sim.data_api_url}/v2/trades"
    rows, params = [], {"condition": condition, "limit": 7}
    while True:
        page = httpx.get(url, params=params).json()
        assert set(page) == {"data", "pagination"} and page["pagination"]["limit"] == 7
        rows += page["data"]
        if not page["pagination"]["has_more"]:
            assert page["pagination"]["next_cursor"] is None
            break
        params = {"condition": condition, "cursor": page["pagination"]["next_cursor"]}
    expected = [f for f in truth["fills"] if f["market_id"] == market and f["is_taker_side"]]
    assert len(rows) == truth["taker_side_by_market"][market]["count"] == len(expected)
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)
    assert {r["transaction_hash"] for r in rows} == {f["tx_hash"] for f in expected}
    row = rows[0]
    assert set(row) == {"proxy_wallet", "token_id", "condition_id", "side", "size", "price", "timestamp",
                        "transaction_hash", "title", "slug", "outcome", "outcome_index"}  # fmt: skip
    assert isinstance(row["size"], float) and isinstance(row["price"], float) and row["condition_id"] == condition

    both = httpx.get(url, params={"condition": condition, "taker_only": "false", "limit": 1000}).json()
    assert len(both["data"]) == sum(1 for f in truth["fills"] if f["market_id"] == market)

    assert httpx.get(url, params={"condition": condition, "offset": 7}).status_code == 400
    too_many = ",".join("0x" + f"{i:064x}" for i in range(21))
    assert "at most 20" in httpx.get(url, params={"condition": too_many}).json()["error"]
    assert "malformed condition id" in httpx.get(url, params={"condition": "0x12"}).json()["error"]
    first = httpx.get(url, params={"condition": condition, "limit": 7}).json()
    switched = httpx.get(url, params={"cursor": first["pagination"]["next_cursor"], "side": "BUY"})
    assert switched.status_code == 400 and "same filters" in switched.json()["error"]
