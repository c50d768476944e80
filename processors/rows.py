"""Stream entries to ClickHouse columns, pure functions (docs/CONTRACT.md §3, §4).

`StreamSpec.convert(entries, ingested_at)` turns a batch of entries, each a page of items (common/pages.py), into
the columns of the table the stream fills (`Converted`: one list per column, in the order of the table's COLUMNS,
one value per item kept), and names the items that are poison (PoisonMessage's reason), or the entry when it is no
page of items at all; the writer dead-letters those and inserts the rest of the batch. A page is decoded in one
call (`StreamSpec.read_page`: msgspec's decoder of a list of trades), item by item only when one is malformed.
Columns, not rows: clickhouse-connect inserts columns, and building them directly spares a tuple per row
(tracked by the collector) and a transposition per table. The column names come from the values' own shape, so
they cannot drift from them: the fields of the stream's struct (`common.payloads`) for trades, a
NamedTuple per row for markets and events (whose small batches are built as rows, then transposed). Gamma's
JSON-encoded strings (`outcomes`, `outcomePrices`, `clobTokenIds`) become arrays; the full source object is kept in
`raw`. Trades keep their amounts as the exact decimal text the processor wrote; clickhouse-connect scales that text
into Decimal(18, 6) itself, so no Decimal is built here.

`stream:trades` fills `trades` alone: `order_filled_events` is a view over it (migration 007), which gives back each
fill's four asset and amount columns from its trade, because a fill has exactly one USDC asset id "0"
(`common.payloads.check_order_event`) and `processors.trades.derive_trade` keeps both legs as exact 6-decimal text:
maker BUY: maker_asset_id "0", taker_asset_id token_id, maker_amount the USD micros, taker_amount the token micros;
maker SELL: the other way round. A trade the view could not give its fill back from (`check_trade`) is poison, as
it was when the writer built the fill row itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, NamedTuple

import orjson

from common import keys, tables
from common.errors import PoisonMessage
from common.gamma_fields import parse_json_list
from common.pages import Decoded, decode_page, items_of
from common.payloads import Trade, decode_trade, decode_trades
from common.unique_insert import UniqueKey

Row = tuple[Any, ...]
Columns = list[list[Any]]  # a table's values, one list per column in the table's column order


class Converted(NamedTuple):
    """A batch of entries (pages) as columns: entry i gave the next `entry_rows[i]` rows, from the items `kept[i]`
    of its page."""

    columns: Columns  # of the stream's table
    entry_rows: list[int]
    kept: list[Sequence[int]]
    # (index into the batch, index of the item in its page or None for the whole entry, the item, why it cannot
    # be converted)
    poison: list[tuple[int, int | None, bytes, str]]

    def row_ids(self, entry_ids: Sequence[str]) -> list[str]:
        """The id of the entry each row came from, row by row (`entry_ids`: the batch's, in order)."""
        return [id_ for id_, rows in zip(entry_ids, self.entry_rows, strict=True) for id_ in [id_] * rows]

    def origin(self, row: int) -> tuple[int, int]:
        """The entry (index into the batch) and the item (index in its page) that gave `row`."""
        for index, rows in enumerate(self.entry_rows):
            if row < rows:
                return index, self.kept[index][row]
            row -= rows
        raise IndexError(row)


ReadPage = Callable[[bytes, datetime], Decoded[Any]]
ToColumns = Callable[[list[Any], datetime], Columns]


@dataclass(frozen=True)
class TableSpec:
    table: str
    columns: tuple[str, ...]
    unique: UniqueKey  # how the writer keeps the table unique by `id` (common/unique_insert.py)


@dataclass(frozen=True)
class StreamSpec:
    """A stream the writer reads, the table each of its items becomes one row of, and how. Its name is the
    namespace of the dedup tokens of its table (`common.clickhouse.batch_token`), as it has always been, so a batch
    retried across an upgrade gets the token of its first attempt."""

    stream: str
    table: TableSpec
    read_page: ReadPage  # an entry's items, decoded (each bad one named alone)
    to_columns: ToColumns  # decoded items as the table's columns

    def convert(self, entries: Sequence[bytes], ingested_at: datetime) -> Converted:
        """A batch of entries as the columns of the stream's table, and the items (or entries) that are poison."""
        values: list[Any] = []
        entry_rows: list[int] = []
        kept: list[Sequence[int]] = []
        poison: list[tuple[int, int | None, bytes, str]] = []
        for index, data in enumerate(entries):
            decoded = self.read_page(data, ingested_at)
            values += decoded.values
            entry_rows.append(len(decoded.values))
            kept.append(decoded.kept)
            poison += [(index, bad.position, bad.data, bad.reason) for bad in decoded.bad]
        return Converted(self.to_columns(values, ingested_at), entry_rows, kept, poison)


def parse_time(value: Any) -> datetime | None:
    """Gamma's several date formats ('...Z', '... +00', date only) as an aware UTC datetime, or None."""
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise PoisonMessage(f"unparseable date {value!r}") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def number(value: Any, field: str) -> float:
    """Gamma numbers arrive as numbers or as decimal strings, depending on the object and the endpoint."""
    if value in (None, ""):
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise PoisonMessage(f"{field} is not a number: {value!r}") from exc


def optional_number(value: Any, field: str) -> float | None:
    """A Gamma number that may be absent: None (NULL in ClickHouse), not a zero that would look real."""
    return None if value in (None, "") else number(value, field)


def load_object(data: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("id") in (None, ""):
        raise PoisonMessage("not an object with an id")
    return obj


class MarketRow(NamedTuple):
    """A row of `markets`: the field names are the table's columns, in its order."""

    id: str
    question: str
    condition_id: str
    slug: str
    outcomes: list[str]
    outcome_prices: list[float]
    clob_token_ids: list[str]
    version: str  # Gamma's `version`: "v1", "v2", or "" when absent (which means v1)
    position_ids: list[str]  # a V2 market's outcome ids (a native JSON array, or a JSON-encoded string)
    resolution_status: str  # a V2 market's `resolutionStatus` (inactive, active, resolved), "" when absent
    volume: float | None  # None when Gamma sends neither `volume` nor `volumeNum` (some closed markets)
    liquidity: float | None
    active: bool
    closed: bool
    archived: bool
    neg_risk: bool
    start_date: datetime | None
    end_date: datetime | None
    created_at: datetime | None
    updated_at: datetime
    event_ids: list[str]
    raw: str
    ingested_at: datetime


MARKET_COLUMNS = MarketRow._fields


def market_row(data: bytes, ingested_at: datetime) -> MarketRow:
    market = load_object(data)
    return MarketRow(
        id=str(market["id"]),
        question=str(market.get("question") or ""),
        condition_id=str(market.get("conditionId") or ""),
        slug=str(market.get("slug") or ""),
        outcomes=[str(item) for item in parse_json_list(market.get("outcomes"), "outcomes")],
        outcome_prices=[
            number(item, "outcomePrices") for item in parse_json_list(market.get("outcomePrices"), "outcomePrices")
        ],
        clob_token_ids=[str(item) for item in parse_json_list(market.get("clobTokenIds"), "clobTokenIds")],
        version=str(market.get("version") or ""),
        position_ids=[str(item) for item in parse_json_list(market.get("positionIds"), "positionIds")],
        resolution_status=str(market.get("resolutionStatus") or ""),
        volume=optional_number(market.get("volume", market.get("volumeNum")), "volume"),
        liquidity=optional_number(market.get("liquidity", market.get("liquidityNum")), "liquidity"),
        active=bool(market.get("active")),
        closed=bool(market.get("closed")),
        archived=bool(market.get("archived")),
        neg_risk=bool(market.get("negRisk")),
        start_date=parse_time(market.get("startDate")),
        end_date=parse_time(market.get("endDate")),
        created_at=parse_time(market.get("createdAt")),
        updated_at=parse_time(market.get("updatedAt")) or ingested_at,
        event_ids=[
            str(event["id"]) for event in market.get("events") or [] if isinstance(event, dict) and "id" in event
        ],
        raw=data.decode(),
        ingested_at=ingested_at,
    )


class EventRow(NamedTuple):
    """A row of `events`: the field names are the table's columns, in its order."""

    id: str
    title: str
    slug: str
    ticker: str
    active: bool
    closed: bool
    archived: bool
    featured: bool
    restricted: bool
    neg_risk: bool
    volume: float
    liquidity: float
    open_interest: float
    start_date: datetime | None
    end_date: datetime | None
    created_at: datetime | None
    updated_at: datetime
    tag_labels: list[str]
    tag_slugs: list[str]
    market_ids: list[str]
    version: str  # Gamma's `version` of the event: "v1", "v2", or "" when absent (which means v1)
    raw: str
    ingested_at: datetime


EVENT_COLUMNS = EventRow._fields


def event_row(data: bytes, ingested_at: datetime) -> EventRow:
    event = load_object(data)
    tags = [tag for tag in event.get("tags") or [] if isinstance(tag, dict)]
    markets = [market for market in event.get("markets") or [] if isinstance(market, dict)]
    return EventRow(
        id=str(event["id"]),
        title=str(event.get("title") or ""),
        slug=str(event.get("slug") or ""),
        ticker=str(event.get("ticker") or ""),
        active=bool(event.get("active")),
        closed=bool(event.get("closed")),
        archived=bool(event.get("archived")),
        featured=bool(event.get("featured")),
        restricted=bool(event.get("restricted")),
        neg_risk=bool(event.get("negRisk")),
        volume=number(event.get("volume"), "volume"),
        liquidity=number(event.get("liquidity"), "liquidity"),
        open_interest=number(event.get("openInterest"), "openInterest"),
        start_date=parse_time(event.get("startDate")),
        end_date=parse_time(event.get("endDate")),
        created_at=parse_time(event.get("createdAt")),
        updated_at=parse_time(event.get("updatedAt")) or ingested_at,
        tag_labels=[str(tag.get("label") or "") for tag in tags],
        tag_slugs=[str(tag.get("slug") or "") for tag in tags],
        market_ids=[str(market["id"]) for market in markets if "id" in market],
        version=str(event.get("version") or ""),
        raw=data.decode(),
        ingested_at=ingested_at,
    )


def rows_of(to_row: Callable[[bytes, datetime], Row]) -> ReadPage:
    """`to_row`, one item's row, as the `StreamSpec.read_page` of a stream of Gamma objects (markets, events: small
    batches, where rows cost little)."""

    def read_page(data: bytes, ingested_at: datetime) -> Decoded[Row]:
        return decode_page(data, lambda page: [to_row(item, ingested_at) for item in items_of(page)],
                           lambda item: to_row(item, ingested_at))  # fmt: skip

    return read_page


def transposed(table: TableSpec) -> ToColumns:
    """Rows as the columns of `table`, the stream's."""

    def to_columns(rows: list[Row], ingested_at: datetime) -> Columns:
        return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in table.columns]

    return to_columns


# The stream struct's fields are the table's columns, in their order, then `ingested_at`.
TRADE_COLUMNS = (*Trade.__struct_fields__, "ingested_at")


def check_amount(amount: str) -> None:
    """Exact 6-decimal text ('1.500000', as `derive_trade` writes it), else PoisonMessage."""
    digits = amount.replace(".", "", 1)  # one C call: 0.3 µs less than slicing around the dot, on this machine
    # the dot 6 from the end, at least one digit before it, and nothing but ASCII digits otherwise (the server would
    # store a sign, and drop a 7th decimal)
    if amount[-7:-6] != "." or len(digits) < 7 or not (digits.isascii() and digits.isdigit()):
        raise PoisonMessage(f"amount {amount!r} is not a decimal with 6 decimals")


def check_trade(trade: Trade) -> Trade:
    """`trade`, if `order_filled_events` gives its fill back exactly (module docstring), else PoisonMessage."""
    check_amount(trade.usd_amount)
    check_amount(trade.token_amount)
    if trade.maker_direction not in ("BUY", "SELL"):
        raise PoisonMessage(f"trade {trade.id}: maker_direction {trade.maker_direction!r} is neither BUY nor SELL")
    return trade


_TRADE_FIELDS = [attrgetter(name) for name in Trade.__struct_fields__]


def read_trades(data: bytes, ingested_at: datetime) -> Decoded[Trade]:
    """A page of `stream:trades`, decoded at once (msgspec, one call), item by item only when one is malformed."""
    return decode_page(data, lambda page: [check_trade(t) for t in decode_trades(page)],
                       lambda item: check_trade(decode_trade(item)))  # fmt: skip


def trade_columns(trades: list[Trade], ingested_at: datetime) -> Columns:
    """Trades as the columns of `trades` (the writer's hot path)."""
    columns = [list(map(get, trades)) for get in _TRADE_FIELDS]  # amounts: exact decimal text
    return [*columns, [ingested_at] * len(trades)]


# Trades never change: checked by id over their time ranges. Markets and events do: newest updated_at.
IMMUTABLE = UniqueKey(time_column="timestamp")
VERSIONED = UniqueKey(version_column="updated_at")
MARKETS = TableSpec(tables.MARKETS, MARKET_COLUMNS, VERSIONED)
EVENTS = TableSpec(tables.EVENTS, EVENT_COLUMNS, VERSIONED)
TRADES = TableSpec(tables.TRADES, TRADE_COLUMNS, IMMUTABLE)
TABLES = (MARKETS, EVENTS, TRADES)
STREAMS = (
    StreamSpec(keys.STREAM_MARKETS, MARKETS, rows_of(market_row), transposed(MARKETS)),
    StreamSpec(keys.STREAM_EVENTS, EVENTS, rows_of(event_row), transposed(EVENTS)),
    StreamSpec(keys.STREAM_TRADES, TRADES, read_trades, trade_columns),
)
