"""Fault decisions per request and the upstream-looking bodies they produce.

Per request, in this order: `latency_ms` (always), `slow` (+`slow_ms`), `timeout` (hang `timeout_s`, then
drop), `429` (with `Retry-After`), `500` (500/502/503), `drop` (close mid-body), then the API-level faults
(`graphql_error`, `rpc_error`) and finally `truncate` (body cut short, Content-Length of the cut body).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from simulator.config import Faults

GOLDSKY_429 = "Sorry, you've surpassed your query allowance. Please try again - limits reset every 10 seconds."
RPC_429 = "Your app has exceeded its compute units per second capacity. Please retry after a short delay."
GRAPHQL_ERRORS = (
    "Store error: database unavailable",
    "bad indexers: BadResponse(unattestable response: Failed to get entities from store)",
)


@dataclass(frozen=True)
class Plan:
    """What to do to one request; `status` set means answer with that HTTP error instead of the real body."""

    delay_s: float = 0.0
    hang: bool = False
    status: int | None = None
    drop: bool = False
    api_error: bool = False
    truncate: bool = False


class FaultInjector:
    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self.rng = random.Random(f"faults:{seed}")
        self.injected: dict[str, int] = {}

    def _hit(self, scope: str, kind: str) -> bool:
        rate = self.faults.rate(scope, kind)
        if rate > 0 and self.rng.random() < rate:
            key = f"{scope}.{kind}"
            self.injected[key] = self.injected.get(key, 0) + 1
            return True
        return False

    def plan(self, scope: str) -> Plan:
        f = self.faults
        delay_s = f.latency_ms / 1000.0
        if f.slow_ms > 0 and self._hit(scope, "slow"):
            delay_s += f.slow_ms / 1000.0
        if self._hit(scope, "timeout"):
            return Plan(delay_s=delay_s, hang=True)
        if self._hit(scope, "429"):
            return Plan(delay_s=delay_s, status=429)
        if self._hit(scope, "500"):
            return Plan(delay_s=delay_s, status=self.rng.choice((500, 502, 503)))
        if self._hit(scope, "drop"):
            return Plan(delay_s=delay_s, drop=True)
        api_kind = {"goldsky": "graphql_error", "rpc": "rpc_error"}.get(scope)
        api_error = api_kind is not None and self._hit(scope, api_kind)
        return Plan(delay_s=delay_s, api_error=api_error, truncate=self._hit(scope, "truncate"))

    def rpc_error_hit(self) -> bool:
        """Per JSON-RPC call inside a request (batch items fail independently)."""
        return self._hit("rpc", "rpc_error")

    def graphql_error_body(self) -> bytes:
        return orjson.dumps({"errors": [{"message": self.rng.choice(GRAPHQL_ERRORS)}]})

    def truncate(self, body: bytes) -> bytes:
        if len(body) < 2:
            return b""
        return body[: self.rng.randrange(1, len(body))]


def error_response(scope: str, status: int, retry_after_s: float) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Body and extra headers for an injected HTTP error, shaped like each upstream's."""
    headers: list[tuple[bytes, bytes]] = []
    if status == 429:
        headers.append((b"retry-after", str(max(0, round(retry_after_s))).encode()))
        if scope == "goldsky":
            return GOLDSKY_429.encode(), [(b"content-type", b"text/plain"), *headers]
        if scope == "rpc":
            body = {"jsonrpc": "2.0", "id": None, "error": {"code": 429, "message": RPC_429}}
            return orjson.dumps(body), [(b"content-type", b"application/json"), *headers]
        return b'{"error":"Too Many Requests"}', [(b"content-type", b"application/json"), *headers]
    text = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Error")
    html = f"<html><head><title>{status} {text}</title></head><body><h1>{status} {text}</h1></body></html>"
    return html.encode(), [(b"content-type", b"text/html")]
