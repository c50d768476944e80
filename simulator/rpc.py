"""Polygon JSON-RPC stand-in: eth_chainId, eth_blockNumber, eth_getBlockByNumber, eth_getLogs (+ a few trivia).

Error shapes mimic public providers:
- span over `max_block_range`: `{"code": -32005, "message": "block range is too large (max 2000 blocks)"}`
  (Polygon public RPCs / Alchemy-style cap on the block span);
- more than `max_logs` matching logs: Infura's `{"code": -32005, "message": "query returned more than 10000
  results. Try with this block range [0x…, 0x…].", "data": {"from": "0x…", "to": "0x…"}}`;
- unknown method -32601, bad params -32602, parse error -32700, injected faults -32603 / -32000.
`toBlock` past the head is clamped to the head; `fromBlock > toBlock` is -32602 "invalid block range params".
Switches: `finalized_tag_off` answers the `finalized`/`safe` tags as a node that predates them does (geth's
"invalid argument 0: hex string without 0x prefix"); `exchange_v3_logs_off` leaves ExchangeV3's logs out;
`logs_block_timestamp`, `logs_bare`, `logs_checksum` pick the real item shapes of `simulator.logs.LogShape`.
Logs planted beside the fills (`simulator.planted`: an ExchangeV3 `Upgraded`) are served in the same shape, and
eth_getStorageAt answers ExchangeV3's ERC-1967 implementation slot (zero for any other slot or address).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from eth_hash.auto import keccak

from simulator.constants import (
    CHAIN_ID,
    EXCHANGE_ADDRESSES,
    EXCHANGE_CODE_BY_ADDRESS,
    EXCHANGE_V3,
    V1_TOPIC,
    V2_TOPIC,
    block_hash,
)
from simulator.logs import LogRenderer, LogShape
from simulator.planted import IMPLEMENTATION_SLOT, PlantedLog, word
from simulator.world import World


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_json(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class RpcService:
    """Evaluates JSON-RPC calls against a world; `stalled()` says whether `finalized` is frozen."""

    def __init__(self, world: World, stalled: Callable[[], bool]) -> None:
        self.world = world
        self.stalled = stalled
        self.renderer = LogRenderer(world)
        self.methods: dict[str, Callable[[list[Any]], Any]] = {
            "eth_chainId": lambda _: hex(CHAIN_ID),
            "net_version": lambda _: str(CHAIN_ID),
            "web3_clientVersion": lambda _: "bor/v2.0.0-polymarket-simulator",
            "eth_syncing": lambda _: False,
            "eth_blockNumber": lambda _: hex(self.world.head_block),
            "eth_getBlockByNumber": self.get_block_by_number,
            "eth_getLogs": self.get_logs,
            "eth_getStorageAt": self.get_storage_at,
        }

    def call(self, request: Any, inject_error: Callable[[], bool]) -> dict[str, Any] | None:
        """One JSON-RPC request object -> response object (None for a notification)."""
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or "method" not in request:
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
        req_id = request.get("id")
        try:
            if inject_error():
                raise RpcError(-32603, "internal error (simulated upstream failure)")
            method = self.methods.get(request["method"])
            if method is None:
                raise RpcError(-32601, f"the method {request['method']} does not exist/is not available")
            params = request.get("params", [])
            if not isinstance(params, list):
                raise RpcError(-32602, "invalid params: expected an array")
            result = method(params)
        except RpcError as exc:
            return {"jsonrpc": "2.0", "id": req_id, "error": exc.to_json()}
        if "id" not in request:
            return None
        return {"jsonrpc": "2.0", "id": req_id, "result": result}

    # --- blocks ------------------------------------------------------------------------------------------
    def resolve_block(self, tag: Any) -> int:
        head = self.world.head_block
        if tag in (None, "latest", "pending"):
            return head
        if tag in ("finalized", "safe") and self.world.config.faults.finalized_tag_off:
            raise RpcError(-32602, "invalid argument 0: hex string without 0x prefix")
        if tag == "finalized":
            return self.world.finalized_block(self.stalled())
        if tag == "safe":
            return max(self.world.finalized_block(self.stalled()), head - self.world.config.finalized_lag_blocks // 2)
        if tag == "earliest":
            return 0
        if isinstance(tag, str) and tag.startswith("0x"):
            try:
                return int(tag, 16)
            except ValueError:
                pass
        raise RpcError(-32602, f"invalid argument: hex string or block tag expected, got {tag!r}")

    def get_block_by_number(self, params: list[Any]) -> dict[str, Any] | None:
        if not params:
            raise RpcError(-32602, "missing value for required argument 0")
        number = self.resolve_block(params[0])
        full = bool(params[1]) if len(params) > 1 else False
        if number > self.world.head_block or number < 0:
            return None
        blocks = self.world.col("block")
        lo, hi = np.searchsorted(blocks, [number, number + 1])
        groups = self.world.col("group")[lo:hi]
        first = np.unique(groups, return_index=True)[1] + lo
        tx_hashes = self.world.tx_hashes(first)
        transactions: list[Any] = tx_hashes
        if full:
            transactions = [
                {
                    "hash": h,
                    "blockNumber": hex(number),
                    "transactionIndex": hex(i),
                    "input": "0x",
                    "value": "0x0",
                    "to": self.world.address_hex(self.world.col("taker")[[j]])[0],
                    "type": "0x2",
                }
                for i, (h, j) in enumerate(
                    zip(tx_hashes, (first + np.diff(np.append(first, hi)) - 1).tolist(), strict=True)
                )
            ]
        seed = self.world.seed
        return {
            "number": hex(number),
            "hash": block_hash(seed, number),
            "parentHash": block_hash(seed, number - 1),
            "timestamp": hex(self.world.block_time(number)),
            "transactions": transactions,
            "uncles": [],
            "miner": "0x0000000000000000000000000000000000000000",
            "difficulty": "0x1",
            "totalDifficulty": "0x0",
            "gasLimit": hex(45_000_000),
            "gasUsed": hex(21_000 * len(tx_hashes)),
            "baseFeePerGas": "0x6fc23ac00",
            "extraData": "0x",
            "nonce": "0x0000000000000000",
            "size": hex(1_000 + 500 * len(tx_hashes)),
            "logsBloom": "0x" + "0" * 512,
            "sha3Uncles": "0x" + "0" * 64,
            "stateRoot": "0x" + "0" * 64,
            "receiptsRoot": "0x" + "0" * 64,
            "transactionsRoot": "0x" + "0" * 64,
            "mixHash": "0x" + "0" * 64,
        }

    # --- logs ----------------------------------------------------------------------------------------------
    def get_logs(self, params: list[Any]) -> orjson.Fragment:
        if not params or not isinstance(params[0], dict):
            raise RpcError(-32602, "invalid params: expected a filter object")
        flt = params[0]
        if "blockHash" in flt:
            raise RpcError(-32602, "blockHash filters are not supported by the simulator")
        from_block = self.resolve_block(flt.get("fromBlock", "latest"))
        to_block = min(self.resolve_block(flt.get("toBlock", "latest")), self.world.head_block)
        if from_block > to_block:
            if from_block > self.world.head_block:
                return []
            raise RpcError(-32602, "invalid block range params")
        max_range = self.world.config.max_block_range
        if to_block - from_block + 1 > max_range:
            raise RpcError(-32005, f"block range is too large (max {max_range} blocks)")
        blocks = self.world.col("block")
        lo, hi = (int(x) for x in np.searchsorted(blocks, [from_block, to_block + 1]))
        idx = np.arange(lo, hi)
        mask = self._filter_mask(flt, idx)
        if mask is not None:
            idx = idx[mask]
        max_logs = self.world.config.max_logs
        if len(idx) > max_logs:
            cut_block = int(blocks[idx[max_logs]])
            to_hint = max(from_block, cut_block - 1)
            raise RpcError(
                -32005,
                f"query returned more than {max_logs} results. Try with this block range "
                f"[{hex(from_block)}, {hex(to_hint)}].",
                {"from": hex(from_block), "to": hex(to_hint)},
            )
        faults = self.world.config.faults
        shape = LogShape(faults.logs_block_timestamp, faults.logs_bare, faults.logs_checksum)
        planted = [p for p in self.world.planted.between(from_block, to_block) if _planted_matches(p, flt)]
        if not planted:
            return orjson.Fragment(self.renderer.render_json(idx, shape))
        logs = orjson.loads(self.renderer.render_json(idx, shape)) + [
            _render_planted(p, shape, block_hash(self.world.seed, p.block)) for p in planted
        ]
        return orjson.Fragment(orjson.dumps(sorted(logs, key=lambda x: (int(x["blockNumber"], 16),
                                                                        int(x["logIndex"], 16)))))  # fmt: skip

    def get_storage_at(self, params: list[Any]) -> str:
        if len(params) < 2 or not isinstance(params[0], str) or not isinstance(params[1], str):
            raise RpcError(-32602, "invalid params: expected [address, slot, block]")
        block = self.resolve_block(params[2] if len(params) > 2 else "latest")
        try:
            slot = int(params[1], 16)
        except ValueError:
            raise RpcError(-32602, f"invalid argument 1: hex string expected, got {params[1]!r}") from None
        if params[0].lower() == EXCHANGE_ADDRESSES[EXCHANGE_V3] and slot == IMPLEMENTATION_SLOT:
            return word(self.world.planted.implementation_at(block))
        return "0x" + "0" * 64

    def _filter_mask(self, flt: dict[str, Any], idx: np.ndarray) -> np.ndarray | None:
        mask: np.ndarray | None = None

        def both(m: np.ndarray) -> None:
            nonlocal mask
            mask = m if mask is None else (mask & m)

        exchange = self.world.col("exchange")[idx]
        if self.world.config.faults.exchange_v3_logs_off:
            both(exchange != EXCHANGE_V3)
        address = flt.get("address")
        if address:
            addresses = [address] if isinstance(address, str) else list(address)
            codes = [EXCHANGE_CODE_BY_ADDRESS[a.lower()] for a in addresses if a.lower() in EXCHANGE_CODE_BY_ADDRESS]
            both(np.isin(exchange, codes))
        topics = flt.get("topics") or []
        if not isinstance(topics, list) or len(topics) > 4:
            raise RpcError(-32602, "invalid topics filter")
        for position, wanted in enumerate(topics):
            if wanted is None:
                continue
            values = {wanted.lower()} if isinstance(wanted, str) else {str(v).lower() for v in wanted}
            both(self._topic_mask(position, values, idx, exchange))
        return mask

    def _topic_mask(self, position: int, values: set[str], idx: np.ndarray, exchange: np.ndarray) -> np.ndarray:
        if position == 0:
            versions = [v for v, topic in ((0, V1_TOPIC), (1, V2_TOPIC)) if topic in values]
            return np.isin(exchange >= 2, [bool(v) for v in versions])
        if position == 1:
            return np.array([h in values for h in self.world.order_hashes(idx)], bool)
        column = self.world.col("maker" if position == 2 else "taker")[idx]
        renderer = self.renderer
        codes = {c for c in np.unique(column).tolist() if renderer.address_topic(c) in values}
        return np.isin(column, list(codes))


def _planted_matches(planted: PlantedLog, flt: dict[str, Any]) -> bool:
    """A planted log against an eth_getLogs filter's `address` and `topics` (a null position matches anything)."""
    address = flt.get("address")
    if address:
        wanted = {address.lower()} if isinstance(address, str) else {str(a).lower() for a in address}
        if planted.address not in wanted:
            return False
    for position, values in enumerate(flt.get("topics") or []):
        if values is None:
            continue
        options = {values.lower()} if isinstance(values, str) else {str(v).lower() for v in values}
        if position >= len(planted.topics) or planted.topics[position] not in options:
            return False
    return True


def _render_planted(planted: PlantedLog, shape: LogShape, hash_of_block: str) -> dict[str, Any]:
    log: dict[str, Any] = {"address": shape.address(planted.address), "topics": list(planted.topics),
                           "data": planted.data}  # fmt: skip
    log.update(orjson.loads("{" + shape.envelope(planted.block, hash_of_block) + "}"))
    log["transactionHash"] = "0x" + keccak(f"planted:{planted.block}:{planted.log_index}".encode()).hex()
    if not shape.bare:
        log["transactionIndex"] = "0x0"
    log["logIndex"] = hex(planted.log_index)
    if not shape.bare:
        log["removed"] = False
    return log
