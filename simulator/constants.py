"""Chain facts the simulated world is built on (reference/polymarket-apis.md §6)."""

from __future__ import annotations

import numpy as np
from eth_hash.auto import keccak

CHAIN_ID = 137  # Polygon PoS
BLOCK_TIME_S = 2  # Polygon block spacing; block timestamps are exact multiples from the cutover
CUTOVER_BLOCK = 84_902_353  # v2 exchanges' genesis block
CUTOVER_TIMESTAMP = 1_777_334_400  # 2026-04-28T00:00:00Z
# First block of ExchangeV3 (Protocol V2) fills in this world. The real deployment block is UNVERIFIED (reference
# §7.1: after the v2 genesis); it sits just after the cutover so that small worlds hold all three families.
EXCHANGE_V3_START_BLOCK = CUTOVER_BLOCK + 100

# Exchange codes stored per fill (uint8) -> lowercase address.
EXCHANGE_V1 = 0
NEG_RISK_EXCHANGE_V1 = 1
EXCHANGE_V2 = 2
NEG_RISK_EXCHANGE_V2 = 3
EXCHANGE_V3 = 4  # Protocol V2: settles V2 markets (Binary and NegRisk modules) and Combos
EXCHANGE_ADDRESSES = (
    "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e",  # CTF Exchange (v1)
    "0xc5d563a36ae78145c45a50134d48a1215220f80a",  # NegRisk CTF Exchange (v1)
    "0xe111180000d2663c0091e4f400237545b87b996b",  # CTF Exchange V2
    "0xe2222d279d744050d28e00520010520000310f59",  # NegRisk CTF Exchange V2
    "0xe3333700ca9d93003f00f0f71f8515005f6c00aa",  # ExchangeV3 (Protocol V2, docs/upstream.md §4)
)
# Exchange code -> family, as the truth names it.
EXCHANGE_FAMILIES = ("v1", "v1", "clob_v2", "clob_v2", "v3")
EXCHANGE_CODE_BY_ADDRESS = {address: code for code, address in enumerate(EXCHANGE_ADDRESSES)}

V1_SIGNATURE = "OrderFilled(bytes32,address,address,uint256,uint256,uint256,uint256,uint256)"
V2_SIGNATURE = "OrderFilled(bytes32,address,address,uint8,uint256,uint256,uint256,uint256,bytes32,bytes32)"
V1_TOPIC = "0x" + keccak(V1_SIGNATURE.encode()).hex()
V2_TOPIC = "0x" + keccak(V2_SIGNATURE.encode()).hex()

GOLDSKY_PATH = "/goldsky/subgraphs/orderbook-subgraph/0.0.1/gn"
GAMMA_PREFIX = "/gamma"
RPC_PATH = "/rpc"
DATA_API_PREFIX = "/data-api"
MASK64 = (1 << 64) - 1


def block_timestamp(block_number: int) -> int:
    """Unix seconds of a block (2 s spacing anchored at the cutover block)."""
    return CUTOVER_TIMESTAMP + (block_number - CUTOVER_BLOCK) * BLOCK_TIME_S


def block_hash_words(seed: int, blocks: np.ndarray) -> np.ndarray:
    """(n, 32) uint8 pseudo-random block hashes: four splitmix64 outputs of (seed, block); vectorised."""
    base = (np.asarray(blocks, np.uint64) * np.uint64(4)) ^ np.uint64((seed * 0x9E3779B97F4A7C15) & MASK64)
    words = np.empty((len(base), 4), np.uint64)
    with np.errstate(over="ignore"):
        for lane in range(4):
            z = base + np.uint64(lane + 1) * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            words[:, lane] = z ^ (z >> np.uint64(31))
    return words.astype(">u8").view(np.uint8).reshape(len(base), 32)


def block_hash(seed: int, block_number: int) -> str:
    return "0x" + block_hash_words(seed, np.array([block_number])).tobytes().hex()
