"""Polymarket Protocol V2 in the world: `version: "v2"` markets, their position ids, and Combo positions.

Position id (docs/upstream.md §4, polymarket-v2-external `docs/position-ids.md`), 256 bits, most significant first:
    [moduleId(8) | baseHash(128) | arity(16) | reserved(64) | resolutionChain(16) | conditionIndex(16) |
     outcomeIndex(8)]
Modules: Binary=1, NegRisk=2, Combinatorial=3; the reserved bits are zero (py-sdk's `is_v2_position_id`).
Here arity = the number of outcomes, outcomeIndex = the outcome's index in `outcomes`, resolutionChain = 0; a
NegRisk event's markets share one baseHash and differ by conditionIndex (their index in the event).

Versions are decided per event (a neg-risk event is one market group). Unlisted markets stay v1, so the only
position ids no Gamma market owns are the Combos'. Draws come from their own random stream: with every share at 0
the world is the one of before (markets only gain the `version` field).
"""

from __future__ import annotations

import random

from simulator.catalogue import CATALOGUE_START_S, COMBO, LATE, UNLISTED, Catalogue, Event, Market

MODULE_BINARY, MODULE_NEG_RISK, MODULE_COMBINATORIAL = 1, 2, 3
# (field, bits), most significant first.
POSITION_ID_LAYOUT = (
    ("module_id", 8),
    ("base_hash", 128),
    ("arity", 16),
    ("reserved", 64),
    ("resolution_chain", 16),
    ("condition_index", 16),
    ("outcome_index", 8),
)
COMBO_MARKETS = 16  # Combo positions (two outcomes each) that trade when combo_share > 0


def encode_position_id(
    module_id: int, base_hash: int, arity: int, condition_index: int, outcome_index: int, resolution_chain: int = 0
) -> int:
    """The 256-bit position id; reserved bits are zero."""
    fields = {
        "module_id": module_id,
        "base_hash": base_hash,
        "arity": arity,
        "reserved": 0,
        "resolution_chain": resolution_chain,
        "condition_index": condition_index,
        "outcome_index": outcome_index,
    }
    value = 0
    for name, bits in POSITION_ID_LAYOUT:
        if not 0 <= fields[name] < 1 << bits:
            raise ValueError(f"position id field {name}={fields[name]} does not fit in {bits} bits")
        value = (value << bits) | fields[name]
    return value


def apply_protocol_v2(
    catalogue: Catalogue, seed: int, v2_share: float, clob_ids_share: float, unversioned_share: float, combos: int
) -> None:
    """Give every market its `version` (and V2 markets their position ids), then append `combos` Combo positions."""
    rng = random.Random(f"protocol-v2:{seed}")
    v2_events = _pick_v2_events(catalogue.events, rng, v2_share)
    for event in catalogue.events:
        base_hash = rng.getrandbits(128)
        for item, index in enumerate(event.market_indexes):
            market = catalogue.markets[index]
            if event.index in v2_events:
                module = MODULE_NEG_RISK if event.neg_risk else MODULE_BINARY
                market.version = "v2"
                market.position_ids = _position_ids(module, base_hash, len(market.outcomes), item)
                market.shows_clob_token_ids = rng.random() < clob_ids_share
            else:
                market.version = None if rng.random() < unversioned_share else "v1"
    for _ in range(combos):
        catalogue.markets.append(_combo_market(rng, len(catalogue.markets)))


def _pick_v2_events(events: list[Event], rng: random.Random, v2_share: float) -> set[int]:
    """Event indexes whose markets are V2: a `v2_share` of them, at least one late one, never an unlisted one,
    and never all (a v1 market must exist to trade before ExchangeV3 starts)."""
    eligible = [e for e in events if e.listing != UNLISTED]
    chosen = {e.index for e in eligible if rng.random() < v2_share}
    late = [e.index for e in eligible if e.listing == LATE]
    if v2_share > 0 and late and not chosen & set(late):
        chosen.add(late[-1])  # a fill whose V2 market is listed later must exist
    if len(chosen) == len(events):
        chosen.discard(events[0].index)
    return chosen


def _position_ids(module_id: int, base_hash: int, arity: int, condition_index: int) -> tuple[str, ...]:
    return tuple(str(encode_position_id(module_id, base_hash, arity, condition_index, i)) for i in range(arity))


def _combo_market(rng: random.Random, index: int) -> Market:
    """A Combo position pair: traded on ExchangeV3 only, owned by no Gamma market (no id, no event)."""
    created_s = float(CATALOGUE_START_S)
    return Market(
        index=index,
        id="",
        event_index=-1,
        question="",
        slug="",
        condition_id="0x" + rng.getrandbits(256).to_bytes(32, "big").hex(),
        question_id="",
        outcomes=("Yes", "No"),
        token_ids=(),
        tick=0.01,
        neg_risk=False,
        listing=COMBO,
        created_s=created_s,
        updated_s=created_s,
        end_s=created_s,
        closed=False,
        price=round(rng.uniform(0.05, 0.6), 2),
        volume=0.0,
        liquidity=0.0,
        fee_bps=0,
        version="v2",
        position_ids=_position_ids(MODULE_COMBINATORIAL, rng.getrandbits(128), 2, 0),
        shows_clob_token_ids=False,
    )
