"""Simulator settings: the world's size and shape, the live clock, the RPC limits and the fault knobs.

Everything here is a plain dataclass so tests, the CLI and benchmark scripts build the same object.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Fault kinds that are probabilities in [0, 1] (per request).
RATE_FAULTS = ("429", "500", "timeout", "truncate", "drop", "graphql_error", "rpc_error", "slow")
# Fault knobs that are values, not rates.
VALUE_FAULTS = (
    "slow_ms",
    "latency_ms",
    "retry_after_s",
    "timeout_s",
    "finalized_stall",
    "keyset_off",
    "finalized_tag_off",
    "exchange_v3_logs_off",
    "logs_block_timestamp",
    "logs_bare",
    "logs_checksum",
)
FAULT_SCOPES = ("gamma", "goldsky", "rpc", "data_api")


@dataclass
class Faults:
    """Per-request fault rates and switches, global or scoped to one API (`rpc.429=0.1`).

    Rates: `429` (with Retry-After), `500` (a 5xx), `timeout` (hang `timeout_s`, then drop), `truncate` (cut
    JSON body), `drop` (close the connection mid-body), `graphql_error`, `rpc_error`, `slow` (fraction of
    requests delayed by `slow_ms`; 1.0 when only `slow_ms` is given). `latency_ms` is added to every request.
    `finalized_stall=1` freezes the RPC `finalized` head. Switches for probing a deployment (`pipeline doctor`):
    `keyset_off=1` (Gamma keyset listings answer 503 "keyset pagination is not configured"), `finalized_tag_off=1`
    (the node rejects the `finalized`/`safe` tags), `exchange_v3_logs_off=1` (eth_getLogs returns no ExchangeV3 logs).
    eth_getLogs item shapes real nodes serve (`simulator.logs.LogShape`, combinable): `logs_block_timestamp=1` (each
    log carries `blockTimestamp`), `logs_bare=1` (no `removed`, `blockHash`, `transactionIndex`), `logs_checksum=1`
    (the emitting address EIP-55 mixed-case).
    """

    rates: dict[str, float] = field(default_factory=dict)  # key: "kind" or "scope.kind"
    slow_ms: float = 0.0
    latency_ms: float = 0.0
    retry_after_s: float = 1.0
    timeout_s: float = 10.0
    finalized_stall: bool = False
    keyset_off: bool = False
    finalized_tag_off: bool = False
    exchange_v3_logs_off: bool = False
    logs_block_timestamp: bool = False
    logs_bare: bool = False
    logs_checksum: bool = False

    def rate(self, scope: str, kind: str) -> float:
        scoped = self.rates.get(f"{scope}.{kind}")
        if scoped is not None:
            return scoped
        if kind == "slow" and self.slow_ms > 0 and "slow" not in self.rates:
            return 1.0
        return self.rates.get(kind, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `{"429": 0.1, "rpc.500": 0.2, "slow_ms": 50, ...}`; a global rate of 0 removes it."""
        for key, value in changes.items():
            kind = key.split(".", 1)[-1]
            scope = key.split(".", 1)[0] if "." in key else None
            if scope is not None and scope not in FAULT_SCOPES:
                raise ValueError(f"unknown fault scope {scope!r} in {key!r}")
            if kind in RATE_FAULTS:
                rate = float(value)
                if not 0.0 <= rate <= 1.0:
                    raise ValueError(f"fault rate {key}={value} is not in [0, 1]")
                if rate == 0.0 and scope is None:
                    self.rates.pop(key, None)  # a scoped 0 stays: it overrides a global rate
                else:
                    self.rates[key] = rate
            elif kind in VALUE_FAULTS and scope is None:
                current = getattr(self, kind)
                setattr(self, kind, bool(float(value)) if isinstance(current, bool) else float(value))
            elif key == "rates" and isinstance(value, dict):
                self.update(value)
            else:
                raise ValueError(f"unknown fault {key!r}")


def parse_fault_changes(text: str | None) -> dict[str, str]:
    """`"429=0.1,rpc.500=0.05,slow_ms=50,finalized_stall"` -> {"429": "0.1", ...} (a bare name means 1)."""
    changes: dict[str, str] = {}
    for part in (text or "").split(","):
        key, sep, value = part.strip().partition("=")
        if key:
            changes[key.strip()] = value.strip() if sep else "1"
    return changes


def parse_faults(text: str | None) -> Faults:
    faults = Faults()
    faults.update(parse_fault_changes(text))
    return faults


@dataclass
class SimConfig:
    """How big the world is, how it grows and how the RPC endpoint limits queries."""

    seed: int = 1
    markets: int = 60  # listed markets in events (plus the unlisted ones below)
    history_fills: int = 20_000  # fills that exist before the server starts
    v2_fills: int | None = None  # how many history fills fall at/after the cutover; None = 20 %
    fills_per_block: float = 3.0  # mean fills per non-burst block
    burst_fills: int = 1_500  # fills in one burst block (> 1,000 exercises the sticky cursor)
    bursts_per_part: int = 1  # burst blocks in each of the v1 and v2 parts (when a part is big enough)
    late_markets: int | None = None  # markets listed only `late_listing_delay_s` after start; None = ~4 %
    unlisted_markets: int = 3  # markets whose tokens trade but which never appear on Gamma
    late_listing_delay_s: float = 5.0
    rate: float = 0.0  # live fills per second; 0 = history only
    live_block_interval_s: float = 2.0  # wall seconds between live blocks (shrunk at high rates)
    market_update_interval_s: float = 2.0  # live mode: how often some markets change
    max_block_range: int = 2_000  # eth_getLogs: blocks per query (inclusive span)
    max_logs: int = 10_000  # eth_getLogs: logs per response
    finalized_lag_blocks: int = 16
    # Protocol V2 (docs/upstream.md §4), as today's Polymarket: 0 for either gives the world of before the migration.
    v2_market_share: float = 0.3  # share of events whose markets are `version: "v2"` (they trade on ExchangeV3)
    v2_clob_ids_share: float = 0.5  # share of V2 markets that also carry (other) clobTokenIds
    unversioned_share: float = 0.2  # share of v1 markets without a `version` field
    combo_share: float = 0.05  # share of match groups from EXCHANGE_V3_START_BLOCK on that trade Combo positions
    gamma_offset_cap: int | None = 2_000  # offset listings answer 422 past this offset (None: no cap)
    # How the offset listings (and the lookups on them) treat the `version` key, unverified upstream:
    # "honour" it, "ignore" it (every version), or serve "v1_only" (Gamma's default) whatever is asked.
    gamma_offset_versions: str = "honour"
    gamma_shape_share: float = 0.15  # share of listed markets rendered in one of today's rarer Gamma shapes
    chain_state_file: str | None = None  # live head kept here across restarts (simulator/chain_state.py)
    faults: Faults = field(default_factory=Faults)

    def v2_fill_count(self) -> int:
        if self.v2_fills is None:
            return self.history_fills // 5
        return min(self.v2_fills, self.history_fills)

    def late_market_count(self) -> int:
        if self.late_markets is None:
            return max(1, self.markets // 25)
        return self.late_markets

    def __post_init__(self) -> None:
        if self.gamma_offset_versions not in ("honour", "ignore", "v1_only"):
            raise ValueError(f"gamma_offset_versions={self.gamma_offset_versions!r} is not honour, ignore or v1_only")
        for name in ("v2_market_share", "v2_clob_ids_share", "unversioned_share", "combo_share", "gamma_shape_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is not in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["faults"] = self.faults.to_dict()
        return data
