"""Stream entries to ClickHouse rows, one pure function per table (DESIGN §4).

Each `*_row(data, ingested_at)` returns a tuple in the order of its table's COLUMNS, or raises PoisonMessage
with the reason; the writer dead-letters that entry and inserts the rest of its batch. Gamma's JSON-encoded
strings (`outcomes`, `outcomePrices`, `clobTokenIds`) become arrays; the full source object is kept in `raw`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson

from common import keys
from common.errors import PoisonMessage
from common.events import decode_order_event
from common.gamma_fields import parse_json_list
from processors.trades import decode_trade

Row = tuple[Any, ...]


@dataclass(frozen=True)
class TableSpec:
    stream: str
    table: str
    columns: tuple[str, ...]
    to_row: Callable[[bytes, datetime], Row]


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


def load_object(data: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("id") in (None, ""):
        raise PoisonMessage("not an object with an id")
    return obj


MARKET_COLUMNS = (
    "id", "question", "condition_id", "slug", "outcomes", "outcome_prices", "clob_token_ids", "volume",
    "liquidity", "active", "closed", "archived", "neg_risk", "start_date", "end_date", "created_at", "updated_at",
    "event_ids", "raw", "ingested_at",
)  # fmt: skip


def market_row(data: bytes, ingested_at: datetime) -> Row:
    market = load_object(data)
    return (
        str(market["id"]),
        str(market.get("question") or ""),
        str(market.get("conditionId") or ""),
        str(market.get("slug") or ""),
        [str(item) for item in parse_json_list(market.get("outcomes"), "outcomes")],
        [number(item, "outcomePrices") for item in parse_json_list(market.get("outcomePrices"), "outcomePrices")],
        [str(item) for item in parse_json_list(market.get("clobTokenIds"), "clobTokenIds")],
        number(market.get("volume", market.get("volumeNum")), "volume"),
        number(market.get("liquidity", market.get("liquidityNum")), "liquidity"),
        bool(market.get("active")),
        bool(market.get("closed")),
        bool(market.get("archived")),
        bool(market.get("negRisk")),
        parse_time(market.get("startDate")),
        parse_time(market.get("endDate")),
        parse_time(market.get("createdAt")),
        parse_time(market.get("updatedAt")) or ingested_at,
        [str(event["id"]) for event in market.get("events") or [] if isinstance(event, dict) and "id" in event],
        data.decode(),
        ingested_at,
    )


EVENT_COLUMNS = (
    "id", "title", "slug", "ticker", "active", "closed", "archived", "featured", "restricted", "neg_risk", "volume",
    "liquidity", "open_interest", "start_date", "end_date", "created_at", "updated_at", "tag_labels", "tag_slugs",
    "market_ids", "raw", "ingested_at",
)  # fmt: skip


def event_row(data: bytes, ingested_at: datetime) -> Row:
    event = load_object(data)
    tags = [tag for tag in event.get("tags") or [] if isinstance(tag, dict)]
    markets = [market for market in event.get("markets") or [] if isinstance(market, dict)]
    return (
        str(event["id"]),
        str(event.get("title") or ""),
        str(event.get("slug") or ""),
        str(event.get("ticker") or ""),
        bool(event.get("active")),
        bool(event.get("closed")),
        bool(event.get("archived")),
        bool(event.get("featured")),
        bool(event.get("restricted")),
        bool(event.get("negRisk")),
        number(event.get("volume"), "volume"),
        number(event.get("liquidity"), "liquidity"),
        number(event.get("openInterest"), "openInterest"),
        parse_time(event.get("startDate")),
        parse_time(event.get("endDate")),
        parse_time(event.get("createdAt")),
        parse_time(event.get("updatedAt")) or ingested_at,
        [str(tag.get("label") or "") for tag in tags],
        [str(tag.get("slug") or "") for tag in tags],
        [str(market["id"]) for market in markets if "id" in market],
        data.decode(),
        ingested_at,
    )


ORDER_EVENT_COLUMNS = (
    "id", "source", "exchange", "block_number", "log_index", "tx_hash", "order_hash", "timestamp", "maker", "taker",
    "maker_asset_id", "taker_asset_id", "maker_amount", "taker_amount", "fee", "ingested_at",
)  # fmt: skip


def order_event_row(data: bytes, ingested_at: datetime) -> Row:
    e = decode_order_event(data)
    return (
        e.id, e.source, e.exchange, e.block_number, e.log_index, e.tx_hash, e.order_hash, e.timestamp, e.maker,
        e.taker, e.maker_asset_id, e.taker_asset_id, e.maker_amount, e.taker_amount, e.fee, ingested_at,
    )  # fmt: skip


TRADE_COLUMNS = (
    "id", "timestamp", "block_number", "tx_hash", "log_index", "order_hash", "source", "exchange", "market_id",
    "condition_id", "token_id", "outcome", "outcome_index", "maker", "taker", "maker_direction", "taker_direction",
    "price", "usd_amount", "token_amount", "fee", "is_taker_side", "ingested_at",
)  # fmt: skip


def trade_row(data: bytes, ingested_at: datetime) -> Row:
    try:
        t = decode_trade(data)
    except msgspec.DecodeError as exc:
        raise PoisonMessage(f"invalid trade: {exc}") from exc
    return (
        t.id, t.timestamp, t.block_number, t.tx_hash, t.log_index, t.order_hash, t.source, t.exchange, t.market_id,
        t.condition_id, t.token_id, t.outcome, t.outcome_index, t.maker, t.taker, t.maker_direction,
        t.taker_direction, t.price, Decimal(t.usd_amount), Decimal(t.token_amount), t.fee, t.is_taker_side,
        ingested_at,
    )  # fmt: skip


TABLES = (
    TableSpec(keys.STREAM_MARKETS, "markets", MARKET_COLUMNS, market_row),
    TableSpec(keys.STREAM_EVENTS, "events", EVENT_COLUMNS, event_row),
    TableSpec(keys.STREAM_ORDER_EVENTS, "order_filled_events", ORDER_EVENT_COLUMNS, order_event_row),
    TableSpec(keys.STREAM_TRADES, "trades", TRADE_COLUMNS, trade_row),
)
