"""`OrderFilled` logs of every exchange -> OrderEvent, JSON-RPC error classification, range sizing. No I/O.

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
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

import msgspec
import orjson

from common import keys
from common.errors import PermanentSourceError, PoisonMessage, SourceError, TransientSourceError
from common.exchanges import BY_ADDRESS, EXCHANGES, TOPICS, V1_ABI
from common.payloads import (
    OrderEvent,
    encode_dead_letter,
    encode_valid_order_event,
    fill_id,
    validate_order_event,
)

RpcErrorKind = Literal["range", "transient", "permanent"]
# Messages public providers give when an eth_getLogs span or result set is too big (Infura, Alchemy, QuickNode,
# Ankr, Chainstack, polygon-rpc, Erigon/Geth caps).
RANGE_HINTS = (
    "block range",
    "range too large",
    "range is too large",
    "range is too wide",
    "range too wide",
    "query returned more than",
    "response size exceeded",
    "response size should not",
    "too many results",
    "too many logs",
    "limit exceeded",
    "exceed maximum block range",
    "exceeds max results",
    "is limited to",
)
RATE_HINTS = ("rate limit", "rate-limit", "too many requests", "request rate", "daily request", "capacity", "quota")
PERMANENT_CODES = frozenset({-32600, -32601, -32602, -32700})


def get_logs_filter(from_block: int, to_block: int) -> dict[str, Any]:
    return {
        "fromBlock": hex(from_block),
        "toBlock": hex(to_block),
        "address": [exchange.address for exchange in EXCHANGES],
        "topics": [list(TOPICS)],
    }


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


def classify_rpc_error(error: Mapping[str, Any]) -> RpcErrorKind:
    """A JSON-RPC `error` object -> what to do: shrink the range, retry later, or give up."""
    message = str(error.get("message", "")).lower()
    code = error.get("code")
    if any(hint in message for hint in RATE_HINTS):
        return "transient"
    if any(hint in message for hint in RANGE_HINTS):
        return "range"
    if code == -32005:  # Infura's "limit exceeded" family without a telling message
        return "range"
    return "permanent" if code in PERMANENT_CODES else "transient"


class RangeTooLarge(TransientSourceError):
    """The node refused an eth_getLogs span or result size; `error` is its JSON-RPC error object."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        super().__init__(f"eth_getLogs: range too large: {error.get('message')}")
        self.error = error


def rpc_result(reply: Any, method: str) -> Any:
    """A JSON-RPC response object -> its result, or the classified error."""
    if not isinstance(reply, dict) or ("result" not in reply and "error" not in reply):
        raise TransientSourceError(f"{method}: malformed JSON-RPC response")
    error = reply.get("error")
    if error is None:
        return reply["result"]
    error = error if isinstance(error, Mapping) else {"message": str(error)}
    kind = classify_rpc_error(error)
    if kind == "range":
        raise RangeTooLarge(error)
    text = f"{method}: RPC error {error.get('code')}: {str(error.get('message'))[:200]}"
    raise TransientSourceError(text) if kind == "transient" else PermanentSourceError(text)


def hex_quantity(value: Any, what: str) -> int:
    """A JSON-RPC quantity ("0x1a") -> int; anything else is a bad reply, worth asking again."""
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        raise TransientSourceError(f"{what}: expected a hex quantity, got {str(value)[:40]!r}") from None


def block_batch(blocks: Sequence[int]) -> list[dict[str, Any]]:
    """One batch POST body: eth_getBlockByNumber for each block, without transactions, id = block number."""
    return [{"jsonrpc": "2.0", "id": b, "method": "eth_getBlockByNumber", "params": [hex(b), False]} for b in blocks]


class _BlockHeader(msgspec.Struct):
    timestamp: Any = None  # checked by parse_block_batch, like the rest of the reply


class _BlockReply(msgspec.Struct):
    id: Any = None
    result: _BlockHeader | msgspec.UnsetType | None = msgspec.UNSET
    error: Any = msgspec.UNSET


_block_batch_decoder = msgspec.json.Decoder(list[_BlockReply])


def decode_block_batch(content: bytes) -> Any:
    """A batch reply body -> the replies with only what parse_block_batch reads of a block (its timestamp): one
    msgspec pass skips the rest of each header and its transaction hashes, which orjson built into dicts (5.6 ms per
    1,000 blocks against 1.0). A reply of any other shape (one error for the whole batch, a result that is not an
    object) comes back as plain JSON; invalid JSON raises ValueError, which `request_json` retries."""
    try:
        replies = _block_batch_decoder.decode(content)
    except msgspec.ValidationError:
        return orjson.loads(content)
    return [_reply_fields(reply) for reply in replies]


def _reply_fields(reply: _BlockReply) -> dict[str, Any]:
    """A reply as the JSON object parse_block_batch reads; a field the node left out stays out."""
    fields: dict[str, Any] = {"id": reply.id}
    if reply.result is not msgspec.UNSET:
        fields["result"] = None if reply.result is None else {"timestamp": reply.result.timestamp}
    if reply.error is not msgspec.UNSET:
        fields["error"] = reply.error
    return fields


def parse_block_batch(replies: Any, blocks: Sequence[int]) -> tuple[dict[int, int], list[SourceError]]:
    """A batch reply -> (timestamp per block that came back, one error per block that didn't)."""
    if not isinstance(replies, list):  # one error for the whole batch (e.g. batches not allowed)
        rpc_result(replies, "eth_getBlockByNumber batch")
        raise TransientSourceError("eth_getBlockByNumber batch: expected a JSON array")
    by_id = {reply.get("id"): reply for reply in replies if isinstance(reply, dict)}
    timestamps: dict[int, int] = {}
    failures: list[SourceError] = []
    for number in blocks:
        try:
            block = rpc_result(by_id.get(number), "eth_getBlockByNumber")
            if not isinstance(block, Mapping):
                raise TransientSourceError(f"eth_getBlockByNumber: block {number} not available")
            timestamps[number] = hex_quantity(block.get("timestamp"), "eth_getBlockByNumber timestamp")
        except SourceError as exc:
            failures.append(exc)
    return timestamps, failures


def suggested_span(error: Mapping[str, Any], from_block: int) -> int | None:
    """The span a provider suggests in its error (Infura's `data: {from, to}`), when it does."""
    data = error.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("to"), str):
        try:
            to_block = int(data["to"], 16)
        except ValueError:
            return None
        return to_block - from_block + 1 if to_block >= from_block else None
    return None


@dataclass
class SpanSizer:
    """Blocks per eth_getLogs call: doubles while calls go through, shrinks on a range-too-large error.

    The smallest span that failed caps growth (so the size doesn't oscillate around a provider's limit) until
    `forget_after` calls in a row succeed; dense stretches of chain fail by result count, not span, and pass.
    """

    span: int
    max_span: int
    forget_after: int = 50
    ceiling: int | None = None
    successes: int = 0

    def succeeded(self) -> None:
        self.successes += 1
        if self.ceiling is not None and self.successes >= self.forget_after:
            self.ceiling = None
        limit = self.max_span if self.ceiling is None else min(self.max_span, self.ceiling - 1)
        self.span = max(1, min(limit, self.span * 2))

    def too_large(self, error: Mapping[str, Any], from_block: int, tried_span: int) -> None:
        """Shrink below `tried_span`: to the provider's own hint when it gives one, else to half."""
        self.successes = 0
        self.ceiling = tried_span if self.ceiling is None else min(self.ceiling, tried_span)
        hint = suggested_span(error, from_block)
        self.span = hint if hint is not None and 0 < hint < tried_span else max(1, tried_span // 2)
