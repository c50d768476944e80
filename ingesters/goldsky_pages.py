"""Goldsky `orderFilledEvents` paging with a sticky `(timestamp, id)` cursor, and fill normalization. No I/O.

Cursor `(T, ID)` means: every fill of the range with `(timestamp, id) <= (T, ID)` has been written (ids compare
as strings, as the subgraph orders them). `ID == ""` means none of second T yet. Two query shapes walk the range:

- open  (second T known complete): `where: {timestamp_gt: T, timestamp_lte: END}`;
- sticky (second T may have more): `where: {timestamp: T, id_gt: ID}`, both operators graph-node supports
  (docs/upstream.md §2; no `or`, which older graph-node versions and the simulator reject).

A full open page that spans several seconds drops its last second (it may continue on the next page) and stays
open; a full page holding one second only goes sticky at that second until a short page finishes it. This is
correct for any burst size and costs one request per page outside bursts. After a restart the completeness of
second T is unknown, so the first query is sticky (a repeat finds nothing new, never a duplicate).

A reply is decoded in one msgspec pass straight into `SubgraphFill`s (`decode_reply`), the fields as the text the
subgraph sends; a reply of any other shape (an item with a missing or non-text field, GraphQL errors, no data)
is decoded as plain JSON instead, and its items are read one by one, so a malformed item is dead-lettered alone.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import msgspec
import orjson

from common import keys
from common.errors import PermanentSourceError, PoisonMessage, TransientSourceError
from common.payloads import OrderEvent, encode_dead_letter, encode_valid_order_event, validate_order_event

MAX_PAGE_SIZE = 1000  # graph-node's GRAPH_GRAPHQL_MAX_FIRST default

FIELDS = (
    "id transactionHash timestamp orderHash maker taker makerAssetId takerAssetId"
    " makerAmountFilled takerAmountFilled fee"
)
_FIELD_NAMES = tuple(FIELDS.split())
FILLS_QUERY = (
    "query Fills($first: Int!, $where: OrderFilledEvent_filter!) {"
    " orderFilledEvents(first: $first, orderBy: timestamp, orderDirection: asc, where: $where) {"
    f" {FIELDS} }} }}"
)
NEWEST_FILL_QUERY = "{ orderFilledEvents(first: 1, orderBy: timestamp, orderDirection: desc) { id timestamp } }"

# GraphQL error texts worth a retry: Goldsky's rate limit, indexers catching up or failing over, timeouts.
TRANSIENT_GRAPHQL_HINTS = (
    "allowance",
    "rate limit",
    "too many requests",
    "indexing",
    "indexed up to",
    "not yet",
    "timeout",
    "timed out",
    "unavailable",
    "overloaded",
    "try again",
    "bad indexers",
    "store error",
    "internal error",
    "database",
    "connection",
)


class SubgraphFill(msgspec.Struct, rename="camel"):
    """One `orderFilledEvents` item as the subgraph sends it (BigInts and Bytes are JSON strings), fields in the
    order of FIELDS; encoded again, it is the item itself (what a dead letter carries)."""

    id: str
    transaction_hash: str
    timestamp: str
    order_hash: str
    maker: str
    taker: str
    maker_asset_id: str
    taker_asset_id: str
    maker_amount_filled: str
    taker_amount_filled: str
    fee: str


class _FillsData(msgspec.Struct):
    order_filled_events: list[SubgraphFill] = msgspec.field(name="orderFilledEvents")


class FillsReply(msgspec.Struct):
    data: _FillsData | None = None
    errors: Any = None


# A reply item: typed when the whole reply had the expected shape, else the plain JSON value (normalize_rows).
Row = SubgraphFill | dict[str, Any]

_reply_decoder = msgspec.json.Decoder(FillsReply)


def decode_reply(content: bytes) -> Any:
    """A response body -> FillsReply in one pass (no dict per item), or its plain JSON when it has another shape.
    Invalid JSON (a truncated body) raises ValueError, which `request_json` retries."""
    try:
        return _reply_decoder.decode(content)
    except msgspec.ValidationError:
        return orjson.loads(content)


@dataclass(frozen=True, slots=True)
class Cursor:
    timestamp: int
    last_id: str

    def key(self) -> tuple[int, str]:
        return (self.timestamp, self.last_id)


@dataclass(frozen=True, slots=True)
class Page:
    """What to write from one response and where the range stands afterwards."""

    rows: list[Row]  # in (timestamp, id) order; the page's items to normalize and write
    cursor: Cursor  # the cursor after `rows`
    second_complete: bool  # True when every fill of second `cursor.timestamp` is in or before `rows`
    exhausted: bool  # True when nothing more was available up to the range end at query time


def start_cursor(first_ts: int) -> Cursor:
    """The cursor before any fill of a range starting at `first_ts` (second `first_ts - 1` counts as complete)."""
    return Cursor(first_ts - 1, "")


def parse_cursor(timestamp: str | None, last_id: str | None, first_ts: int) -> Cursor:
    """Stored strings -> Cursor; absent keys mean the start of the range."""
    if timestamp is None or timestamp == "":
        return start_cursor(first_ts)
    return Cursor(int(timestamp), last_id or "")


def is_second_complete(cursor: Cursor, first_ts: int, known_complete: Cursor | None) -> bool:
    """Whether to query open: the last page said so, or the cursor is still before the range."""
    return cursor.timestamp < first_ts or cursor == known_complete


def build_where(cursor: Cursor, *, second_complete: bool, last_ts: int | None) -> dict[str, str]:
    if not second_complete:
        return {"timestamp": str(cursor.timestamp), "id_gt": cursor.last_id}
    where = {"timestamp_gt": str(cursor.timestamp)}
    if last_ts is not None:
        where["timestamp_lte"] = str(last_ts)
    return where


def build_request(
    cursor: Cursor, *, second_complete: bool, last_ts: int | None, page_size: int = MAX_PAGE_SIZE
) -> dict[str, Any]:
    """The JSON body of the next page's GraphQL POST."""
    where = build_where(cursor, second_complete=second_complete, last_ts=last_ts)
    return {"query": FILLS_QUERY, "variables": {"first": page_size, "where": where}, "operationName": "Fills"}


