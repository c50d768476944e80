"""A stream entry's `data` is a page: a JSON array of 1..N items of one kind, in source order (docs/CONTRACT.md §3).

A page is what one source call returned, or the trades of one processed entry, split by `pack` so that no entry
holds more than STREAM_PAGE_MAX_ITEMS items or STREAM_PAGE_MAX_BYTES bytes. Every guarantee stays per item: a
consumer decodes a page at once when it can and item by item when it cannot (`items_of`), so a malformed item is
found and dead-lettered alone. An entry written before pages holds one JSON object: it reads as a page of one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Generic, NamedTuple, TypeVar

import orjson

from common.errors import PoisonMessage

T = TypeVar("T")


def page(items: Iterable[bytes]) -> bytes:
    """Compact JSON items (no raw newline, as orjson and msgspec write them) as one page."""
    return b"[" + b",".join(items) + b"]"


def pack(items: Sequence[bytes], *, max_items: int, max_bytes: int) -> list[bytes]:
    """`items` as pages, in order, each at most `max_items` items and `max_bytes` bytes (an item bigger than that
    is a page alone)."""
    pages: list[bytes] = []
    start, size = 0, 2  # the page under way starts at items[start]; its size with the brackets
    for index, item in enumerate(items):
        if index > start and (index - start >= max_items or size + len(item) + 1 > max_bytes):
            pages.append(page(items[start:index]))
            start, size = index, 2
        size += len(item) + 1
    if start < len(items):
        pages.append(page(items[start:]))
    return pages


def is_page(data: bytes) -> bool:
    """Whether `data` is a page (an entry of the shape before pages is one JSON object)."""
    return data[:1] == b"["


def items_of(data: bytes) -> list[bytes]:
    """The items of an entry's `data`, each as its own compact JSON: the slow path, for a page that did not decode
    as a whole, to find which items are malformed. Raises PoisonMessage when `data` is not a JSON page at all."""
    if not is_page(data):
        return [data]
    try:
        values = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"invalid JSON page: {exc}") from exc
    if not isinstance(values, list):
        raise PoisonMessage("not a JSON array of items")
    return [orjson.dumps(value) for value in values]


class BadItem(NamedTuple):
    position: int | None  # in its page; None: the whole entry, which is no page of items
    data: bytes  # the item as compact JSON (the entry's data when `position` is None)
    reason: str


class Decoded(NamedTuple, Generic[T]):
    """A page's items decoded: `values[i]` is item `kept[i]` of the page; `bad` are the items that could not be."""

    values: list[T]
    kept: Sequence[int]
    bad: list[BadItem]


def decode_page(data: bytes, decode_all: Callable[[bytes], list[T]], decode_one: Callable[[bytes], T]) -> Decoded[T]:
    """A page's items, decoded at once by `decode_all` (the usual case: one call) or, when that finds one
    malformed, item by item by `decode_one`, so each bad item is named alone. When `data` is not a page of JSON
    items at all, the whole entry is the one bad item (`position` None). An entry of the shape before pages is one
    item."""
    if is_page(data):
        try:
            values = decode_all(data)
        except PoisonMessage:
            pass
        else:
            return Decoded(values, range(len(values)), [])
    try:
        items = items_of(data)
    except PoisonMessage as exc:
        return Decoded([], [], [BadItem(None, data, str(exc))])
    values, kept, bad = [], [], []
    for index, item in enumerate(items):
        try:
            values.append(decode_one(item))
        except PoisonMessage as exc:
            bad.append(BadItem(index, item, str(exc)))
            continue
        kept.append(index)
    return Decoded(values, kept, bad)
