"""Polymarket's exchange contracts on Polygon: the one list every reader of fills uses (docs/upstream.md §4).

Three families settle fills today:
- `v1`: CTF Exchange and NegRisk CTF Exchange (to 2026-04-28), `tokenId`s are CTF token ids (Gamma `clobTokenIds`);
- `clob_v2`: CTFExchangeV2 and NegRiskCtfExchangeV2 (from 2026-04-28), CTF token ids too;
- `v3`: Protocol V2's ExchangeV3, whose `tokenId` is a PositionManager position id (Gamma `positionIds` of a
  `version: "v2"` market, or a Combo position that no market owns). Same `OrderFilled` ABI and topic as `clob_v2`.

The chain ingester's log filter, the decoder (the ABI of the log's family), `trades.is_taker_side` and the docs all
read `EXCHANGES`. A fill whose `taker` is one of these is the taker order's own row of a match: summing volume over
those rows only counts every match once. Addresses are lowercase, as nodes return them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from eth_hash.auto import keccak

Family = Literal["v1", "clob_v2", "v3"]


@dataclass(frozen=True, slots=True)
class OrderFilledAbi:
    """An `OrderFilled` event: the canonical signature (its keccak is topic0) and the types of its data words."""

    signature: str
    data_types: tuple[str, ...]
    # computed once: the chain decoder compares it for every log, and a keccak per log was half its CPU
    topic: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "topic", "0x" + keccak(self.signature.encode()).hex())


# OrderFilled(bytes32 indexed orderHash, address indexed maker, address indexed taker, uint256 makerAssetId,
#             uint256 takerAssetId, uint256 makerAmountFilled, uint256 takerAmountFilled, uint256 fee)
V1_ABI = OrderFilledAbi(
    "OrderFilled(bytes32,address,address,uint256,uint256,uint256,uint256,uint256)", ("uint256",) * 5
)
# OrderFilled(bytes32 indexed orderHash, address indexed maker, address indexed taker, uint8 side, uint256 tokenId,
#             uint256 makerAmountFilled, uint256 takerAmountFilled, uint256 fee, bytes32 builder, bytes32 metadata)
V2_ABI = OrderFilledAbi(
    "OrderFilled(bytes32,address,address,uint8,uint256,uint256,uint256,uint256,bytes32,bytes32)",
    ("uint8", "uint256", "uint256", "uint256", "uint256", "bytes32", "bytes32"),
)


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    address: str  # lowercase
    family: Family
    abi: OrderFilledAbi


EXCHANGES = (
    Exchange("CTF Exchange", "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e", "v1", V1_ABI),
    Exchange("NegRisk CTF Exchange", "0xc5d563a36ae78145c45a50134d48a1215220f80a", "v1", V1_ABI),
    Exchange("CTFExchangeV2", "0xe111180000d2663c0091e4f400237545b87b996b", "clob_v2", V2_ABI),
    Exchange("NegRiskCtfExchangeV2", "0xe2222d279d744050d28e00520010520000310f59", "clob_v2", V2_ABI),
    Exchange("ExchangeV3", "0xe3333700ca9d93003f00f0f71f8515005f6c00aa", "v3", V2_ABI),
)
BY_ADDRESS = {exchange.address: exchange for exchange in EXCHANGES}
ALL_EXCHANGES = frozenset(BY_ADDRESS)
TOPICS = tuple(dict.fromkeys(exchange.abi.topic for exchange in EXCHANGES))


def addresses(family: Family) -> tuple[str, ...]:
    return tuple(exchange.address for exchange in EXCHANGES if exchange.family == family)


CTF_EXCHANGE_V1, NEG_RISK_CTF_EXCHANGE_V1 = V1_EXCHANGES = addresses("v1")
CTF_EXCHANGE_V2, NEG_RISK_CTF_EXCHANGE_V2 = V2_EXCHANGES = addresses("clob_v2")
(EXCHANGE_V3,) = V3_EXCHANGES = addresses("v3")

# First block of the CLOB v2 exchanges (2026-04-28); the Goldsky subgraph has no fills after it. ExchangeV3 was
# deployed later (its block is UNVERIFIED, docs/upstream.md §4), so scanning from here covers all three families.
V2_GENESIS_BLOCK = 84_902_353

# ExchangeV3 is an upgradeable ERC-1967 (UUPS) proxy whose implementation has already changed once, and an upgrade
# can change its events without an address change (docs/upstream.md). `Upgraded(address indexed implementation)`
# is the proxy's own event; the implementation's address is also in the ERC-1967 storage slot below
# (keccak256("eip1967.proxy.implementation") - 1).
UPGRADED_TOPIC = "0x" + keccak(b"Upgraded(address)").hex()
IMPLEMENTATION_SLOT = hex(int.from_bytes(keccak(b"eip1967.proxy.implementation"), "big") - 1)
# What the chain ingester asks eth_getLogs for: the fills, and in the same call an upgrade of any exchange.
WATCHED_TOPICS = (*TOPICS, UPGRADED_TOPIC)
# Events the exchanges emit beside the fills that the pipeline knows and does not need (`doctor` names them; a
# topic0 in none of these tables from an exchange's address may be an event an upgrade added).
KNOWN_UNDECODED_EVENTS = {
    "0x" + keccak(signature.encode()).hex(): signature
    for signature in (
        "OrdersMatched(bytes32,address,uint256,uint256,uint256,uint256)",  # v1: one per match
        "OrdersMatched(bytes32,address,uint8,uint256,uint256,uint256)",  # CLOB v2 and ExchangeV3
        "FeeCharged(address,uint256,uint256)",  # v1
        "FeeCharged(address,uint256)",  # CLOB v2 and ExchangeV3: the batch fee transfer
    )
}
