"""Every payload that crosses Redis (docs/CONTRACT.md §3), each a msgspec Struct with its encoder and decoder.

- `OrderEvent`, a `stream:order_events` entry: what both fill sources write. `id` is `<tx_hash>_<order_hash>`
  (the subgraph's own id), so the same fill seen by the Goldsky ingester and by the chain ingester has the same
  id. Amounts and fees are integers in 6-decimal base units; asset ids are decimal strings with "0" meaning USDC.
- `Trade`, a `stream:trades` entry: a fill with its market, as the trade processor derives it.
- `MarketRef`, a value of the `markets:by_token` hash: what a trade needs of its market.
- `DeadLetter`, a `stream:dlq` entry: where it came from, the original payload, why it failed, and when.
- `Heartbeat`, the `service:<name>` hash: state, times, last error, `count:*` counters and `gauge:*` gauges.
- `ExchangeUpgrade`, a value of the `chain:exchange_upgrades` hash: an `Upgraded` log of an exchange's proxy.

The JSON field and hash field names are product surface (operators read them with redis-cli): renaming one
is a format change. Decoders of stream entries raise PoisonMessage with the reason; the decoders of what only
people look at (dead letters, heartbeats) never raise, so one bad value cannot hide the rest of a page.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, TypeVar, get_args

import msgspec

from common.errors import PoisonMessage

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def _decode_or_poison(decoder: msgspec.json.Decoder[T], data: bytes, what: str) -> T:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise PoisonMessage(f"invalid {what}: {exc}") from None


# --- order events ------------------------------------------------------------------------------------------

UINT64_MAX = 2**64 - 1

# Type, sign and length checks run inside msgspec's decoder (C), not per field in Python: this is the hot path.
# (msgspec cannot bound an int above int64, so the upper bound is checked in check_order_event; nor can it match
# a pattern without calling Python's re, which cost 0.7 µs per event: the digits are checked there too.)
UInt64 = Annotated[int, msgspec.Meta(ge=0)]
AssetId = Annotated[str, msgspec.Meta(min_length=1, max_length=78)]  # decimal digits: check_order_event
Source = Literal["goldsky", "chain"]


_UINT64_FIELDS = ("maker_amount", "taker_amount", "fee", "block_number", "timestamp")
_TEXT_FIELDS = ("id", "exchange", "tx_hash", "order_hash", "maker", "taker")
_ASSET_FIELDS = ("maker_asset_id", "taker_asset_id")
# The decoder's own rules, for events built in Python (validate_order_event)
_SOURCES = get_args(Source)


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """`gc=False`: its fields are scalars, it can hold no cycle, and the collector need not track (nor untrack,
    when the batch is freed) one object a fill: 0.4-0.6 CPU-µs a fill less to decode, measured here."""

    id: str
    source: Source
    exchange: str  # lowercase contract address, "" when the source doesn't say
    block_number: UInt64  # 0 when the source doesn't say (the subgraph)
    log_index: UInt64 | None
    tx_hash: str
    order_hash: str
    timestamp: UInt64  # unix seconds (block time)
    maker: str
    taker: str
    maker_asset_id: AssetId
    taker_asset_id: AssetId
    maker_amount: UInt64
    taker_amount: UInt64
    fee: UInt64


_order_event_decoder = msgspec.json.Decoder(OrderEvent)


def fill_id(tx_hash: str, order_hash: str) -> str:
    return f"{tx_hash.lower()}_{order_hash.lower()}"


def encode_order_event(event: OrderEvent) -> bytes:
    return _encoder.encode(event)


_order_events_decoder = msgspec.json.Decoder(list[OrderEvent])


def decode_order_events(data: bytes) -> list[OrderEvent]:
    """A whole page of order events, each checked; the first malformed one raises PoisonMessage (then
    `common.pages.decode_page` reads the page item by item to find which)."""
    events = _decode_or_poison(_order_events_decoder, data, "page of order events")
    for event in events:
        check_order_event(event)
    return events


def encode_items(items: Sequence[msgspec.Struct]) -> bytes:
    """Structs (order events, trades) as one page, in one call."""
    return _encoder.encode(items)


def decode_order_event(data: bytes) -> OrderEvent:
    """Decode and validate; anything malformed raises PoisonMessage with the reason."""
    event = _decode_or_poison(_order_event_decoder, data, "order event")  # types, ranges, asset id lengths
    check_order_event(event)
    return event


def encode_valid_order_event(event: OrderEvent) -> bytes:
    """The bytes to append for an event built in Python (the ingesters): its fields checked in Python against the
    rules the decoder applies (types, ranges, asset id shape, then check_order_event), then encoded once; no
    decode of the bytes just made. Whatever is found raises PoisonMessage."""
    validate_order_event(event)
    return _encoder.encode(event)


def validate_order_event(event: OrderEvent) -> None:
    """Full validation of an event built in Python, when its bytes are not needed: the decoder's type, range and
    asset id rules on the fields (one expression: this runs per fill in the ingesters), then check_order_event."""
    e = event
    if not (
        type(e.maker_amount) is type(e.taker_amount) is type(e.fee) is type(e.block_number) is type(e.timestamp) is int
        and min(e.maker_amount, e.taker_amount, e.fee, e.block_number, e.timestamp) >= 0
        and (e.log_index is None or (type(e.log_index) is int and e.log_index >= 0))
        and type(e.id) is type(e.exchange) is type(e.tx_hash) is type(e.order_hash) is type(e.maker) is str
        and type(e.taker) is str
        and e.source in _SOURCES
        and type(e.maker_asset_id) is type(e.taker_asset_id) is str
    ):
        raise PoisonMessage(f"invalid order event {event.id}: bad {', '.join(_invalid_fields(event))}")
    check_order_event(event)


def _invalid_fields(event: OrderEvent) -> list[str]:
    bad = [name for name in _UINT64_FIELDS if type(getattr(event, name)) is not int or getattr(event, name) < 0]
    if event.log_index is not None and (type(event.log_index) is not int or event.log_index < 0):
        bad.append("log_index")
    bad += [name for name in _TEXT_FIELDS if type(getattr(event, name)) is not str]
    bad += [name for name in _ASSET_FIELDS if type(getattr(event, name)) is not str]
    return bad + (["source"] if event.source not in _SOURCES else [])


def _is_asset_id(value: str) -> bool:
    """1 to 78 ASCII decimal digits (a uint256), without a regex."""
    return 0 < len(value) <= 78 and value.isascii() and value.isdigit()


def check_order_event(event: OrderEvent) -> None:
    """The rules no type says: amounts within UInt64, asset ids of decimal digits, exactly one of them USDC, and
    the id is `<tx_hash>_<order_hash>`."""
    # All the rules in one expression first: this runs once a fill, and only an event that breaks one pays for
    # finding which, below, and naming it. The amounts are known non-negative (the decoder's rule, and
    # validate_order_event's), so one bitwise or bounds them all, without a call to max().
    maker_asset, taker_asset = event.maker_asset_id, event.taker_asset_id
    if (
        (maker_asset == "0") is not (taker_asset == "0")
        and 0 < len(maker_asset) <= 78
        and 0 < len(taker_asset) <= 78
        and maker_asset.isdigit()
        and taker_asset.isdigit()
        and maker_asset.isascii()
        and taker_asset.isascii()
        and event.maker_amount | event.taker_amount | event.fee | event.block_number | event.timestamp <= UINT64_MAX
        and event.id == f"{event.tx_hash}_{event.order_hash}"
    ):
        return
    if max(event.maker_amount, event.taker_amount, event.fee, event.block_number, event.timestamp) > UINT64_MAX:
        too_big = [name for name in _UINT64_FIELDS if getattr(event, name) > UINT64_MAX]
        raise PoisonMessage(f"invalid order event {event.id}: {', '.join(too_big)} beyond UInt64")
    if not (_is_asset_id(event.maker_asset_id) and _is_asset_id(event.taker_asset_id)):
        bad = [name for name in _ASSET_FIELDS if not _is_asset_id(getattr(event, name))]
        raise PoisonMessage(f"invalid order event {event.id}: {', '.join(bad)} not 1 to 78 decimal digits")
    if (event.maker_asset_id == "0") == (event.taker_asset_id == "0"):
        raise PoisonMessage(f"invalid order event {event.id}: exactly one asset id must be '0' (USDC)")
    if event.id != f"{event.tx_hash}_{event.order_hash}":
        raise PoisonMessage(f"invalid order event {event.id}: id is not <tx_hash>_<order_hash>")


# --- trades ------------------------------------------------------------------------------------------------


class Trade(msgspec.Struct, frozen=True, gc=False):
    """A `stream:trades` entry; amounts are exact decimal strings, `fee` the raw integer.

    Positional construction is allowed (derive_trade, once a fill, builds it so), so the field order is the
    constructor's: add new fields at the end. `gc=False`: its fields are scalars, it can hold no cycle, and the
    collector need not track one object a fill.
    """

    id: str
    timestamp: int
    block_number: int
    tx_hash: str
    log_index: int | None
    order_hash: str
    source: str
    exchange: str
    market_id: str
    condition_id: str
    token_id: str
    outcome: str
    outcome_index: int
    maker: str
    taker: str
    maker_direction: str
    taker_direction: str
    price: float
    usd_amount: str
    token_amount: str
    fee: int
    is_taker_side: int


_trade_decoder = msgspec.json.Decoder(Trade)


def encode_trade(trade: Trade) -> bytes:
    return _encoder.encode(trade)


def decode_trade(data: bytes) -> Trade:
    return _decode_or_poison(_trade_decoder, data, "trade")


_trades_decoder = msgspec.json.Decoder(list[Trade])


def decode_trades(data: bytes) -> list[Trade]:
    return _decode_or_poison(_trades_decoder, data, "page of trades")


# --- market refs -------------------------------------------------------------------------------------------


class MarketRef(msgspec.Struct, frozen=True, kw_only=True):
    """What a trade needs of its market; the value of the `markets:by_token` hash, keyed by token id."""

    market_id: str
    condition_id: str
    outcome: str
    outcome_index: int
    question: str = ""


_market_ref_decoder = msgspec.json.Decoder(MarketRef)


def encode_market_ref(market: MarketRef) -> bytes:
    return _encoder.encode(market)


def decode_market_ref(data: bytes) -> MarketRef:
    return _decode_or_poison(_market_ref_decoder, data, "market ref")


# --- dead letters ------------------------------------------------------------------------------------------


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A `stream:dlq` entry. `entry_id` (JSON `id`) is the original entry's id: None for a source item an
    ingester found malformed (group "" then); `item` the index of the dead item in that entry's page, whose
    `payload` is then that one item (None: the payload is the whole entry); `time` is unix seconds."""

    stream: str = ""
    group: str = ""
    entry_id: str | None = msgspec.field(default=None, name="id")
    item: int | None = None
    payload: str = ""
    error: str = ""
    deliveries: int = 0
    time: float | None = None


