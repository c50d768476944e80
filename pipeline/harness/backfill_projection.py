"""How long a backfill of the v1 history takes: at the bench's end-to-end rate, and at what the sources allow.

The pipeline is one bound, the sources the other; their limits are the repository's docs/upstream.md:
- Goldsky (§2): 100 queries a second per IP, at most 1,000 fills a query (`first` ≤ 1000).
- the Polygon RPC (§5): `eth_getLogs` over at most 10,000 blocks a call (QuickNode's paid plans), at most 10,000
  results a call (`-32005`, the common cap). No provider's request rate is published there, so the rate is the chain
  ingester's own budget (CHAIN_RATE_LIMIT_PER_S) and the figure scales with it. A reply without `blockTimestamp`
  also costs the block timestamps: batched eth_getBlockByNumber POSTs (CHAIN_BLOCK_BATCH_SIZE blocks each) under the
  same budget, one per batch of the call's blocks that hold a fill.
- the history (§4): 1,201,580,990 v1 fills from the CTF Exchange's first block to the CLOB v2 genesis, so about
  23.4 fills a block on average (more late in the history, when the results cap binds harder still).
"""

from __future__ import annotations

import math
from typing import Any

from ingesters.chain_ingester import ChainSettings

HISTORY_FILLS = 1_200_000_000  # the v1 history, rounded (docs/upstream.md §4: 1,201,580,990)
V1_FIRST_BLOCK = 33_605_403  # the CTF Exchange's start block (docs/upstream.md §4)
V2_GENESIS_BLOCK = 84_902_353  # CTFExchangeV2's genesis: v1 fills stop about here (docs/upstream.md §4)
GOLDSKY_QUERIES_PER_S = 100  # per IP (docs/upstream.md §2)
GOLDSKY_FILLS_PER_QUERY = 1000
RPC_SPAN_BLOCKS = 10_000  # eth_getLogs range of a paid plan (docs/upstream.md §5)
RPC_RESULTS_CAP = 10_000  # `query returned more than 10000 results` (docs/upstream.md §5)
RPC_REQUESTS_PER_S = ChainSettings.model_fields["rate_limit_per_s"].default
BLOCK_BATCH_SIZE = ChainSettings.model_fields["block_batch_size"].default


def hours(fills: int, fills_per_s: float) -> float:
    return fills / fills_per_s / 3600 if fills_per_s > 0 else math.inf


def rpc_fills_per_s(
    requests_per_s: float,
    *,
    span_blocks: int = RPC_SPAN_BLOCKS,
    results_cap: int = RPC_RESULTS_CAP,
    fills_per_block: float,
    block_batch_size: int = BLOCK_BATCH_SIZE,
    timestamps_in_reply: bool = False,
) -> float:
    """Fills a second the RPC serves at `requests_per_s`: each eth_getLogs call returns the fills of `span_blocks`
    blocks, at most `results_cap` of them (past the cap, the ingester halves its span until a call passes), plus,
    without `timestamps_in_reply`, one POST per `block_batch_size` of the call's blocks that hold a fill."""
    fills_per_call = min(results_cap, span_blocks * fills_per_block)
    blocks_with_fills = min(fills_per_call / fills_per_block, fills_per_call)
    requests = 1 if timestamps_in_reply else 1 + math.ceil(blocks_with_fills / block_batch_size)
    return requests_per_s * fills_per_call / requests


def project(measured_fills_per_s: float, fills: int = HISTORY_FILLS) -> dict[str, Any]:
    """The backfill's duration at the measured end-to-end rate, and at each source's limit (module docstring)."""
    fills_per_block = fills / (V2_GENESIS_BLOCK - V1_FIRST_BLOCK)
    goldsky = GOLDSKY_QUERIES_PER_S * GOLDSKY_FILLS_PER_QUERY
    rpc = rpc_fills_per_s(RPC_REQUESTS_PER_S, fills_per_block=fills_per_block)
    rpc_stamped = rpc_fills_per_s(RPC_REQUESTS_PER_S, fills_per_block=fills_per_block, timestamps_in_reply=True)
    return {
        "fills": fills,
        "measured": {"fills_per_s": round(measured_fills_per_s), "hours": round(hours(fills, measured_fills_per_s), 1)},
        "goldsky": {
            "fills_per_s": goldsky,
            "hours": round(hours(fills, goldsky), 1),
            "basis": f"{GOLDSKY_QUERIES_PER_S} queries/s per IP × {GOLDSKY_FILLS_PER_QUERY:,} fills a query",
        },
        "rpc": {
            "fills_per_s": round(rpc),
            "hours": round(hours(fills, rpc), 1),
            "fills_per_s_with_block_timestamps": round(rpc_stamped),
            "hours_with_block_timestamps": round(hours(fills, rpc_stamped), 1),
            "basis": f"{RPC_REQUESTS_PER_S:g} requests/s (CHAIN_RATE_LIMIT_PER_S: no published provider rate), "
            f"≤ {RPC_SPAN_BLOCKS:,} blocks and ≤ {RPC_RESULTS_CAP:,} results a call, {fills_per_block:.1f} fills "
            f"a block, block timestamps in POSTs of {BLOCK_BATCH_SIZE}",
        },
    }


def describe(projection: dict[str, Any]) -> str:
    """The measured duration, then the most each source allows (the report's and stdout's line)."""
    measured, goldsky, rpc = projection["measured"], projection["goldsky"], projection["rpc"]
    return (
        f"{measured['hours']:,} h at the measured {measured['fills_per_s']:,} fills/s; the sources allow at most "
        f"Goldsky {goldsky['fills_per_s']:,} fills/s, {goldsky['hours']:,} h ({goldsky['basis']}), the RPC "
        f"{rpc['fills_per_s']:,} fills/s, {rpc['hours']:,} h ({rpc['fills_per_s_with_block_timestamps']:,} fills/s, "
        f"{rpc['hours_with_block_timestamps']:,} h where its replies carry blockTimestamp; {rpc['basis']})"
    )