def order_key(row: Row) -> tuple[int, str]:
    """(timestamp, id) of a row; rows without a usable one sort first and never move the cursor."""
    try:
        if type(row) is SubgraphFill:
            return (int(row.timestamp), row.id.lower())
        return (int(row["timestamp"]), str(row["id"]).lower())
    except (KeyError, TypeError, ValueError):
        return (-1, "")


def plan_page(rows: Sequence[Row], *, cursor: Cursor, second_complete: bool, page_size: int) -> Page:
    """Decide which rows of a response to write and the cursor that follows them."""
    keyed = sorted(zip(map(order_key, rows), rows, strict=True), key=itemgetter(0))
    keys = [key for key, _ in keyed]
    ordered = [row for _, row in keyed]
    full = len(rows) >= page_size
    first_valid = bisect_left(keys, (0,))  # rows without a usable key sort first, as (-1, "")
    if first_valid == len(keys):
        if full:
            raise PermanentSourceError("goldsky: a full page without one usable (timestamp, id); cannot page on")
        return Page(ordered, cursor, True, second_complete)
    last_second = keys[-1][0]
    if not full:
        # Short sticky page: second T is finished, go open. Short open page: the range is drained for now.
        return Page(ordered, Cursor(*keys[-1]), True, second_complete)
    if second_complete and keys[first_valid][0] != last_second:
        # Full page over several seconds: keep the whole seconds, fetch the last one again next time.
        cut = bisect_left(keys, (last_second,))
        return Page(ordered[:cut], Cursor(*keys[cut - 1]), True, False)
    # Full page inside one second (a burst): go (or stay) sticky on it.
    return Page(ordered, Cursor(*keys[-1]), False, False)


