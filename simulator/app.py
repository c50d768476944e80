"""The ASGI app: routes the three upstream APIs and the `/_sim` control plane on one port.

    GET  /gamma/markets, /gamma/markets/keyset, /gamma/markets/{id}, /gamma/events, ...   (GAMMA_API_URL=/gamma)
    POST /goldsky/subgraphs/orderbook-subgraph/0.0.1/gn                                     (GOLDSKY_URL)
    POST /rpc                                                                               (POLYGON_RPC_URL)
    GET  /data-api/v2/trades                                                                (DATA_API_URL=/data-api)
    GET  /_sim/truth[?fills=0&offset=&limit=&fields=], GET/POST /_sim/config, GET /_sim/health

A plain ASGI callable (no framework routing) keeps the hot path short; bodies are orjson bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson

from simulator.chain_state import load_chain_state
from simulator.config import SimConfig, parse_fault_changes, parse_faults
from simulator.constants import DATA_API_PREFIX, GAMMA_PREFIX, GOLDSKY_PATH, RPC_PATH
from simulator.data_api import DataApiService
from simulator.faults import FaultInjector, error_response
from simulator.gamma import GammaService
from simulator.goldsky import GoldskyService
from simulator.live import LiveClock
from simulator.rpc import RpcService
from simulator.truth import FILL_FIELDS, truth_json_chunks, truth_summary
from simulator.world import World

log = logging.getLogger("simulator")
JSON = [(b"content-type", b"application/json")]


class SimulatedDrop(Exception):
    """Raised after a partial body so the server closes the connection mid-response."""


class SimulatorApp:
    def __init__(self, world: World) -> None:
        self.world = world
        self.config: SimConfig = world.config
        self.faults = FaultInjector(self.config.faults, world.seed)
        self.gamma = GammaService(world)
        self.goldsky = GoldskyService(world)
        self.rpc = RpcService(world, stalled=lambda: self.config.faults.finalized_stall)
        self.data_api = DataApiService(world)
        self.planted_fills: list[str] = []  # fills the Data API serves wrong on purpose (their ids)
        self.clock = LiveClock(world)
        self.requests: dict[str, int] = {"gamma": 0, "goldsky": 0, "rpc": 0, "data_api": 0, "sim": 0}
        self._clock_task: asyncio.Task[None] | None = None

    # --- ASGI -------------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path.startswith(GAMMA_PREFIX + "/") and method == "GET":
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            await self._serve("gamma", send, lambda: self.gamma.handle(path[len(GAMMA_PREFIX) :], query))
        elif path.startswith(DATA_API_PREFIX + "/") and method == "GET":
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            await self._serve("data_api", send, lambda: self.data_api.handle(path[len(DATA_API_PREFIX) :], query))
        elif path.rstrip("/") == GOLDSKY_PATH and method == "POST":
            body = await _read_body(receive)
            await self._serve("goldsky", send, lambda: self._goldsky(body))
        elif path.rstrip("/") == RPC_PATH and method == "POST":
            body = await _read_body(receive)
            await self._serve("rpc", send, lambda: self._rpc(body))
        elif path.startswith("/_sim/"):
            self.requests["sim"] += 1
            if path == "/_sim/truth" and method == "GET":
                await self._stream_truth(send, dict(parse_qsl(scope["query_string"].decode("latin-1"))))
                return
            body = await _read_body(receive) if method == "POST" else b""
            status, payload = self._control(path, method, body)
            await _respond(send, status, orjson.dumps(payload), JSON)
        else:
            await _respond(send, 404, b'{"error":"not found"}', JSON)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                self._clock_task = asyncio.get_running_loop().create_task(self.clock.run())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._clock_task is not None:
                    self._clock_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._clock_task
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> None:
        """Warm the lazy indexes, continue the chain a previous run left (if it kept one), mark history visible."""
        _ = self.world.goldsky_ts_order, self.world.goldsky_id_order, self.goldsky.sorted_timestamps
        _ = self.rpc.renderer.token_words, self.rpc.renderer.wallet_topics
        if self.clock.state_path is not None and (state := load_chain_state(self.clock.state_path)) is not None:
            self.world.resume(state)
            log.info("continuing the chain of the previous run from block %d", state.head_block)
        self.world.start()

    async def _serve(self, scope: str, send: Any, produce: Any) -> None:
        self.requests[scope] += 1
        plan = self.faults.plan(scope)
        if plan.delay_s > 0:
            await asyncio.sleep(plan.delay_s)
        if plan.hang:
            await asyncio.sleep(self.config.faults.timeout_s)
            await _drop(send, b"")
        if plan.status is not None:
            body, headers = error_response(scope, plan.status, self.config.faults.retry_after_s)
            await _respond(send, plan.status, body, headers)
            return
        if plan.api_error and scope == "goldsky":
            status, body = 200, self.faults.graphql_error_body()
        else:
            status, payload = produce()
            body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        if plan.drop:
            await _drop(send, body[: len(body) // 2])
        if plan.truncate:
            body = self.faults.truncate(body)
        await _respond(send, status, body, JSON)

    def _goldsky(self, body: bytes) -> tuple[int, Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, {"errors": [{"message": "The request body is not valid JSON"}]}
        return 200, self.goldsky.execute(payload)

    def _rpc(self, body: bytes) -> tuple[int, Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 200, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
        if isinstance(payload, list):
            if not payload:
                return 200, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "empty batch"}}
            responses = [self.rpc.call(item, self.faults.rpc_error_hit) for item in payload]
            return 200, [r for r in responses if r is not None]
        response = self.rpc.call(payload, self.faults.rpc_error_hit)
        return 200, response if response is not None else b""

    # --- control plane ----------------------------------------------------------------------------------
    def _control(self, path: str, method: str, body: bytes) -> tuple[int, Any]:
        if path == "/_sim/health":
            return 200, {"ok": True, "head_block": self.world.head_block, "fills": self.world.count}
        if path == "/_sim/config":
            if method == "POST":
                try:
                    self.apply_changes(orjson.loads(body or b"{}"))
                except (ValueError, TypeError, KeyError) as exc:
                    return 400, {"error": str(exc)}
            return 200, self.describe()
        return 404, {"error": "not found"}

    async def _stream_truth(self, send: Any, query: dict[str, str]) -> None:
        """GET /_sim/truth?fills=0|1&offset=N&limit=N&fields=id,first_visible_at — fills streamed in chunks."""
        try:
            offset, limit = int(query.get("offset", 0)), int(query["limit"]) if "limit" in query else None
            fields = tuple(f for f in query.get("fields", "").split(",") if f) or FILL_FIELDS
            if not set(fields) <= set(FILL_FIELDS):
                raise ValueError(f"unknown truth fields {sorted(set(fields) - set(FILL_FIELDS))}")
            summary = truth_summary(self.world, self.config.faults.finalized_stall)
            count = self.world.count  # fixed now: live blocks appended while streaming are not included
            chunks = (
                truth_json_chunks(self.world, summary, offset, count - offset if limit is None else limit, fields)
                if query.get("fills", "1") not in ("0", "false")
                else None
            )
            first = next(chunks) if chunks is not None else orjson.dumps(summary)
        except ValueError as exc:
            await _respond(send, 400, orjson.dumps({"error": str(exc)}), JSON)
            return
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": first, "more_body": chunks is not None})
        for chunk in chunks or ():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0)
        if chunks is not None:
            await send({"type": "http.response.body", "body": b""})

    def describe(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "rate": self.clock.rate,
            "head_block": self.world.head_block,
            "fills": self.world.count,
            "requests": dict(self.requests),
            "faults_injected": dict(self.faults.injected),
            "live_blocks_produced": self.world.live_blocks_produced,
            "market_updates": self.clock.market_updates,
            "planted_logs": len(self.world.planted.logs),
            "data_api_discrepancies": list(self.planted_fills),
            "now": time.time(),
        }

    def apply_changes(self, changes: dict[str, Any]) -> None:
        """POST /_sim/config: {"rate": N, "faults": {...} | "429=0.1,...", "reset_faults": true,
        "list_late_markets": true, "plant_upgrade": {"block": N, "implementation": "0x…"}, "plant_log": {"block":
        N, "address": "0x…", "topics": [...], "data": "0x…"}, "data_api_discrepancy": {"market_id": "…", "hour":
        unix s, "mode": "drop"|"alter"}}; a planted log's block defaults to the head. The answer's `planted` names
        what was planted (the discrepancy's fill id)."""
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object")
        if changes.get("reset_faults"):
            fresh = parse_faults("")
            self.config.faults.__dict__.update(fresh.__dict__)
        faults = changes.get("faults")
        if isinstance(faults, str):
            self.config.faults.update(parse_fault_changes(faults))
        elif isinstance(faults, dict):
            self.config.faults.update(faults)
        if "rate" in changes:
            rate = float(changes["rate"])
            if rate < 0:
                raise ValueError("rate must be >= 0")
            self.clock.rate = self.config.rate = rate
        if changes.get("list_late_markets"):
            self.world.list_late_markets()
        planted = self.world.planted
        if isinstance(upgrade := changes.get("plant_upgrade"), dict):
            planted.plant_upgrade(int(upgrade.get("block", self.world.head_block)), str(upgrade["implementation"]))
        if isinstance(extra := changes.get("plant_log"), dict):
            planted.plant(int(extra.get("block", self.world.head_block)), str(extra["address"]),
                          list(extra["topics"]), str(extra.get("data", "0x")))  # fmt: skip
        if isinstance(wrong := changes.get("data_api_discrepancy"), dict):
            self.planted_fills.append(self.data_api.plant_discrepancy(str(wrong["market_id"]), int(wrong["hour"]),
                                                                      str(wrong.get("mode", "drop"))))  # fmt: skip


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Any, partial: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*JSON, (b"content-length", str(len(partial) + 1024).encode())],
        }
    )
    await send({"type": "http.response.body", "body": partial, "more_body": True})
    raise SimulatedDrop("simulated dropped connection")
