"""The normalized order event of DESIGN §3: what both fill sources write to `stream:order_events`.

`id` is `<tx_hash>_<order_hash>` (the subgraph's own id), so the same fill seen by the Goldsky ingester and by
the chain ingester has the same id. Amounts and fees are integers in 6-decimal base units; asset ids are
decimal strings with "0" meaning USDC.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from common.errors import PoisonMessage

UINT64_MAX = 2**64 - 1

# Type, sign and shape checks run inside msgspec's decoder (C), not per field in Python: this is the hot path.
# (msgspec cannot bound an int above int64, so the upper bound is checked in check_order_event.)
UInt64 = Annotated[int, msgspec.Meta(ge=0)]
AssetId = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,78}$")]


_UINT64_FIELDS = ("maker_amount", "taker_amount", "fee", "block_number", "timestamp")


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    source: Literal["goldsky", "chain"]
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


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(OrderEvent)


def fill_id(tx_hash: str, order_hash: str) -> str:
    return f"{tx_hash.lower()}_{order_hash.lower()}"


def encode_order_event(event: OrderEvent) -> bytes:
    return _encoder.encode(event)


def decode_order_event(data: bytes) -> OrderEvent:
    """Decode and validate; anything malformed raises PoisonMessage with the reason."""
    try:
        event = _decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError included: types, ranges, asset id shape
        raise PoisonMessage(f"invalid order event: {exc}") from None
    check_order_event(event)
    return event


def encode_valid_order_event(event: OrderEvent) -> bytes:
    """The bytes to append for an event built in Python (the ingesters), validated on those very bytes by the
    decoder's checks and then the rules: one encode, whatever is found raises PoisonMessage."""
    data = _encoder.encode(event)
    try:
        _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise PoisonMessage(f"invalid order event {event.id}: {exc}") from None
    check_order_event(event)
    return data


def validate_order_event(event: OrderEvent) -> None:
    """Full validation of an event built in Python, when its bytes are not needed."""
    encode_valid_order_event(event)


def check_order_event(event: OrderEvent) -> None:
    """The rules no type can say: exactly one asset is USDC, and the id is `<tx_hash>_<order_hash>`."""
    if max(event.maker_amount, event.taker_amount, event.fee, event.block_number, event.timestamp) > UINT64_MAX:
        too_big = [name for name in _UINT64_FIELDS if getattr(event, name) > UINT64_MAX]
        raise PoisonMessage(f"invalid order event {event.id}: {', '.join(too_big)} beyond UInt64")
    if (event.maker_asset_id == "0") == (event.taker_asset_id == "0"):
        raise PoisonMessage(f"invalid order event {event.id}: exactly one asset id must be '0' (USDC)")
    if event.id != f"{event.tx_hash}_{event.order_hash}":
        raise PoisonMessage(f"invalid order event {event.id}: id is not <tx_hash>_<order_hash>")
