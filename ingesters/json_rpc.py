"""Polygon JSON-RPC, the parts every caller shares (the chain ingester's `Node`, `pipeline doctor`, `verify`).

Requests and replies as plain values, no I/O: a reply's result or its classified error (`rpc_result`: a range the
node refuses raises `RangeTooLarge`, a rate limit or a node hiccup `TransientSourceError`, a request it can never
answer `PermanentSourceError`), hex quantities, the batched `eth_getBlockByNumber` body and its reply, and the
adaptive `eth_getLogs` span (`SpanSizer`). Providers' limits: docs/upstream.md §5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import orjson

from common.errors import PermanentSourceError, SourceError, TransientSourceError

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
