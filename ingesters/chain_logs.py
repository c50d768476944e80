"""`OrderFilled` logs of every exchange -> OrderEvent: the eth_getLogs query and the decoding of its reply. No I/O.

The exchanges, their families and ABIs are `common.exchanges.EXCHANGES`; a log is decoded with the ABI of the
exchange that emitted it (ExchangeV3 shares CLOB v2's, and its `tokenId` is a position id). ABIs (docs/upstream.md §4):
    v1 OrderFilled(bytes32 indexed orderHash, address indexed maker, address indexed taker, uint256 makerAssetId,
                   uint256 takerAssetId, uint256 makerAmountFilled, uint256 takerAmountFilled, uint256 fee)
    v2 OrderFilled(bytes32 indexed orderHash, address indexed maker, address indexed taker, uint8 side,
                   uint256 tokenId, uint256 makerAmountFilled, uint256 takerAmountFilled, uint256 fee,
                   bytes32 builder, bytes32 metadata)
v2 maps to the v1 shape by the maker order's side: BUY(0) -> maker pays USDC ("0") for tokenId; SELL(1) -> the
reverse. The fill id is `<tx_hash>_<order_hash>`, the subgraph's, so both sources agree on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import msgspec
import orjson

from common import keys
from common.errors import PoisonMessage
from common.exchanges import BY_ADDRESS, EXCHANGES, TOPICS, V1_ABI
from common.payloads import (
    OrderEvent,
    encode_dead_letter,
    encode_valid_order_event,
    fill_id,
    validate_order_event,
)


def get_logs_filter(from_block: int, to_block: int, topics: Sequence[str] | None = TOPICS) -> dict[str, Any]:
    """Every exchange's logs whose topic0 is one of `topics` (the fills by default; None: every log)."""
    flt: dict[str, Any] = {"fromBlock": hex(from_block), "toBlock": hex(to_block),
                           "address": [exchange.address for exchange in EXCHANGES]}  # fmt: skip
    if topics is not None:
        flt["topics"] = [list(topics)]
    return flt