_dead_letter_decoder = msgspec.json.Decoder(DeadLetter)


def encode_dead_letter(
    *,
    stream: str,
    payload: bytes | str,
    error: str,
    entry_id: str | None = None,
    item: int | None = None,
    deliveries: int = 0,
    group: str = "",
) -> bytes:
    """A dead letter of `payload` (bytes are shown as UTF-8 text), stamped with the time now. Without `entry_id`
    and `deliveries`: an item a source served that never became a stream entry (the ingesters' malformed items)."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    letter = DeadLetter(stream=stream, group=group, entry_id=entry_id, item=item, payload=text, error=error,
                        deliveries=deliveries, time=round(time.time(), 3))  # fmt: skip
    return _encoder.encode(letter)


def decode_dead_letter(data: bytes | None) -> DeadLetter:
    """Never raises: a dead letter that cannot be read comes back as its raw text, with the reason as its error."""
    try:
        return _dead_letter_decoder.decode(data or b"{}")
    except msgspec.DecodeError as exc:
        return DeadLetter(error=f"unparseable dead letter: {exc}", payload=(data or b"").decode("utf-8", "replace"))


# --- heartbeats --------------------------------------------------------------------------------------------

COUNTER_PREFIX = "count:"
GAUGE_PREFIX = "gauge:"


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """The `service:<name>` hash. Times are unix seconds, 0 for never or unknown; `pid` 0 for unknown.

    `counters` are the `count:<name>` fields: totals since `started_at`, so a rate is a difference.
    """

    state: str = ""
    pid: int = 0
    host: str = ""
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    last_error: str = ""
    last_error_at: float = 0.0
    counters: dict[str, int] = {}
    gauges: dict[str, float] = {}  # the `gauge:<name>` fields: values set, not added to (e.g. the chain's head)


def encode_heartbeat(heartbeat: Heartbeat) -> dict[str, str]:
    """The hash fields to HSET."""
    fields = {
        "state": heartbeat.state,
        "pid": str(heartbeat.pid),
        "host": heartbeat.host,
        "started_at": f"{heartbeat.started_at:.3f}",
        "heartbeat_at": f"{heartbeat.heartbeat_at:.3f}",
        "last_error": heartbeat.last_error,
        "last_error_at": f"{heartbeat.last_error_at:.3f}",
    }
    fields.update({f"{COUNTER_PREFIX}{name}": str(value) for name, value in heartbeat.counters.items()})
    fields.update({f"{GAUGE_PREFIX}{name}": str(value) for name, value in heartbeat.gauges.items()})
    return fields


def _number(text: str | None) -> float:
    try:
        number = float(text or 0)
    except ValueError:
        return 0.0
    return number if math.isfinite(number) else 0.0


def decode_heartbeat(fields: Mapping[bytes, bytes]) -> Heartbeat:
    """Never raises: a value that does not parse reads as unknown, so one bad field cannot hide the service."""
    values = {key.decode("utf-8", "replace"): value.decode("utf-8", "replace") for key, value in fields.items()}
    pid = values.get("pid", "")
    return Heartbeat(
        state=values.get("state", ""), pid=int(pid) if pid.isdigit() else 0, host=values.get("host", ""),
        started_at=_number(values.get("started_at")), heartbeat_at=_number(values.get("heartbeat_at")),
        last_error=values.get("last_error", ""), last_error_at=_number(values.get("last_error_at")),
        counters={name.removeprefix(COUNTER_PREFIX): int(_number(value))
                  for name, value in values.items() if name.startswith(COUNTER_PREFIX)},
        gauges={name.removeprefix(GAUGE_PREFIX): _number(value)
                for name, value in values.items() if name.startswith(GAUGE_PREFIX)},
    )  # fmt: skip


# --- exchange upgrades -------------------------------------------------------------------------------------


class ExchangeUpgrade(msgspec.Struct, frozen=True, kw_only=True):
    """An `Upgraded(address)` log of an exchange's proxy (ExchangeV3), a value of `chain:exchange_upgrades` under
    its `id` (`<block>-<log index>`). Times are unix seconds; `acknowledged_at` 0 until an operator acknowledges
    it (`python -m pipeline ack-upgrade`)."""

    proxy: str
    implementation: str
    block_number: int
    log_index: int
    tx_hash: str
    seen_at: float = 0.0
    acknowledged_at: float = 0.0

    @property
    def id(self) -> str:
        return f"{self.block_number}-{self.log_index}"


_exchange_upgrade_decoder = msgspec.json.Decoder(ExchangeUpgrade)


def encode_exchange_upgrade(upgrade: ExchangeUpgrade) -> bytes:
    return _encoder.encode(upgrade)


def decode_exchange_upgrade(data: bytes) -> ExchangeUpgrade:
    return _decode_or_poison(_exchange_upgrade_decoder, data, "exchange upgrade")
