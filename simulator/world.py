"""The simulated world: catalogue + wallets + one timeline of fills straddling the v1 → v2 cutover.

History (v1 part ending at block CUTOVER_BLOCK - 1, v2 part starting at CUTOVER_BLOCK, where the CLOB v2 exchanges
and, from EXCHANGE_V3_START_BLOCK, ExchangeV3 settle) is generated at construction; live blocks are appended by
`produce_block`. History blocks keep their fixed dates (2 s apart, anchored at the cutover); a live block carries
the wall-clock second it was produced in, so a live fill is seconds old when it arrives. `resume` continues a
chain a previous run served (simulator/chain_state.py): the next block follows its head, never behind it.
v1 fills are the prefix `[0, v1_count)` of the store; Goldsky serves exactly those, RPC serves everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from simulator.catalogue import COMBO, LATE, LISTED, UNLISTED, Catalogue, Market, generate_catalogue
from simulator.chain_state import ChainState
from simulator.config import SimConfig
from simulator.constants import BLOCK_TIME_S, CUTOVER_BLOCK, EXCHANGE_ADDRESSES, block_timestamp
from simulator.fills import ExchangeV3Mix, FillStore, generate_live_block, generate_part, market_weights
from simulator.gamma_shapes import apply_gamma_shapes
from simulator.planted import PlantedLogs
from simulator.protocol_v2 import COMBO_MARKETS, apply_protocol_v2

TRAILING_EMPTY_BLOCKS = 4  # after the last history fill, beyond the finality lag


def hi64(rows: np.ndarray) -> np.ndarray:
    """First 8 bytes of each 32-byte row as a big-endian uint64 (sorts like the hex string)."""
    return np.ascontiguousarray(rows[:, :8]).view(">u8").ravel().astype(np.uint64)


def hex_rows(rows: np.ndarray) -> list[str]:
    """(n, k) uint8 -> ["0x…"] lowercase hex, one string per row."""
    width = 2 * rows.shape[1]
    text = np.ascontiguousarray(rows).tobytes().hex()
    return ["0x" + text[i : i + width] for i in range(0, len(text), width)]


@dataclass
class TokenOwners:
    """Per token index, what a pipeline should derive for its fills (docs/CONTRACT.md §4): the owning Gamma market (via
    clobTokenIds for v1 markets, positionIds for V2 ones) and the outcome. Unlisted markets are never known
    ('', -1); Combos have no market ('') and the outcome index their position id encodes."""

    market_ids: list[str]
    condition_ids: list[str]
    outcomes: list[str]
    outcome_indexes: list[int]
    slots: np.ndarray  # per token: index into slot_market_ids (tokens of one expected market_id share a slot)
    slot_market_ids: list[str]

    @classmethod
    def of(cls, catalogue: Catalogue) -> TokenOwners:
        market_ids, condition_ids, outcomes, indexes = [], [], [], []
        for market in catalogue.markets:
            known = market.listing not in (UNLISTED, COMBO)
            for i, outcome in enumerate(market.outcomes):
                market_ids.append(market.id if known else "")
                condition_ids.append(market.condition_id if known else "")
                outcomes.append(outcome if known else "")
                indexes.append(i if known or market.listing == COMBO else -1)
        slot_of = {market_id: slot for slot, market_id in enumerate(dict.fromkeys(market_ids))}
        slots = np.array([slot_of[m] for m in market_ids], np.int64)
        return cls(market_ids, condition_ids, outcomes, indexes, slots, list(slot_of))


class World:
    """Everything the three APIs serve, built deterministically from `config.seed`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.seed = config.seed
        late = config.late_market_count()
        self.catalogue: Catalogue = generate_catalogue(
            config.seed, max(config.markets - late, 1), late, config.unlisted_markets
        )
        combos = COMBO_MARKETS if config.combo_share > 0 else 0
        apply_protocol_v2(
            self.catalogue,
            config.seed,
            config.v2_market_share,
            config.v2_clob_ids_share,
            config.unversioned_share,
            combos,
        )
        apply_gamma_shapes(self.catalogue, config.seed, config.gamma_shape_share)
        self.weights = market_weights(self.catalogue, config.seed)
        self.v3_mix = ExchangeV3Mix.of(self.catalogue, self.weights, config.combo_share)
        wallet_count = int(min(20_000, max(200, config.history_fills // 20)))
        wallet_rng = np.random.default_rng([config.seed, 5])
        self.wallets = np.frombuffer(wallet_rng.bytes(20 * wallet_count), np.uint8).reshape(wallet_count, 20)
        self.wallet_hex = hex_rows(self.wallets)
        self.store = FillStore(capacity=config.history_fills + 1024)
        self._generate_history()
        self.started_at: float | None = None
        self.late_listed_at: float | None = None  # set when late markets become visible
        self._finalized_frozen: int | None = None
        self.live_blocks_produced = 0
        self.planted = PlantedLogs()  # logs beside the fills (an ExchangeV3 upgrade), simulator/planted.py

    def _generate_history(self) -> None:
        cfg = self.config
        v2_fills = cfg.v2_fill_count()
        common = dict(
            catalogue=self.catalogue,
            weights=self.weights,
            mix=self.v3_mix,
            wallets=len(self.wallets),
            fills_per_block=cfg.fills_per_block,
            bursts=cfg.bursts_per_part,
            burst_fills=cfg.burst_fills,
        )
        v1 = generate_part(
            cfg.seed,
            "v1",
            n_fills=cfg.history_fills - v2_fills,
            anchor_block=CUTOVER_BLOCK - 1,
            ends_at_anchor=True,
            **common,
        )
        v2 = generate_part(cfg.seed, "v2", n_fills=v2_fills, anchor_block=CUTOVER_BLOCK, ends_at_anchor=False, **common)
        last_block = CUTOVER_BLOCK - 1
        for batch in (v1, v2):
            if batch is not None:
                self.store.append(batch)
                last_block = int(batch.columns["block"][-1])
        self.v1_count = len(v1) if v1 is not None else 0
        self.history_count = self.store.count
        self.first_block = int(self.store.columns["block"][0]) if self.store.count else CUTOVER_BLOCK - 1
        self.head_block = last_block + cfg.finalized_lag_blocks + TRAILING_EMPTY_BLOCKS
        self.history_head_block = self.head_block
        self.live_base_block = self.head_block  # live blocks of this run are live_base_block + 1 ...
        self.resumed_timestamp = block_timestamp(self.head_block)  # of blocks a previous run produced
        self.live_timestamps = np.zeros(1024, np.int64)  # [i]: timestamp of block live_base_block + 1 + i

    def resume(self, state: ChainState) -> None:
        """Continue the chain a previous run served up to `state`: no head, no timestamp behind it."""
        if self.live_blocks_produced or state.head_block <= self.head_block:
            return
        self.head_block = self.live_base_block = state.head_block
        self.resumed_timestamp = max(state.head_timestamp, self.resumed_timestamp)

    @property
    def chain_state(self) -> ChainState:
        return ChainState(self.head_block, self.block_time(self.head_block))

    def block_time(self, block: int) -> int:
        return int(self.block_times(np.array([block], np.int64))[0])

    def block_times(self, blocks: np.ndarray) -> np.ndarray:
        """Unix seconds of each block: history blocks 2 s apart from the cutover, live ones as produced, blocks
        of an earlier run (or past the head) at the newest timestamp known before them."""
        blocks = np.asarray(blocks, np.int64)
        times = block_timestamp(0) + blocks * BLOCK_TIME_S
        live = blocks > self.history_head_block
        if live.any():
            # Index 0: the newest time before this run's first live block (an earlier run's blocks); past the
            # head: the newest time known.
            known = np.concatenate(([self.resumed_timestamp], self.live_timestamps[: self.live_blocks_produced]))
            times[live] = known[np.clip(blocks[live] - self.live_base_block, 0, len(known) - 1)]
        return times

    # --- clock -----------------------------------------------------------------------------------------
    def start(self, now_s: float | None = None) -> None:
        """Mark history as visible now (first-visible time of every history fill)."""
        now_s = time.time() if now_s is None else now_s
        if self.started_at is None:
            self.started_at = now_s
            self.store.columns["visible_at"][: self.history_count] = now_s

    def live_block_interval_s(self, rate: float) -> float:
        """Wall seconds per live block: 2 s, shrunk so a block stays well under the logs-per-response cap."""
        if rate <= 0:
            return self.config.live_block_interval_s
        return min(self.config.live_block_interval_s, self.config.max_logs / (4.0 * rate))

    def produce_block(self, rate: float, now_s: float | None = None) -> int:
        """Append one live block (fills for `rate` fills/s over one block interval); returns its fill count."""
        now_s = time.time() if now_s is None else now_s
        block = self.head_block + 1
        mean = rate * self.live_block_interval_s(rate)
        batch = generate_live_block(
            self.seed, self.catalogue, self.weights, self.v3_mix, len(self.wallets), block, mean
        )
        added = 0
        if batch is not None:
            batch.columns["visible_at"][:] = now_s
            self.store.append(batch)
            added = len(batch)
        if self.live_blocks_produced == len(self.live_timestamps):
            self.live_timestamps = np.resize(self.live_timestamps, 2 * len(self.live_timestamps))
        previous = self.live_timestamps[self.live_blocks_produced - 1] if self.live_blocks_produced else 0
        self.live_timestamps[self.live_blocks_produced] = max(int(now_s), int(previous), self.resumed_timestamp)
        self.head_block = block
        self.live_blocks_produced += 1
        return added

    def list_late_markets(self, now_s: float | None = None) -> None:
        if self.late_listed_at is None:
            self.late_listed_at = time.time() if now_s is None else now_s

    def refresh_listing(self, now_s: float) -> None:
        """List the late markets once `late_listing_delay_s` has passed since start."""
        due_s = None if self.started_at is None else self.started_at + self.config.late_listing_delay_s
        if self.late_listed_at is None and due_s is not None and now_s >= due_s:
            self.late_listed_at = due_s

    def is_listed(self, market: Market, now_s: float) -> bool:
        if market.listing == LISTED:
            return True
        if market.listing == LATE:
            self.refresh_listing(now_s)
            return self.late_listed_at is not None and now_s >= self.late_listed_at
        return False

    def finalized_block(self, stalled: bool) -> int:
        live = max(self.head_block - self.config.finalized_lag_blocks, self.first_block)
        if stalled:
            if self._finalized_frozen is None:
                self._finalized_frozen = live
            return self._finalized_frozen
        self._finalized_frozen = None
        return live

    # --- fill access -----------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self.store.count

    def col(self, name: str) -> np.ndarray:
        return self.store.col(name)

    def timestamps(self, idx: np.ndarray | slice) -> np.ndarray:
        return self.block_times(self.col("block")[idx])

    def fill_ids(self, idx: np.ndarray) -> list[str]:
        tx = self.store.tx_hash[self.col("group")[idx]].tobytes().hex()
        oh = self.col("order_hash")[idx].tobytes().hex()
        return [f"0x{tx[i : i + 64]}_0x{oh[i : i + 64]}" for i in range(0, len(tx), 64)]

    def tx_hashes(self, idx: np.ndarray) -> list[str]:
        return hex_rows(self.store.tx_hash[self.col("group")[idx]])

    def order_hashes(self, idx: np.ndarray) -> list[str]:
        return hex_rows(self.col("order_hash")[idx])

    def address_hex(self, codes: np.ndarray) -> list[str]:
        """Wallet index (>= 0) or exchange (-code - 1) -> lowercase 0x address."""
        wallets, exchanges = self.wallet_hex, EXCHANGE_ADDRESSES
        return [wallets[c] if c >= 0 else exchanges[-c - 1] for c in codes.tolist()]

    def asset_ids(self, idx: np.ndarray) -> tuple[list[str], list[str]]:
        """(makerAssetId, takerAssetId) decimal strings; "0" is USDC."""
        token_ids = self.token_id_list
        tokens = [token_ids[t] for t in self.col("token")[idx].tolist()]
        buys = self.col("maker_buys")[idx].tolist()
        makers = ["0" if b else t for b, t in zip(buys, tokens, strict=True)]
        takers = [t if b else "0" for b, t in zip(buys, tokens, strict=True)]
        return makers, takers

    @cached_property
    def token_id_list(self) -> list[str]:
        return [self.catalogue.token_id(i) for i in range(self.catalogue.token_count())]

    @cached_property
    def token_owners(self) -> TokenOwners:
        return TokenOwners.of(self.catalogue)

    # --- Goldsky orderings (v1 prefix only; computed once) ----------------------------------------------
    @cached_property
    def goldsky_ts_order(self) -> np.ndarray:
        """v1 fill indexes sorted by (timestamp, id): graph-node breaks orderBy ties on id."""
        block_g = self.col("block")[self._v1_group_starts]
        return self._order_by_groups(np.lexsort((self._v1_tx_keys, block_g)))

    @cached_property
    def goldsky_id_order(self) -> np.ndarray:
        """v1 fill indexes sorted by id (tx hash, then order hash)."""
        return self._order_by_groups(np.argsort(self._v1_tx_keys, kind="stable"))

    @cached_property
    def _v1_group_starts(self) -> np.ndarray:
        groups = self.col("group")[: self.v1_count]
        return np.searchsorted(groups, np.arange(int(groups[-1]) + 1 if len(groups) else 0))

    @cached_property
    def _v1_tx_keys(self) -> np.ndarray:
        keys = hi64(self.store.tx_hash[: len(self._v1_group_starts)])
        if len(keys) > 1 and not np.all(np.diff(np.sort(keys)) > 0):
            raise RuntimeError(f"seed {self.seed}: 64-bit tx hash prefix collision; pick another seed")
        return keys

    def _order_by_groups(self, group_order: np.ndarray) -> np.ndarray:
        """Fill order given an order of groups; within a group, fills sort by order hash."""
        n = self.v1_count
        rank = np.empty(len(group_order), np.int64)
        rank[group_order] = np.arange(len(group_order))
        by_hash = np.argsort(hi64(self.col("order_hash")[:n]), kind="stable")
        keys = hi64(self.col("order_hash")[:n])[by_hash]
        if n > 1 and not np.all(np.diff(keys) > 0):
            raise RuntimeError(f"seed {self.seed}: 64-bit order hash prefix collision; pick another seed")
        groups = self.col("group")[:n][by_hash]
        return by_hash[np.argsort(rank[groups], kind="stable")].astype(np.int64)

    # --- amounts -----------------------------------------------------------------------------------------
    def usdc_amounts(self, idx: np.ndarray | slice) -> np.ndarray:
        buys = self.col("maker_buys")[idx]
        return np.where(buys, self.col("maker_amount")[idx], self.col("taker_amount")[idx])

    def token_amounts(self, idx: np.ndarray | slice) -> np.ndarray:
        buys = self.col("maker_buys")[idx]
        return np.where(buys, self.col("taker_amount")[idx], self.col("maker_amount")[idx])
