"""Protocol V2 in the simulated world: position ids laid out as docs/upstream.md §4 says, V2 markets and Combos on
ExchangeV3 only from its start block, shares and determinism per seed, and the truth's trade cells."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulator.catalogue import COMBO, LATE, UNLISTED
from simulator.config import SimConfig
from simulator.constants import CUTOVER_BLOCK, EXCHANGE_ADDRESSES, EXCHANGE_V3, EXCHANGE_V3_START_BLOCK
from simulator.gamma_render import render_market
from simulator.protocol_v2 import encode_position_id
from simulator.truth import truth_fills, truth_summary
from simulator.world import World

V2_CONFIG = dict(markets=200, history_fills=12_000, v2_market_share=0.3, combo_share=0.05)
EXCHANGE_V3_ADDRESS = "0xe3333700ca9d93003f00f0f71f8515005f6c00aa"


def decode(position_id: int) -> dict[str, int]:
    """An independent reading of [moduleId(8) | baseHash(128) | arity(16) | reserved(64) | resolutionChain(16) |
    conditionIndex(16) | outcomeIndex(8)], most significant first."""
    return {
        "module": position_id >> 248,
        "base_hash": (position_id >> 120) & ((1 << 128) - 1),
        "arity": (position_id >> 104) & 0xFFFF,
        "reserved": (position_id >> 40) & ((1 << 64) - 1),
        "resolution_chain": (position_id >> 24) & 0xFFFF,
        "condition": (position_id >> 8) & 0xFFFF,
        "outcome": position_id & 0xFF,
    }


@pytest.fixture(scope="module")
def world() -> World:
    built = World(SimConfig(seed=21, **V2_CONFIG))
    built.start(now_s=1.0)
    return built


def test_position_id_fields_sit_where_the_layout_says() -> None:
    base_hash = (1 << 128) - 3
    value = encode_position_id(2, base_hash, 7, 513, 6, resolution_chain=9)
    assert value < 1 << 256
    assert decode(value) == {
        "module": 2,
        "base_hash": base_hash,
        "arity": 7,
        "reserved": 0,
        "resolution_chain": 9,
        "condition": 513,
        "outcome": 6,
    }
    assert encode_position_id(1, 0, 0, 0, 1) == (1 << 248) | 1 and encode_position_id(3, 0, 0, 0, 0) == 3 << 248
    with pytest.raises(ValueError):
        encode_position_id(1, 1 << 128, 2, 0, 0)
    with pytest.raises(ValueError):
        encode_position_id(1, 0, 2, 0, 256)


def test_v2_markets_carry_position_ids_of_their_module_condition_and_outcome(world: World) -> None:
    v2 = [m for m in world.catalogue.markets if m.version == "v2" and m.listing != COMBO]
    assert 0.15 < len(v2) / world.catalogue.event_market_count() < 0.5
    for market in v2:
        fields = [decode(int(p)) for p in market.position_ids]
        assert [f["outcome"] for f in fields] == [0, 1]
        assert all(f["module"] == (2 if market.neg_risk else 1) and f["reserved"] == 0 for f in fields)
        assert all(f["arity"] == len(market.outcomes) == 2 for f in fields)
        event = world.catalogue.events[market.event_index]
        assert {f["condition"] for f in fields} == {event.market_indexes.index(market.index)}
        assert len({f["base_hash"] for f in fields}) == 1
    neg_risk_events = {m.event_index for m in v2 if m.neg_risk}
    assert neg_risk_events
    for event_index in neg_risk_events:
        members = [m for m in v2 if m.event_index == event_index]
        assert len({decode(int(m.position_ids[0]))["base_hash"] for m in members}) == 1  # one NegRisk group
    assert any(m.listing == LATE for m in v2)
    assert not any(m.version == "v2" for m in world.catalogue.markets if m.listing == UNLISTED)


def test_gamma_json_has_version_native_position_ids_and_sometimes_both_id_fields(world: World) -> None:
    rendered = [render_market(m, world.catalogue) for m in world.catalogue.markets if m.listing != COMBO]
    v2 = [r for r in rendered if r.get("version") == "v2"]
    v1 = [r for r in rendered if r.get("version") != "v2"]
    both = [r for r in v2 if "clobTokenIds" in r]
    assert both and len(both) < len(v2)
    text_ids = [r for r in v2 if isinstance(r["positionIds"], str)]  # the `position_ids_text` shape
    assert text_ids and len(text_ids) < len(v2)
    for row in v2:
        ids = json.loads(row["positionIds"]) if row in text_ids else row["positionIds"]
        assert isinstance(ids, list) and all(isinstance(p, str) and p.isdigit() for p in ids)
        assert len(ids) == len(json.loads(row["outcomes"]))
    for row in both:
        assert not set(json.loads(row["clobTokenIds"])) & set(row["positionIds"])  # `version` must decide
    assert all("positionIds" not in r and isinstance(r["clobTokenIds"], str) for r in v1)
    versions = [r.get("version") for r in v1]
    assert "v1" in versions and None in versions and set(versions) <= {"v1", None}


def test_exchange_v3_settles_v2_markets_and_combos_only_from_its_start_block(world: World) -> None:
    exchange, block = world.col("exchange"), world.col("block")
    market = world.col("token") // 2
    v2_market = np.array([m.version == "v2" for m in world.catalogue.markets])[market]
    v3 = exchange == EXCHANGE_V3
    assert v3.sum() > 0 and np.array_equal(v3, v2_market)
    assert block[v3].min() >= EXCHANGE_V3_START_BLOCK > CUTOVER_BLOCK
    assert set(np.unique(exchange[block >= EXCHANGE_V3_START_BLOCK]).tolist()) == {2, 3, 4}
    combo = np.array([m.listing == COMBO for m in world.catalogue.markets])[market]
    assert 0 < combo.sum() < v3.sum()
    assert np.all(world.col("taker")[v3 & (world.col("taker") < 0)] == -EXCHANGE_V3 - 1)  # taker row = ExchangeV3
    assert EXCHANGE_ADDRESSES[EXCHANGE_V3] == EXCHANGE_V3_ADDRESS


def test_truth_records_family_and_the_trade_cells_of_every_fill(world: World) -> None:
    owner = {t: (m, i) for m in world.catalogue.markets for i, t in enumerate(m.traded_ids)}
    summary, fills = truth_summary(world), truth_fills(world)
    families = {"v1": 0, "clob_v2": 0, "v3": 0}
    for fill in fills:
        families[fill["family"]] += 1
        token = fill["taker_asset_id"] if fill["maker_asset_id"] == "0" else fill["maker_asset_id"]
        market, index = owner[fill["token_id"]]
        assert token == fill["token_id"] and (fill["family"] == "v3") == (fill["exchange"] == EXCHANGE_V3_ADDRESS)
        if market.listing == COMBO:
            assert decode(int(token))["module"] == 3
            expected = ("", "", "", decode(int(token))["outcome"])
        elif market.listing == UNLISTED:
            expected = ("", "", "", -1)
        else:
            assert token in (market.position_ids if market.version == "v2" else market.token_ids)
            expected = (market.id, market.condition_id, market.outcomes[index], index)
        assert (fill["market_id"], fill["condition_id"], fill["outcome"], fill["outcome_index"]) == expected
        assert fill["is_taker_side"] == int(fill["taker"] in EXCHANGE_ADDRESSES)
    assert summary["per_family"] == families and min(families.values()) > 0
    assert summary["combo_count"] == sum(1 for f in fills if f["family"] == "v3" and f["market_id"] == "")
    by_market: dict[str, list[int]] = {}
    for fill in fills:
        if fill["is_taker_side"]:
            usdc = fill["maker_amount"] if fill["maker_asset_id"] == "0" else fill["taker_amount"]
            row = by_market.setdefault(fill["market_id"], [0, 0])
            row[0], row[1] = row[0] + 1, row[1] + usdc
    assert {k: [v["count"], v["usdc_sum"]] for k, v in summary["taker_side_by_market"].items()} == by_market
    assert set(summary["v2_market_ids"]) == {m.id for m in world.catalogue.markets if m.version == "v2" and m.id}
    assert len(summary["combo_position_ids"]) == 2 * sum(1 for m in world.catalogue.markets if m.listing == COMBO)


def test_protocol_v2_worlds_are_deterministic_and_shares_at_zero_change_no_fill() -> None:
    def fingerprint(world: World) -> bytes:
        markets = [render_market(m, world.catalogue) for m in world.catalogue.markets if m.listing != COMBO]
        return (
            b"".join(world.col(n).tobytes() for n in ("token", "exchange", "maker_amount"))
            + json.dumps(markets).encode()
        )

    assert fingerprint(World(SimConfig(seed=4, **V2_CONFIG))) == fingerprint(World(SimConfig(seed=4, **V2_CONFIG)))
    before = {"seed": 4, "markets": 60, "v2_market_share": 0.0, "combo_share": 0.0}  # the world before Protocol V2
    plain, off = World(SimConfig(**before)), World(SimConfig(**before, unversioned_share=0.9))
    assert np.array_equal(plain.col("token"), off.col("token")) and not (plain.col("exchange") == EXCHANGE_V3).any()
    live = [World(SimConfig(seed=4, **V2_CONFIG)) for _ in range(2)]
    for w in live:
        for _ in range(3):
            w.produce_block(rate=500, now_s=1.0)
    assert (
        fingerprint(live[0]) == fingerprint(live[1]) and (live[0].col("exchange")[live[0].history_count :] == 4).any()
    )
    with pytest.raises(ValueError):
        SimConfig(v2_market_share=1.5)
