"""join_lines: the scripts' one-argument lists must split back into exactly the items given."""

from __future__ import annotations

import pytest

from common.lua_scripts import join_lines


def test_items_are_joined_by_newlines_whatever_their_type() -> None:
    assert join_lines([b'{"a":1}', b'{"b":2}']) == b'{"a":1}\n{"b":2}'
    assert join_lines(["1-0", "2-0"]) == b"1-0\n2-0"
    assert join_lines(["field", b"value"]) == b"field\nvalue"
    assert join_lines([]) == b""


@pytest.mark.parametrize(
    "items",
    [[b"a", b"b\nc"], [b"a\n", b"b"], [b"\n"], [b"a", b""], [""], [b"x" * 5000 + b"\n" + b"y", b"z"]],
)
def test_an_item_with_a_newline_or_empty_is_refused(items: list[bytes | str]) -> None:
    with pytest.raises(ValueError, match="raw newline"):
        join_lines(items)
