"""Position ids built here by hand, field by field, against common.position_ids (docs/upstream.md §4)."""

from __future__ import annotations

import random

import pytest
from eth_hash.auto import keccak

from common.position_ids import MODULE_COMBINATORIAL, PositionId, decode_position_id, is_v2_position_id

# (name, bits) most significant first, as polymarket-v2-external docs/position-ids.md draws it
LAYOUT = (("module", 8), ("base_hash", 128), ("arity", 16), ("reserved", 64), ("resolution_chain", 16),
          ("condition_index", 16), ("outcome_index", 8))  # fmt: skip


def build(**fields: int) -> int:
    value = 0
    for name, bits in LAYOUT:
        value = (value << bits) | fields.get(name, 0)
    return value


BASE = 0x0123456789ABCDEF_FEDCBA9876543210


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"module": 1, "base_hash": BASE, "arity": 2, "outcome_index": 1}, PositionId(1, BASE, 2, 0, 0, 1)),
        ({"module": 2, "base_hash": BASE, "arity": 2, "condition_index": 513, "outcome_index": 0},
         PositionId(2, BASE, 2, 0, 513, 0)),
        ({"module": 3, "base_hash": 2**128 - 1, "arity": 65535, "resolution_chain": 7, "condition_index": 65535,
          "outcome_index": 255}, PositionId(3, 2**128 - 1, 65535, 7, 65535, 255)),
    ],
)  # fmt: skip
def test_every_field_of_a_hand_built_position_id_decodes(fields: dict[str, int], expected: PositionId) -> None:
    value = build(**fields)
    assert is_v2_position_id(value) and is_v2_position_id(str(value))
    assert decode_position_id(str(value)) == expected


def test_module_names() -> None:
    assert decode_position_id(build(module=MODULE_COMBINATORIAL, arity=2)).module_name == "combinatorial"
    assert decode_position_id(build(module=9, arity=2)).module_name == "module_9"


def test_any_reserved_bit_set_means_not_a_position_id() -> None:
    for bit in range(64):
        assert not is_v2_position_id(build(module=1, arity=2, reserved=1 << bit))


def test_ctf_token_ids_are_keccak_hashes_and_never_pass_for_position_ids() -> None:
    rng = random.Random(4)
    for _ in range(2000):
        token = int.from_bytes(keccak(rng.randbytes(64)), "big")
        assert not is_v2_position_id(str(token)) and decode_position_id(str(token)) is None
    real = "8851848546962572193739008211889046036776198486765606333032192644001246174440"  # docs/upstream.md §1.3
    assert not is_v2_position_id(real)


@pytest.mark.parametrize("text", ["0", "1", "", "12a", "-5", str(2**256), "9" * 79])
def test_usdc_small_numbers_and_non_numbers_are_not_position_ids(text: str) -> None:
    assert not is_v2_position_id(text) and decode_position_id(text) is None
