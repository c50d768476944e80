"""Columnar order fills and their seeded, vectorised generation as real match groups.

A match group is one transaction: 1..8 maker `OrderFilled` rows then one taker row whose `taker` is the
exchange contract (Trading.sol `matchOrders`), all sharing tx hash, block and timestamp. Amounts are
6-decimal integers; prices sit on the market's tick grid. Fills are stored in log order (block, log_index);
column `taker` < 0 means "the exchange": code = -taker - 1. V2 markets and Combos settle on ExchangeV3 from
EXCHANGE_V3_START_BLOCK on (`ExchangeV3Mix`); the other markets on the v1 exchanges, then the CLOB v2 ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.catalogue import COMBO, LATE, UNLISTED, Catalogue
from simulator.constants import CUTOVER_BLOCK, EXCHANGE_V3, EXCHANGE_V3_START_BLOCK

COMP_BUY, COMP_SELL, MINT, MERGE = 0, 1, 2, 3  # taker BUY vs maker SELL same token, ...
MATCH_TYPE_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
MAX_MAKERS = 8
SHARE_UNIT = 10_000  # shares are multiples of 0.01 token (10,000 base units), so USDC legs stay integral
MIX_STREAM = 9  # seed-sequence key of the ExchangeV3 draws, apart from the fills' own stream

FILL_COLUMNS: dict[str, tuple[type, tuple[int, ...]]] = {
    "block": (np.int64, ()),
    "log_index": (np.int32, ()),
    "tx_index": (np.int32, ()),
    "group": (np.int64, ()),
    "maker": (np.int32, ()),
    "taker": (np.int32, ()),
    "exchange": (np.uint8, ()),
    "token": (np.int32, ()),
    "maker_buys": (np.bool_, ()),
    "maker_amount": (np.int64, ()),
    "taker_amount": (np.int64, ()),
    "fee": (np.int64, ()),
    "order_hash": (np.uint8, (32,)),
    "visible_at": (np.float64, ()),
}


@dataclass
class Batch:
    """Fills of consecutive blocks plus their groups' tx hashes (group ids local to the batch)."""

    columns: dict[str, np.ndarray]
    tx_hash: np.ndarray  # (groups, 32) uint8

    def __len__(self) -> int:
        return len(self.columns["block"])


