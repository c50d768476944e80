"""Ground truth: what the simulator has made visible so far, for checking a pipeline end to end.

Amounts are integers in 6-decimal base units. `sources` is ["goldsky", "chain"] for v1 fills (before the
cutover block) and ["chain"] for v2 fills. `first_visible_at` is the wall time (unix s) the fill first became
servable: server start for history, block production time for live fills. `family` is the exchange family
("v1", "clob_v2", "v3" = ExchangeV3); `token_id`, `market_id`, `condition_id`, `outcome`, `outcome_index` and
`is_taker_side` are the trade cells a correct pipeline derives (docs/CONTRACT.md §4; see `TokenOwners`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import numpy as np
import orjson

from simulator.catalogue import COMBO, LATE, UNLISTED
from simulator.constants import CUTOVER_BLOCK, EXCHANGE_ADDRESSES, EXCHANGE_FAMILIES, EXCHANGE_V3_START_BLOCK
from simulator.world import World


def truth_summary(world: World, stalled: bool = False) -> dict[str, Any]:
    n = world.count
    everything = slice(0, n)
    usdc, tokens = world.usdc_amounts(everything), world.token_amounts(everything)
    taker_side = world.col("taker") < 0
    markets = world.catalogue.markets
    late = [m for m in markets if m.listing == LATE]
    unlisted = [m for m in markets if m.listing == UNLISTED]
    return {
        "seed": world.seed,
        "count": n,
        "history_count": world.history_count,
        "live_count": n - world.history_count,
        "v1_count": world.v1_count,
        "v2_count": n - world.v1_count,
        "per_source": {"goldsky": world.v1_count, "chain": n},
        "per_family": per_family(world),
        "combo_count": int(np.isin(world.col("token") // 2, world.v3_mix.combo_markets).sum()),
        "usdc_sum": int(usdc.sum()),
        "token_sum": int(tokens.sum()),
        "fee_sum": int(world.col("fee").sum()),
        "taker_side_count": int(taker_side.sum()),
        "taker_side_usdc_sum": int(usdc[taker_side].sum()),
        "taker_side_token_sum": int(tokens[taker_side].sum()),
        "taker_side_by_market": taker_side_by_market(world, taker_side, usdc, tokens),
        "cutover_block": CUTOVER_BLOCK,
        "exchange_v3_start_block": EXCHANGE_V3_START_BLOCK,
        "first_block": world.first_block,
        "head_block": world.head_block,
        "finalized_block": world.finalized_block(stalled),
        "last_fill_block": int(world.col("block")[-1]) if n else None,
        "started_at": world.started_at,
        "late_listed_at": world.late_listed_at,
        "late_market_ids": [m.id for m in late],
        "late_token_ids": [t for m in late for t in m.traded_ids],
        "unlisted_market_ids": [m.id for m in unlisted],
        "unlisted_token_ids": [t for m in unlisted for t in m.traded_ids],
        "v2_market_ids": [m.id for m in markets if m.version == "v2" and m.listing != COMBO],
        "combo_position_ids": [t for m in markets if m.listing == COMBO for t in m.traded_ids],
    }


def per_family(world: World) -> dict[str, int]:
    per_exchange = np.bincount(world.col("exchange"), minlength=len(EXCHANGE_ADDRESSES)).tolist()
    return {f: sum(n for n, g in zip(per_exchange, EXCHANGE_FAMILIES, strict=True) if g == f) for f in FAMILIES}


def taker_side_by_market(
    world: World, taker_side: np.ndarray, usdc: np.ndarray, tokens: np.ndarray
) -> dict[str, dict[str, int]]:
    """{expected market_id: {count, usdc_sum, token_sum}} over taker-side rows ('' = unlisted markets and Combos)."""
    owners = world.token_owners
    slots = owners.slots[world.col("token")[taker_side]]
    width = len(owners.slot_market_ids)
    sums = np.zeros((3, width), np.int64)
    np.add.at(sums[0], slots, 1)
    np.add.at(sums[1], slots, usdc[taker_side])
    np.add.at(sums[2], slots, tokens[taker_side])
    return {
        owners.slot_market_ids[slot]: {"count": int(c), "usdc_sum": int(u), "token_sum": int(t)}
        for slot, (c, u, t) in enumerate(sums.T.tolist())
        if c
    }


FILL_FIELDS = (
    "id",
    "tx_hash",
    "order_hash",
    "exchange",
    "block_number",
    "log_index",
    "timestamp",
    "maker",
    "taker",
    "maker_asset_id",
    "taker_asset_id",
    "maker_amount",
    "taker_amount",
    "fee",
    "sources",
    "first_visible_at",
    "family",
    "token_id",
    "market_id",
    "condition_id",
    "outcome",
    "outcome_index",
    "is_taker_side",
)
FAMILIES = ("v1", "clob_v2", "v3")
CHUNK_FILLS = 50_000


def truth_fills(
    world: World, offset: int = 0, limit: int | None = None, fields: tuple[str, ...] = FILL_FIELDS
) -> list[dict[str, Any]]:
    """Per-fill truth in log order, shaped like the normalized order event (docs/CONTRACT.md §3), plus the trade
    cells."""
    unknown = set(fields) - set(FILL_FIELDS)
    if unknown:
        raise ValueError(f"unknown truth fields {sorted(unknown)}")
    end = world.count if limit is None else min(world.count, offset + limit)
    idx = np.arange(min(offset, end), end)
    columns = _fill_columns(world, idx)
    keys = list(fields)
    return [dict(zip(keys, row, strict=True)) for row in zip(*(columns[k]() for k in keys), strict=True)]


def _fill_columns(world: World, idx: np.ndarray) -> dict[str, Callable[[], list[Any]]]:
    """Each truth field of fills `idx`, computed only when asked for."""
    col, owners = world.col, world.token_owners
    assets = cache(lambda: world.asset_ids(idx))

    def tokens() -> list[int]:
        return col("token")[idx].tolist()

    def per_token(values: list[Any]) -> Callable[[], list[Any]]:
        return lambda: [values[t] for t in tokens()]

    return {
        "id": lambda: world.fill_ids(idx),
        "tx_hash": lambda: world.tx_hashes(idx),
        "order_hash": lambda: world.order_hashes(idx),
        "exchange": lambda: [EXCHANGE_ADDRESSES[e] for e in col("exchange")[idx].tolist()],
        "block_number": lambda: col("block")[idx].tolist(),
        "log_index": lambda: col("log_index")[idx].tolist(),
        "timestamp": lambda: world.timestamps(idx).tolist(),
        "maker": lambda: world.address_hex(col("maker")[idx]),
        "taker": lambda: world.address_hex(col("taker")[idx]),
        "maker_asset_id": lambda: assets()[0],
        "taker_asset_id": lambda: assets()[1],
        "maker_amount": lambda: col("maker_amount")[idx].tolist(),
        "taker_amount": lambda: col("taker_amount")[idx].tolist(),
        "fee": lambda: col("fee")[idx].tolist(),
        "sources": lambda: [["goldsky", "chain"] if i < world.v1_count else ["chain"] for i in idx.tolist()],
        "first_visible_at": lambda: col("visible_at")[idx].tolist(),
        "family": lambda: [EXCHANGE_FAMILIES[e] for e in col("exchange")[idx].tolist()],
        "token_id": per_token(world.token_id_list),
        "market_id": per_token(owners.market_ids),
        "condition_id": per_token(owners.condition_ids),
        "outcome": per_token(owners.outcomes),
        "outcome_index": per_token(owners.outcome_indexes),
        "is_taker_side": lambda: (col("taker")[idx] < 0).astype(np.int64).tolist(),
    }


def truth_json_chunks(
    world: World,
    summary: dict[str, Any],
    offset: int = 0,
    limit: int | None = None,
    fields: tuple[str, ...] = FILL_FIELDS,
) -> Iterator[bytes]:
    """The truth document with its fills, as JSON pieces of at most CHUNK_FILLS fills (bounded memory)."""
    end = world.count if limit is None else min(world.count, offset + limit)
    yield orjson.dumps(summary)[:-1] + b',"fills":['
    for start in range(offset, end, CHUNK_FILLS):
        chunk = orjson.dumps(truth_fills(world, start, min(CHUNK_FILLS, end - start), fields))[1:-1]
        yield (b"," if start > offset and chunk else b"") + chunk
    yield b"]}"