def normalize_fill(raw: Row) -> OrderEvent:
    """One subgraph `OrderFilledEvent` -> OrderEvent; anything malformed raises PoisonMessage with the reason."""
    event = build_fill(subgraph_fill(raw))
    validate_order_event(event)
    return event


def subgraph_fill(raw: Row) -> SubgraphFill:
    """A row as a SubgraphFill: typed rows as they are, a plain JSON item's fields as text (missing: PoisonMessage)."""
    if type(raw) is SubgraphFill:
        return raw
    try:
        return SubgraphFill(*(str(raw[name]) for name in _FIELD_NAMES))
    except KeyError as exc:
        raise PoisonMessage(f"goldsky fill {raw.get('id')!r}: missing field {exc.args[0]}") from None


def build_fill(fill: SubgraphFill) -> OrderEvent:
    """The OrderEvent fields of a subgraph item, not validated yet (a non-integer BigInt: PoisonMessage)."""
    try:
        return OrderEvent(
            id=fill.id.lower(),
            source="goldsky",
            exchange="",
            block_number=0,
            log_index=None,
            tx_hash=fill.transaction_hash.lower(),
            order_hash=fill.order_hash.lower(),
            timestamp=int(fill.timestamp),
            maker=fill.maker.lower(),
            taker=fill.taker.lower(),
            maker_asset_id=fill.maker_asset_id,
            taker_asset_id=fill.taker_asset_id,
            maker_amount=int(fill.maker_amount_filled),
            taker_amount=int(fill.taker_amount_filled),
            fee=int(fill.fee),
        )
    except ValueError as exc:
        raise PoisonMessage(f"goldsky fill {fill.id!r}: {exc}") from None


def normalize_rows(rows: Sequence[Row]) -> tuple[list[bytes], list[bytes]]:
    """Rows -> (encoded events, `stream:dlq` entries carrying the raw item and the reason)."""
    entries, dead = [], []
    for raw in rows:
        try:
            entries.append(encode_valid_order_event(build_fill(subgraph_fill(raw))))
        except PoisonMessage as exc:
            payload = msgspec.json.encode(raw) if type(raw) is SubgraphFill else orjson.dumps(raw, default=str)
            dead.append(encode_dead_letter(stream=keys.STREAM_ORDER_EVENTS, payload=payload, error=str(exc)))
    return entries, dead


def graphql_error(errors: Any) -> TransientSourceError | PermanentSourceError:
    """The exception for a response's `errors`: rate limits, indexing and timeouts retry; anything else stops."""
    messages = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in (errors or [])]
    text = "; ".join(messages)[:300] or "empty errors list"
    lowered = text.lower()
    if any(hint in lowered for hint in TRANSIENT_GRAPHQL_HINTS):
        retry_after_s = 10.0 if "allowance" in lowered else None  # "limits reset every 10 seconds"
        return TransientSourceError(f"goldsky GraphQL: {text}", retry_after_s=retry_after_s)
    return PermanentSourceError(f"goldsky GraphQL: {text}")


def extract_rows(body: Any) -> list[Row]:
    """`{"data": {"orderFilledEvents": [...]}}` (a FillsReply, or plain JSON) -> the rows; GraphQL errors and odd
    shapes raise SourceErrors."""
    if isinstance(body, FillsReply):
        if body.errors:
            raise graphql_error(body.errors)
        if body.data is None:
            raise TransientSourceError("goldsky: response without data.orderFilledEvents")
        return body.data.order_filled_events
    if not isinstance(body, dict):
        raise TransientSourceError(f"goldsky: unexpected response type {type(body).__name__}")
    if body.get("errors"):
        raise graphql_error(body["errors"])
    rows = (body.get("data") or {}).get("orderFilledEvents")
    if not isinstance(rows, list):
        raise TransientSourceError("goldsky: response without data.orderFilledEvents")
    return [row if isinstance(row, dict) else {"value": row} for row in rows]
