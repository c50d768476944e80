"""Protocol V2 position ids (docs/upstream.md §4): telling them from CTF token ids, and reading their fields.

Layout (polymarket-v2-external `docs/position-ids.md`), 256 bits, most significant first:
    [moduleId(8) | baseHash(128) | arity(16) | reserved(64) | resolutionChain(16) | conditionIndex(16) |
     outcomeIndex(8)]
Modules: Binary=1, NegRisk=2, Combinatorial=3 (Combos: no single Gamma market owns them).

A CTF token id (v1 and CLOB v2 exchanges) is a keccak hash: 256 bits that look random, so its 64 reserved bits are
all zero with probability 2^-64. Polymarket's py-sdk `is_v2_position_id` tells the two kinds apart by exactly that
test, and so do we; a module id of 0 (no module) is refused as well.
"""

from __future__ import annotations

from typing import NamedTuple

MODULE_BINARY, MODULE_NEG_RISK, MODULE_COMBINATORIAL = 1, 2, 3
MODULE_NAMES = {MODULE_BINARY: "binary", MODULE_NEG_RISK: "neg_risk", MODULE_COMBINATORIAL: "combinatorial"}

# Bit offsets from the least significant end, and widths.
OUTCOME_INDEX_SHIFT, OUTCOME_INDEX_BITS = 0, 8
CONDITION_INDEX_SHIFT, CONDITION_INDEX_BITS = 8, 16
RESOLUTION_CHAIN_SHIFT, RESOLUTION_CHAIN_BITS = 24, 16
RESERVED_SHIFT, RESERVED_BITS = 40, 64
ARITY_SHIFT, ARITY_BITS = 104, 16
BASE_HASH_SHIFT, BASE_HASH_BITS = 120, 128
MODULE_SHIFT, MODULE_BITS = 248, 8


class PositionId(NamedTuple):
    module_id: int
    base_hash: int
    arity: int
    resolution_chain: int
    condition_index: int
    outcome_index: int

    @property
    def module_name(self) -> str:
        return MODULE_NAMES.get(self.module_id, f"module_{self.module_id}")


def _field(value: int, shift: int, bits: int) -> int:
    return (value >> shift) & ((1 << bits) - 1)


def _as_int(token_id: int | str) -> int | None:
    """A decimal id as an int, None when it is not a 256-bit unsigned integer."""
    if isinstance(token_id, str):
        if not token_id.isdigit() or len(token_id) > 78:
            return None
        token_id = int(token_id)
    return token_id if 0 <= token_id < 1 << 256 else None


def is_v2_position_id(token_id: int | str) -> bool:
    """True for a Protocol V2 position id (reserved bits zero, a module set), False for a CTF token id."""
    value = _as_int(token_id)
    return (
        value is not None
        and _field(value, RESERVED_SHIFT, RESERVED_BITS) == 0
        and _field(value, MODULE_SHIFT, MODULE_BITS) != 0
    )


def decode_position_id(token_id: int | str) -> PositionId | None:
    """The fields of a position id, None for anything else (a CTF token id, "0", not a number)."""
    if not is_v2_position_id(token_id):
        return None
    value = int(token_id)
    return PositionId(
        module_id=_field(value, MODULE_SHIFT, MODULE_BITS),
        base_hash=_field(value, BASE_HASH_SHIFT, BASE_HASH_BITS),
        arity=_field(value, ARITY_SHIFT, ARITY_BITS),
        resolution_chain=_field(value, RESOLUTION_CHAIN_SHIFT, RESOLUTION_CHAIN_BITS),
        condition_index=_field(value, CONDITION_INDEX_SHIFT, CONDITION_INDEX_BITS),
        outcome_index=_field(value, OUTCOME_INDEX_SHIFT, OUTCOME_INDEX_BITS),
    )
