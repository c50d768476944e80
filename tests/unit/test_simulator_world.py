"""The simulated world: deterministic per seed, real match groups, tick-grid prices, the cutover, bursts."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from simulator.catalogue import LATE, UNLISTED
from simulator.config import SimConfig, parse_faults
from simulator.constants import CUTOVER_BLOCK, CUTOVER_TIMESTAMP, EXCHANGE_V3_START_BLOCK, block_timestamp
from simulator.gamma_render import render_event, render_market
from simulator.truth import truth_fills, truth_summary
from simulator.world import World

CONFIG = dict(markets=40, history_fills=12_000)


@pytest.fixture(scope="module")
def world() -> World:
    return World(SimConfig(seed=11, **CONFIG))


def world_bytes(world: World) -> bytes:
    parts = [world.col(name).tobytes() for name in world.store.columns if name != "visible_at"]
    parts.append(world.store.tx_hash[: world.store.group_count].tobytes())
    catalogue = world.catalogue
    parts += [orjson.dumps(render_market(m, catalogue)) for m in catalogue.markets]
    parts += [orjson.dumps(render_event(e, catalogue, [])) for e in catalogue.events]
    summary = truth_summary(world)
    summary.pop("started_at")
    parts.append(orjson.dumps(summary))
    parts.append(orjson.dumps([{k: v for k, v in f.items() if k != "first_visible_at"} for f in truth_fills(world)]))
    return b"".join(parts)


def test_same_seed_gives_the_same_world_byte_for_byte() -> None:
    first, second = World(SimConfig(seed=5, **CONFIG)), World(SimConfig(seed=5, **CONFIG))
    assert world_bytes(first) == world_bytes(second)
    assert np.array_equal(first.goldsky_ts_order, second.goldsky_ts_order)
    assert world_bytes(World(SimConfig(seed=6, **CONFIG))) != world_bytes(first)


def test_live_blocks_are_a_function_of_seed_and_block() -> None:
    a, b = World(SimConfig(seed=5, **CONFIG)), World(SimConfig(seed=5, **CONFIG))
    for w in (a, b):
        for _ in range(3):
            w.produce_block(rate=300, now_s=1.0)
    assert world_bytes(a) == world_bytes(b)
    assert a.count > a.history_count


def test_history_straddles_the_cutover_with_v1_then_v2_exchanges(world: World) -> None:
    blocks, exchange = world.col("block"), world.col("exchange")
    v1 = slice(0, world.v1_count)
    assert world.v1_count == 12_000 - 12_000 // 5
    assert blocks[v1].max() == CUTOVER_BLOCK - 1 and blocks[world.v1_count] == CUTOVER_BLOCK
    assert set(np.unique(exchange[v1]).tolist()) == {0, 1}
    assert set(np.unique(exchange[world.v1_count :]).tolist()) == {2, 3, 4}  # CLOB v2, then ExchangeV3 too
    assert blocks[exchange == 4].min() >= EXCHANGE_V3_START_BLOCK
    assert np.all(np.diff(blocks) >= 0)
    assert block_timestamp(CUTOVER_BLOCK) == CUTOVER_TIMESTAMP == 1_777_334_400  # 2026-04-28T00:00:00Z
    assert world.head_block >= int(blocks[-1]) + world.config.finalized_lag_blocks


def test_fills_form_match_groups_with_one_taker_row_whose_taker_is_the_exchange(world: World) -> None:
    groups, taker, block = world.col("group"), world.col("taker"), world.col("block")
    tokens = world.token_amounts(slice(None))
    starts = np.flatnonzero(np.diff(groups, prepend=-1))
    ends = np.append(starts[1:], len(groups))
    assert np.all(ends - starts >= 2)
    for start, end in zip(starts[:2000].tolist(), ends[:2000].tolist(), strict=True):
        assert taker[end - 1] < 0 and np.all(taker[start : end - 1] >= 0)  # makers first, taker row last
        assert len(set(block[start:end].tolist())) == 1
        assert int(tokens[start : end - 1].sum()) == int(tokens[end - 1])  # taker fills what the makers fill
        code = -int(taker[end - 1]) - 1
        assert code == int(world.col("exchange")[end - 1])
        assert np.all(world.col("maker")[start : end - 1] != -1)
    ids = world.fill_ids(np.arange(world.count))
    assert len(set(ids)) == world.count
    assert all(len(i) == 66 + 1 + 66 and i == i.lower() for i in ids[:100])


def test_prices_sit_on_the_tick_grid_and_amounts_are_6_decimal_integers(world: World) -> None:
    usdc, tokens = world.usdc_amounts(slice(None)), world.token_amounts(slice(None))
    ticks = np.array([1000 if m.tick == 0.001 else 100 for m in world.catalogue.markets])[world.col("token") // 2]
    assert np.all(tokens > 0) and np.all(usdc > 0)
    assert np.all((usdc * ticks) % tokens == 0)  # price = usdc / tokens = k / ticks exactly
    price = usdc / tokens
    assert np.all((price > 0) & (price < 1))
    assert np.all(tokens % 10_000 == 0)
    assert np.all(world.col("fee") >= 0) and world.col("fee").sum() > 0
    assert np.all(world.col("fee")[world.col("taker") >= 0] == 0)  # fees are charged to the taker order here


def test_bursts_of_more_than_1000_fills_share_one_second_in_both_parts(world: World) -> None:
    blocks = world.col("block")
    v1_counts = np.unique(blocks[: world.v1_count], return_counts=True)[1]
    v2_counts = np.unique(blocks[world.v1_count :], return_counts=True)[1]
    assert v1_counts.max() > 1000 and v2_counts.max() > 1000


def test_late_and_unlisted_markets_have_fills(world: World) -> None:
    traded = set(np.unique(world.col("token") // 2).tolist())
    late = [m.index for m in world.catalogue.markets if m.listing == LATE]
    unlisted = [m.index for m in world.catalogue.markets if m.listing == UNLISTED]
    assert late and len(unlisted) == 3
    assert set(late) <= traded and set(unlisted) <= traded
    summary = truth_summary(world)
    assert len(summary["late_token_ids"]) == 2 * len(late) and len(summary["unlisted_token_ids"]) == 6


def test_token_ids_are_77_digit_decimals_and_condition_ids_are_32_byte_hex(world: World) -> None:
    for market in world.catalogue.markets:
        assert all(t.isdigit() and 76 <= len(t) <= 78 for t in market.token_ids)
        assert market.condition_id.startswith("0x") and len(market.condition_id) == 66
    questions = " ".join(m.question for m in world.catalogue.markets)
    assert '"' in questions and "&" in questions and "<" in questions and not questions.isascii()


def test_truth_sums_match_the_columns(world: World) -> None:
    world.start(now_s=123.0)
    summary, fills = truth_summary(world), truth_fills(world)
    assert summary["count"] == len(fills) == world.count
    assert summary["per_source"] == {"goldsky": world.v1_count, "chain": world.count}
    usdc = sum(f["maker_amount"] if f["maker_asset_id"] == "0" else f["taker_amount"] for f in fills)
    assert summary["usdc_sum"] == usdc
    assert {tuple(f["sources"]) for f in fills} == {("goldsky", "chain"), ("chain",)}
    assert all(f["first_visible_at"] == 123.0 for f in fills)
    assert json.loads(orjson.dumps(fills[0]))["id"] == f"{fills[0]['tx_hash']}_{fills[0]['order_hash']}"


def test_fault_spec_parses_rates_scopes_and_switches() -> None:
    faults = parse_faults("429=0.1,rpc.500=0.5,slow_ms=50,finalized_stall=1,retry_after_s=2,goldsky.429=0")
    assert faults.rate("gamma", "429") == 0.1 and faults.rate("rpc", "500") == 0.5
    assert faults.rate("goldsky", "429") == 0.0
    assert faults.rate("gamma", "500") == 0.0
    assert faults.rate("goldsky", "slow") == 1.0 and faults.slow_ms == 50
    assert faults.finalized_stall is True and faults.retry_after_s == 2.0
    with pytest.raises(ValueError):
        parse_faults("429=2")
    with pytest.raises(ValueError):
        parse_faults("nonsense=0.1")
