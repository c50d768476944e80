"""join_lines: the scripts' one-argument lists must split back into exactly the items given."""

from __future__ import annotations

import pytest

from common.lua_scripts import join_lines


def test_items_are_joined_by_newlines_whatever_their_type() -> None:
    assert join_lines([b'{"a":1}', b'{"b":2}']) == b'{"a":1}\n{"b":2}'
    assert join_lines(["1-0", "2-0"]) == b"1-0\n2-0"
    assert join_lines(["field", b"value"]) == b"field\nvalue"
    assert join_lines([]) == b""
    assert join_lines([b"x" * 300] * 3) == b"\n".join([b"x" * 300] * 3)  # long items: the other newline count


@pytest.mark.parametrize(
    "items",
    [
        [b"a", b"b\nc"], [b"a\n", b"b"], [b"\n"], [b"a", b""], [""], [b"x" * 5000 + b"\n" + b"y", b"z"],
        ["1-0", "2-0\n3-0"], [b"x" * 300, b"y" * 300 + b"\n", b"z" * 300],
    ],
)  # fmt: skip
def test_an_item_with_a_newline_or_empty_is_refused(items: list[bytes | str]) -> None:
    with pytest.raises(ValueError, match="raw newline"):
        join_lines(items)