def _hex_int(value: Any, name: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise PoisonMessage(f"log field {name}={value!r} is not a hex quantity")
    return int(value, 16)


def _topic_address(topic: str) -> str:
    if len(topic) != 66:
        raise PoisonMessage(f"address topic {topic!r} is not 32 bytes")
    return "0x" + topic[-40:].lower()


def decode_data_words(data: Any, count: int) -> list[int]:
    """The first `count` 32-byte words of a log's hex `data` as unsigned integers (the ABI's static head: every
    OrderFilled field that is not indexed is one word); PoisonMessage when the data is not hex or too short. Read
    with int.from_bytes, not eth-abi (a third of the ingester's CPU); eth-abi checks it in the tests."""
    try:
        raw = bytes.fromhex(str(data).removeprefix("0x"))
    except ValueError as exc:
        raise PoisonMessage(f"undecodable log data ({exc})") from None
    if len(raw) < 32 * count:
        raise PoisonMessage(f"undecodable log data ({len(raw)} bytes, expected {32 * count})")
    return list(map(int.from_bytes, _word_getter(count)(raw)))  # big-endian, Python 3.11's default


@functools.cache
def _word_getter(count: int) -> Callable[[bytes], tuple[bytes, ...]]:
    """The first `count` words of data cut in one C call: a comprehension of slices cost twice as much per log."""
    slices = [slice(i, i + 32) for i in range(0, 32 * count, 32)]
    if count == 1:  # itemgetter of one item returns it bare, not in a tuple
        return lambda raw: (raw[slices[0]],)
    return itemgetter(*slices)


class ChainLog(msgspec.Struct, rename="camel", gc=False):
    """One eth_getLogs entry: the fields a fill is read from, and the rest of a standard log so a dead letter
    carries it whole. Decoded straight from the reply (`decode_logs_reply`): no dict per log, and never tracked by
    the garbage collector (its fields are text, a tuple of text and a bool: no cycle), whose passes over 6,000 dicts
    per range were a tenth of the ingester's CPU."""

    address: str
    topics: tuple[str, ...]
    data: str
    block_number: str
    transaction_hash: str
    log_index: str
    removed: bool = False
    block_timestamp: str | None = None  # newer nodes add the block's timestamp to each log
    block_hash: str | None = None
    transaction_index: str | None = None


class _LogsReply(msgspec.Struct):
    jsonrpc: Any = None
    id: Any = None
    result: list[ChainLog] | msgspec.UnsetType = msgspec.UNSET
    error: Any = msgspec.UNSET


_logs_reply_decoder = msgspec.json.Decoder(_LogsReply)


def decode_logs_reply(content: bytes) -> Any:
    """An eth_getLogs reply body -> the JSON-RPC object with its `result` as ChainLogs, in one msgspec pass (3x
    faster than orjson's dicts). A reply of any other shape (an error, an item that is no standard log) comes back
    as plain JSON, whose items `as_chain_log` reads one by one; invalid JSON raises ValueError, which
    `request_json` retries."""
    try:
        reply = _logs_reply_decoder.decode(content)
    except msgspec.ValidationError:
        return orjson.loads(content)
    fields: dict[str, Any] = {"jsonrpc": reply.jsonrpc, "id": reply.id}
    for name in ("result", "error"):
        if (value := getattr(reply, name)) is not msgspec.UNSET:
            fields[name] = value
    return fields


# How Node.call decodes a method's reply when it knows the shape (others: orjson).
REPLY_DECODERS = {"eth_getLogs": decode_logs_reply}


def as_chain_log(raw: Any) -> ChainLog:
    """An eth_getLogs item as a ChainLog: typed items as they are, a plain JSON one checked field by field
    (PoisonMessage naming what is wrong)."""
    if type(raw) is ChainLog:
        return raw
    try:
        return msgspec.convert(raw, ChainLog)
    except msgspec.ValidationError as exc:
        raise PoisonMessage(f"malformed log: {exc}") from None


def decode_order_filled(log: ChainLog | Mapping[str, Any], timestamp: int) -> OrderEvent:
    """One eth_getLogs entry (v1 or v2 OrderFilled) + its block timestamp -> validated OrderEvent, or PoisonMessage."""
    event = build_order_filled(as_chain_log(log), timestamp)
    validate_order_event(event)
    return event


def build_order_filled(log: ChainLog, timestamp: int) -> OrderEvent:
    """The OrderEvent fields of a log, decoded but not validated yet (malformed log: PoisonMessage)."""
    address, topics = log.address.lower(), log.topics
    exchange = BY_ADDRESS.get(address)
    if exchange is None:
        raise PoisonMessage(f"log of {address}, which is not an exchange of common.exchanges")
    if len(topics) != 4 or topics[0].lower() != exchange.abi.topic:
        raise PoisonMessage(f"not an OrderFilled log of {exchange.name} (topics {topics[:1]}, {len(topics)} topics)")
    words = decode_data_words(log.data, len(exchange.abi.data_types))
    if exchange.abi is V1_ABI:
        maker_asset, taker_asset, maker_amount, taker_amount, fee = words
    else:  # the trailing bytes32 builder and metadata are not needed, but must be there
        side, token_id, maker_amount, taker_amount, fee, _builder, _metadata = words
        if side not in (0, 1):  # the whole word: a uint8 with non-zero padding is no side either
            raise PoisonMessage(f"v2 OrderFilled with side {side} (expected BUY=0 or SELL=1)")
        maker_asset, taker_asset = (0, token_id) if side == 0 else (token_id, 0)
    tx_hash, order_hash = log.transaction_hash.lower(), topics[1].lower()
    return OrderEvent(
        id=fill_id(tx_hash, order_hash),
        source="chain",
        exchange=address,
        block_number=_hex_int(log.block_number, "blockNumber"),
        log_index=_hex_int(log.log_index, "logIndex"),
        tx_hash=tx_hash,
        order_hash=order_hash,
        timestamp=timestamp,
        maker=_topic_address(topics[2]),
        taker=_topic_address(topics[3]),
        maker_asset_id=str(maker_asset),
        taker_asset_id=str(taker_asset),
        maker_amount=maker_amount,
        taker_amount=taker_amount,
        fee=fee,
    )


def _typed_logs(logs: Sequence[Any]) -> tuple[list[ChainLog], list[tuple[Any, PoisonMessage]]]:
    """Items -> (the ChainLogs, (item, reason) of every item that is no log)."""
    typed, malformed = [], []
    for raw in logs:
        try:
            typed.append(as_chain_log(raw))
        except PoisonMessage as exc:
            malformed.append((raw, exc))
    return typed, malformed


def blocks_needing_timestamps(logs: Sequence[Any]) -> set[int]:
    """Blocks of `logs` whose timestamp the logs don't carry (newer nodes add `blockTimestamp` to each log)."""
    typed, _ = _typed_logs(logs)
    needed: set[int] = set()
    carried: set[int] = set()
    for log in typed:
        block = log_position(log)[0]
        if block >= 0:
            (needed if log.block_timestamp is None else carried).add(block)
    return needed - carried


def normalize_logs(logs: Sequence[Any], timestamps: Mapping[int, int]) -> tuple[list[bytes], list[bytes]]:
    """Logs (ChainLogs or plain JSON items, any order) -> (encoded events in (block, log index) order, `stream:dlq`
    entries with the reason)."""
    typed, malformed = _typed_logs(logs)
    entries = []
    dead = [encode_dead_letter(stream=keys.STREAM_ORDER_EVENTS, payload=orjson.dumps(raw, default=str), error=str(exc))
            for raw, exc in malformed]  # fmt: skip
    for (block, _), log in sorted(((log_position(log), log) for log in typed), key=itemgetter(0)):
        if log.removed:
            continue  # a reorged-out log; finalized ranges don't have them
        try:
            stamp = log.block_timestamp
            timestamp = int(stamp, 16) if stamp is not None else timestamps.get(block)
            if timestamp is None:
                raise PoisonMessage(f"no timestamp for block {block}")
            entries.append(encode_valid_order_event(build_order_filled(log, timestamp)))
        except (PoisonMessage, ValueError) as exc:
            dead.append(encode_dead_letter(stream=keys.STREAM_ORDER_EVENTS, payload=msgspec.json.encode(log),
                                           error=str(exc)))  # fmt: skip
    return entries, dead


def log_position(log: ChainLog) -> tuple[int, int]:
    """(block, log index) for ordering; a log without them sorts first (and is dead-lettered on decode)."""
    try:
        return (int(log.block_number, 16), int(log.log_index, 16))
    except ValueError:
        return (-1, -1)