class FillStore:
    """Append-only columns with capacity doubling; `count` is published last so readers see whole blocks."""

    def __init__(self, capacity: int = 1024) -> None:
        capacity = max(capacity, 16)
        self.columns = {name: np.zeros((capacity, *shape), dtype) for name, (dtype, shape) in FILL_COLUMNS.items()}
        self.tx_hash = np.zeros((max(capacity // 2, 16), 32), np.uint8)
        self.count = 0
        self.group_count = 0

    def append(self, batch: Batch) -> None:
        n, groups = len(batch), len(batch.tx_hash)
        self._reserve(self.count + n, self.group_count + groups)
        start = self.count
        for name, values in batch.columns.items():
            self.columns[name][start : start + n] = values
        self.columns["group"][start : start + n] += self.group_count
        self.tx_hash[self.group_count : self.group_count + groups] = batch.tx_hash
        self.group_count += groups
        self.count = start + n

    def _reserve(self, fills: int, groups: int) -> None:
        if fills > len(self.columns["block"]):
            size = max(fills, 2 * len(self.columns["block"]))
            for name, array in self.columns.items():
                grown = np.zeros((size, *array.shape[1:]), array.dtype)
                grown[: self.count] = array[: self.count]
                self.columns[name] = grown
        if groups > len(self.tx_hash):
            grown = np.zeros((max(groups, 2 * len(self.tx_hash)), 32), np.uint8)
            grown[: self.group_count] = self.tx_hash[: self.group_count]
            self.tx_hash = grown

    def col(self, name: str) -> np.ndarray:
        return self.columns[name][: self.count]


@dataclass(frozen=True)
class ExchangeV3Mix:
    """Which groups settle on ExchangeV3: those of V2 markets (only from EXCHANGE_V3_START_BLOCK on; earlier groups
    that drew one trade a v1 market instead) and a `combo_share` of the groups from that block on (Combos)."""

    v3_market: np.ndarray  # bool per catalogue market: settles on ExchangeV3
    v1_weights: np.ndarray  # activity over the markets that trade before ExchangeV3 (V2 markets weigh 0)
    combo_markets: np.ndarray  # catalogue indexes of the Combo positions
    combo_share: float

    @classmethod
    def of(cls, catalogue: Catalogue, weights: np.ndarray, combo_share: float) -> ExchangeV3Mix:
        v3_market = np.array([m.version == "v2" for m in catalogue.markets], bool)
        v1_weights = np.where(v3_market[: len(weights)], 0.0, weights)
        combos = np.array([m.index for m in catalogue.markets if m.listing == COMBO], np.int64)
        return cls(v3_market, v1_weights / v1_weights.sum(), combos, combo_share if len(combos) else 0.0)

    def settle(self, rng: np.random.Generator, market: np.ndarray, block: np.ndarray) -> np.ndarray:
        """The market of each group once ExchangeV3's start block and the Combo share are applied."""
        before_v3 = block < EXCHANGE_V3_START_BLOCK
        early = before_v3 & self.v3_market[market]
        if early.any():
            market = market.copy()
            market[early] = rng.choice(len(self.v1_weights), size=int(early.sum()), p=self.v1_weights)
        if self.combo_share > 0:
            combo = ~before_v3 & (rng.random(len(market)) < self.combo_share)
            market = np.where(combo, rng.choice(self.combo_markets, size=len(market)), market)
        return market


def market_weights(catalogue: Catalogue, seed: int) -> np.ndarray:
    """Zipf-like activity per market of an event (not the Combos); late and unlisted markets trade too (so fills
    precede their listing)."""
    rng = np.random.default_rng([seed, 7])
    count = catalogue.event_market_count()
    weights = 1.0 / (rng.permutation(count) + 1.0) ** 0.8
    boost = float(np.median(weights))
    for market in catalogue.markets[:count]:
        if market.listing in (LATE, UNLISTED):
            weights[market.index] = max(weights[market.index], boost)
    return weights / weights.sum()


def _group_sizes(rng: np.random.Generator, n_fills: int) -> np.ndarray:
    """Fills per match group (makers + 1 taker row), summing exactly to n_fills (each >= 2)."""
    if n_fills < 2:
        return np.zeros(0, np.int64)
    makers = np.minimum(rng.geometric(0.55, size=n_fills // 2 + 8), MAX_MAKERS)
    sizes = makers + 1
    cum = np.cumsum(sizes)
    k = int(np.searchsorted(cum, n_fills))
    while k >= len(sizes):  # extremely unlikely; pad with 2-fill groups
        sizes = np.concatenate([sizes, np.full(n_fills // 2 + 1, 2)])
        cum = np.cumsum(sizes)
        k = int(np.searchsorted(cum, n_fills))
    sizes = sizes[: k + 1].copy()
    sizes[k] = n_fills - (int(cum[k - 1]) if k else 0)
    if sizes[k] == 1:  # a lone taker row can't exist: give it to the previous group
        sizes = sizes[:k]
        sizes[-1] += 1
    return sizes.astype(np.int64)


def _block_offsets(
    rng: np.random.Generator, sizes: np.ndarray, fills_per_block: float, bursts: int, burst_fills: int
) -> np.ndarray:
    """Block offset (0-based within the part) of each group; burst blocks hold >= burst_fills fills."""
    n_fills = int(sizes.sum())
    est_blocks = int(n_fills / fills_per_block * 1.3) + 16
    targets = rng.poisson(fills_per_block, size=est_blocks).astype(np.int64)
    room = n_fills - bursts * (burst_fills + 2 * MAX_MAKERS)  # fills left outside the burst blocks
    if bursts and room >= 0:
        cum_before = np.cumsum(targets)
        last_block = max(int(np.searchsorted(cum_before, room)), bursts)  # bursts fit before the end
        for offset in rng.choice(last_block, size=bursts, replace=False):
            targets[offset] = burst_fills + MAX_MAKERS
    cum_targets = np.cumsum(targets)
    while cum_targets[-1] < n_fills:
        cum_targets = np.concatenate([cum_targets, cum_targets[-1] + np.cumsum(rng.poisson(fills_per_block, 64) + 1)])
    starts = np.cumsum(sizes) - sizes  # fill offset where each group starts
    return np.searchsorted(cum_targets, starts, side="right").astype(np.int64)


def generate_blocks(
    rng: np.random.Generator,
    catalogue: Catalogue,
    weights: np.ndarray,
    mix: ExchangeV3Mix,
    mix_rng: np.random.Generator,
    wallets: int,
    group_sizes: np.ndarray,
    block_offsets: np.ndarray,
    first_block: int,
) -> Batch:
    """Materialise groups (sizes, block offsets) into fill columns in log order (ExchangeV3 draws from `mix_rng`)."""
    groups = len(group_sizes)
    n = int(group_sizes.sum())
    block = first_block + block_offsets
    market = mix.settle(mix_rng, rng.choice(len(weights), size=groups, p=weights).astype(np.int64), block)
    outcome = rng.integers(0, 2, size=groups)
    match_type = rng.choice(4, size=groups, p=MATCH_TYPE_WEIGHTS)
    ticks = np.array([1000 if m.tick == 0.001 else 100 for m in catalogue.markets], np.int64)[market]
    base = np.array([m.price for m in catalogue.markets])[market]
    base = np.where(outcome == 0, base, 1.0 - base)
    price_k = np.clip(np.rint(base * ticks) + rng.integers(-3, 4, size=groups), 1, ticks - 1).astype(np.int64)
    fee_bps = np.array([m.fee_bps for m in catalogue.markets], np.int64)[market]
    neg_risk = np.array([m.neg_risk for m in catalogue.markets], bool)[market]
    taker_wallet = rng.integers(0, wallets, size=groups).astype(np.int32)
    version2 = block >= CUTOVER_BLOCK
    clob_exchange = neg_risk.astype(np.uint8) + 2 * version2.astype(np.uint8)
    exchange = np.where(mix.v3_market[market], EXCHANGE_V3, clob_exchange).astype(np.uint8)

    g = np.repeat(np.arange(groups), group_sizes)  # group of each fill
    starts = np.cumsum(group_sizes) - group_sizes
    is_taker = np.zeros(n, bool)
    is_taker[starts + group_sizes - 1] = True
    shares = rng.integers(500, 200_000, size=n).astype(np.int64) * SHARE_UNIT
    shares[is_taker] = 0
    totals = np.add.reduceat(shares, starts)  # taker row takes the makers' total
    shares[is_taker] = totals

    mt, k, t = match_type[g], price_k[g], ticks[g]
    complementary = (mt == COMP_BUY) | (mt == COMP_SELL)
    taker_buys = (mt == COMP_BUY) | (mt == MINT)
    maker_side_buys = (mt == COMP_SELL) | (mt == MINT)
    buys = np.where(is_taker, taker_buys, maker_side_buys)
    row_k = np.where(is_taker | complementary, k, t - k)
    token = 2 * market[g] + np.where(is_taker | complementary, outcome[g], 1 - outcome[g])
    usdc = shares * row_k // t
    maker_amount = np.where(buys, usdc, shares)
    taker_amount = np.where(buys, shares, usdc)
    p = row_k / t
    fee_float = fee_bps[g] / 10_000 * np.minimum(p, 1 - p) * np.where(buys, shares / p, shares)
    fee = np.where(is_taker, np.floor(fee_float), 0).astype(np.int64)

    maker = np.where(is_taker, taker_wallet[g], rng.integers(0, wallets, size=n)).astype(np.int32)
    taker = np.where(is_taker, -(exchange[g].astype(np.int32)) - 1, taker_wallet[g]).astype(np.int32)
    fill_block = block[g]
    tx_index, log_index = _positions_in_block(block, group_sizes, g, starts)
    columns = {
        "block": fill_block,
        "log_index": log_index,
        "tx_index": tx_index[g],
        "group": g.astype(np.int64),
        "maker": maker,
        "taker": taker,
        "exchange": exchange[g],
        "token": token.astype(np.int32),
        "maker_buys": buys,
        "maker_amount": maker_amount,
        "taker_amount": taker_amount,
        "fee": fee,
        "order_hash": np.frombuffer(rng.bytes(32 * n), np.uint8).reshape(n, 32),
        "visible_at": np.zeros(n, np.float64),
    }
    return Batch(columns=columns, tx_hash=np.frombuffer(rng.bytes(32 * groups), np.uint8).reshape(groups, 32))


def _positions_in_block(
    block: np.ndarray, sizes: np.ndarray, g: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Transaction index of each group and log index of each fill (2 transfer logs before each fill and an
    OrdersMatched log after each group, so OrderFilled log indexes are not contiguous)."""
    groups = len(sizes)
    new_block = np.ones(groups, bool)
    new_block[1:] = block[1:] != block[:-1]
    first_group = np.maximum.accumulate(np.where(new_block, np.arange(groups), 0))
    tx_index = (np.arange(groups) - first_group).astype(np.int32)
    fill_pos = np.arange(len(g)) - starts[first_group][g]  # fill position within its block
    log_index = (2 + 3 * fill_pos + tx_index[g]).astype(np.int32)
    return tx_index, log_index


def generate_part(
    seed: int,
    part: str,
    catalogue: Catalogue,
    weights: np.ndarray,
    mix: ExchangeV3Mix,
    wallets: int,
    n_fills: int,
    fills_per_block: float,
    bursts: int,
    burst_fills: int,
    anchor_block: int,
    ends_at_anchor: bool,
) -> Batch | None:
    """A history part: `ends_at_anchor` puts its last block at anchor_block, else it starts there."""
    key = 1 if part == "v1" else 2
    rng = np.random.default_rng([seed, key])
    sizes = _group_sizes(rng, n_fills)
    if not len(sizes):
        return None
    offsets = _block_offsets(rng, sizes, fills_per_block, bursts, burst_fills)
    first_block = anchor_block - int(offsets[-1]) if ends_at_anchor else anchor_block
    mix_rng = np.random.default_rng([seed, key, MIX_STREAM])
    return generate_blocks(rng, catalogue, weights, mix, mix_rng, wallets, sizes, offsets, first_block)


def generate_live_block(
    seed: int,
    catalogue: Catalogue,
    weights: np.ndarray,
    mix: ExchangeV3Mix,
    wallets: int,
    block: int,
    mean_fills: float,
) -> Batch | None:
    """One live block's fills, a pure function of (seed, block, mean_fills)."""
    rng = np.random.default_rng([seed, 3, block])
    n_fills = int(rng.poisson(mean_fills)) if mean_fills > 0 else 0
    sizes = _group_sizes(rng, n_fills)
    if not len(sizes):
        return None
    mix_rng = np.random.default_rng([seed, 3, block, MIX_STREAM])
    offsets = np.zeros(len(sizes), np.int64)
    return generate_blocks(rng, catalogue, weights, mix, mix_rng, wallets, sizes, offsets, block)
