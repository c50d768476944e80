"""Ground truth: what the simulator has made visible so far, for checking a pipeline end to end.

Amounts are integers in 6-decimal base units. `sources` is ["goldsky", "chain"] for v1 fills (before the
cutover block) and ["chain"] for v2 fills. `first_visible_at` is the wall time (unix s) the fill first became
servable: server start for history, block production time for live fills.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from simulator.catalogue import LATE, UNLISTED
from simulator.constants import CUTOVER_BLOCK, EXCHANGE_ADDRESSES
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
        "usdc_sum": int(usdc.sum()),
        "token_sum": int(tokens.sum()),
        "fee_sum": int(world.col("fee").sum()),
        "taker_side_count": int(taker_side.sum()),
        "taker_side_usdc_sum": int(usdc[taker_side].sum()),
        "taker_side_token_sum": int(tokens[taker_side].sum()),
        "cutover_block": CUTOVER_BLOCK,
        "first_block": world.first_block,
        "head_block": world.head_block,
        "finalized_block": world.finalized_block(stalled),
        "last_fill_block": int(world.col("block")[-1]) if n else None,
        "started_at": world.started_at,
        "late_listed_at": world.late_listed_at,
        "late_market_ids": [m.id for m in late],
        "late_token_ids": [t for m in late for t in m.token_ids],
        "unlisted_market_ids": [m.id for m in unlisted],
        "unlisted_token_ids": [t for m in unlisted for t in m.token_ids],
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
)
CHUNK_FILLS = 50_000


def truth_fills(
    world: World, offset: int = 0, limit: int | None = None, fields: tuple[str, ...] = FILL_FIELDS
) -> list[dict[str, Any]]:
    """Per-fill truth in log order, shaped like the normalized order event (DESIGN §3)."""
    unknown = set(fields) - set(FILL_FIELDS)
    if unknown:
        raise ValueError(f"unknown truth fields {sorted(unknown)}")
    end = world.count if limit is None else min(world.count, offset + limit)
    idx = np.arange(min(offset, end), end)
    ids, tx, order_hashes = world.fill_ids(idx), world.tx_hashes(idx), world.order_hashes(idx)
    makers, takers = world.address_hex(world.col("maker")[idx]), world.address_hex(world.col("taker")[idx])
    maker_assets, taker_assets = world.asset_ids(idx)
    columns = {
        "id": ids,
        "tx_hash": tx,
        "order_hash": order_hashes,
        "exchange": [EXCHANGE_ADDRESSES[e] for e in world.col("exchange")[idx].tolist()],
        "block_number": world.col("block")[idx].tolist(),
        "log_index": world.col("log_index")[idx].tolist(),
        "timestamp": world.timestamps(idx).tolist(),
        "maker": makers,
        "taker": takers,
        "maker_asset_id": maker_assets,
        "taker_asset_id": taker_assets,
        "maker_amount": world.col("maker_amount")[idx].tolist(),
        "taker_amount": world.col("taker_amount")[idx].tolist(),
        "fee": world.col("fee")[idx].tolist(),
        "sources": [["goldsky", "chain"] if i < world.v1_count else ["chain"] for i in idx.tolist()],
        "first_visible_at": world.col("visible_at")[idx].tolist(),
    }
    keys = list(fields)
    return [dict(zip(keys, row, strict=True)) for row in zip(*(columns[k] for k in keys), strict=True)]


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
