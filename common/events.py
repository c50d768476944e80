"""The normalized order event of DESIGN §3: what both fill sources write to `stream:order_events`.

`id` is `<tx_hash>_<order_hash>` (the subgraph's own id), so the same fill seen by the Goldsky ingester and by
the chain ingester has the same id. Amounts and fees are integers in 6-decimal base units; asset ids are
decimal strings with "0" meaning USDC.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from common.errors import PoisonMessage

UINT64_MAX = 2**64 - 1


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    source: Literal["goldsky", "chain"]
    exchange: str  # lowercase contract address, "" when the source doesn't say
    block_number: int  # 0 when the source doesn't say (the subgraph)
    log_index: int | None
    tx_hash: str
    order_hash: str
    timestamp: int  # unix seconds (block time)
    maker: str
    taker: str
    maker_asset_id: str
    taker_asset_id: str
    maker_amount: int
    taker_amount: int
    fee: int


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
    except msgspec.DecodeError as exc:
        raise PoisonMessage(f"invalid order event: {exc}") from None
    validate_order_event(event)
    return event


def validate_order_event(event: OrderEvent) -> None:
    for name in ("maker_amount", "taker_amount", "fee", "block_number", "timestamp"):
        value = getattr(event, name)
        if not 0 <= value <= UINT64_MAX:
            raise PoisonMessage(f"invalid order event {event.id}: {name}={value} out of range")
    for name in ("maker_asset_id", "taker_asset_id"):
        if not getattr(event, name).isdigit():
            raise PoisonMessage(f"invalid order event {event.id}: {name} is not a decimal string")
    if (event.maker_asset_id == "0") == (event.taker_asset_id == "0"):
        raise PoisonMessage(f"invalid order event {event.id}: exactly one asset id must be '0' (USDC)")
    if event.id != fill_id(event.tx_hash, event.order_hash):
        raise PoisonMessage(f"invalid order event {event.id}: id is not <tx_hash>_<order_hash>")
