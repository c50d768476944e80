"""Logs planted beside the fills: an `Upgraded(address)` of ExchangeV3's proxy, or any log on any address.

ExchangeV3 is an ERC-1967 (UUPS) proxy (docs/upstream.md); planting an upgrade also moves the implementation that
`eth_getStorageAt` answers for its implementation slot from that block on. Planted logs get log indexes from
PLANTED_LOG_INDEX up, above any fill's in their block, and are served by eth_getLogs in the shape of the fills.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from eth_hash.auto import keccak

from simulator.constants import EXCHANGE_ADDRESSES, EXCHANGE_V3

UPGRADED_TOPIC = "0x" + keccak(b"Upgraded(address)").hex()
IMPLEMENTATION_SLOT = int.from_bytes(keccak(b"eip1967.proxy.implementation"), "big") - 1
# The implementation ExchangeV3's proxy points at before any planted upgrade (an invented address).
INITIAL_IMPLEMENTATION = "0x641b40ec000000000000000000000000000e3333"
PLANTED_LOG_INDEX = 0x10000


def word(address: str) -> str:
    """An address as a 32-byte topic or storage word."""
    return "0x" + "0" * 24 + address.lower().removeprefix("0x")


@dataclass(frozen=True)
class PlantedLog:
    block: int
    log_index: int
    address: str  # lowercase
    topics: tuple[str, ...]
    data: str = "0x"


@dataclass
class PlantedLogs:
    logs: list[PlantedLog] = field(default_factory=list)  # in (block, log index) order
    upgrades: list[tuple[int, str]] = field(default_factory=list)  # (block, implementation), in block order

    def plant(self, block: int, address: str, topics: list[str] | tuple[str, ...], data: str = "0x") -> PlantedLog:
        if block < 0 or not address.startswith("0x") or len(address) != 42:
            raise ValueError(f"plant_log: need a block >= 0 and a 0x address (got {block}, {address!r})")
        if not topics or any(not t.startswith("0x") or len(t) != 66 for t in topics) or len(topics) > 4:
            raise ValueError("plant_log: topics must be 1 to 4 hex words of 32 bytes")
        index = PLANTED_LOG_INDEX + sum(1 for planted in self.logs if planted.block == block)
        planted = PlantedLog(block, index, address.lower(), tuple(t.lower() for t in topics), data)
        bisect.insort(self.logs, planted, key=lambda p: (p.block, p.log_index))
        return planted

    def plant_upgrade(self, block: int, implementation: str) -> PlantedLog:
        """ExchangeV3's proxy emits `Upgraded(implementation)` in `block`."""
        planted = self.plant(block, EXCHANGE_ADDRESSES[EXCHANGE_V3], [UPGRADED_TOPIC, word(implementation)])
        bisect.insort(self.upgrades, (block, implementation.lower()))
        return planted

    def between(self, first: int, last: int) -> list[PlantedLog]:
        lo = bisect.bisect_left(self.logs, first, key=lambda p: p.block)
        hi = bisect.bisect_right(self.logs, last, key=lambda p: p.block)
        return self.logs[lo:hi]

    def implementation_at(self, block: int) -> str:
        """ExchangeV3's implementation once `block` is applied."""
        at = bisect.bisect_right(self.upgrades, block, key=lambda u: u[0])
        return self.upgrades[at - 1][1] if at else INITIAL_IMPLEMENTATION
