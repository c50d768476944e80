"""Gamma REST stand-in: `/markets`, `/events` (offset), `/markets/keyset`, `/events/keyset`, single objects.

Contract (docs/upstream.md §1.2):
- every listing applies Gamma's implicit `closed=false` when no `closed` param is sent (this includes lookups by
  `id`, `slug`, `clob_token_ids` or `position_ids`: send `closed=true` too to find closed markets);
- offset listings: `limit` (default 20, at most 1000 rows come back), `offset` (422 `{"error": "offset too large,
  use /markets/keyset for deeper pagination"}` past `gamma_offset_cap`, docs/upstream.md §1.2), `order` (comma-separated
  JSON field names), `ascending` (default true); array params as repeated keys (comma lists are accepted too);
- keyset listings: `after_cursor` (opaque; `cursor` is ignored like any unknown param), `next_cursor` only when a
  page is full, `offset` -> 422; events `limit` must be 1..500 (422 otherwise); markets keyset pages hold at most
  100 rows whatever the `limit`; `/markets/keyset` also filters by `position_ids` (V2 markets' `positionIds`);
  the `keyset_off` switch makes both answer 503 "keyset pagination is not configured";
- late markets appear only once listed; unlisted markets never (404 on `/markets/{id}`);
- protocol versions (docs/upstream-gamma.md): every listing serves only the versions its `version` keys name
  (`version=v1&version=v2`, repeated; comma lists accepted too), and only "v1" items when it names none, as
  Gamma's documented default; an item without a `version` field is a v1 item. Whether the offset listings (and so
  the `clob_token_ids` and `id` lookups) honour `version` is unverified upstream: `gamma_offset_versions` picks
  "honour" (default), "ignore" (every version, whatever is asked) or "v1_only" (the default, whatever is asked);
  keyset listings always honour it. An unknown version is a 422.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from simulator.catalogue import Event, Market
from simulator.gamma_render import render_event, render_market
from simulator.world import World

OFFSET_DEFAULT_LIMIT = 20
OFFSET_MAX_LIMIT = 1000
MARKETS_KEYSET_MAX_ROWS = 100
EVENTS_KEYSET_MAX_LIMIT = 500
NUMERIC_TEXT_FIELDS = ("volume", "liquidity", "id")
VERSIONS = ("v1", "v2")
DEFAULT_VERSIONS = frozenset({"v1"})  # Gamma's current server default: CTF items only

Response = tuple[int, Any]


class GammaError(Exception):
    """An error answer; `bare` ones are `{"error": ...}` alone (the offset cap's and keyset's 503, verbatim)."""

    def __init__(self, status: int, message: str, bare: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.bare = status, message, bare

    def body(self) -> dict[str, str]:
        if self.bare:
            return {"error": self.message}
        return {"type": "validation error" if self.status == 422 else "error", "error": self.message}


def _params(query: list[tuple[str, str]], name: str) -> list[str]:
    values: list[str] = []
    for key, value in query:
        if key in (name, f"{name}[]"):
            values += [v for v in value.split(",") if v]
    return values


def _one(query: list[tuple[str, str]], name: str) -> str | None:
    values = [value for key, value in query if key == name]
    return values[-1] if values else None


def _int(query: list[tuple[str, str]], name: str, default: int) -> int:
    value = _one(query, name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise GammaError(422, f"{name} must be an integer") from None
    if number < 0:
        raise GammaError(422, f"{name} must be >= 0")
    return number


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise GammaError(422, f"invalid boolean {value!r}")


def _sort_value(row: dict[str, Any], field: str) -> tuple[int, Any]:
    value = row.get(field)
    if field in NUMERIC_TEXT_FIELDS and isinstance(value, str):
        try:
            return (1, float(value))
        except ValueError:
            return (2, value)
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, float(value))
    return (2, str(value))


def market_version(market: Market) -> str:
    """The version a market is listed under: its `version`, "v1" when it has none."""
    return market.version or "v1"


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> list[Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise GammaError(422, "invalid after_cursor") from None
    if not isinstance(data, list):
        raise GammaError(422, "invalid after_cursor")
    return [tuple(x) if isinstance(x, list) else x for x in data]


class GammaService:
    def __init__(self, world: World) -> None:
        self.world = world

    def handle(self, path: str, query: list[tuple[str, str]], now_s: float | None = None) -> Response:
        now_s = time.time() if now_s is None else now_s
        parts = [p for p in path.split("/") if p]
        try:
            if parts in (["markets"], ["events"]):
                return 200, self.offset_listing(parts[0], query, now_s)
            if len(parts) == 2 and parts[1] == "keyset" and parts[0] in ("markets", "events"):
                return 200, self.keyset_listing(parts[0], query, now_s)
            if len(parts) in (2, 3) and parts[0] in ("markets", "events"):
                return 200, self.single(parts[0], parts[1:], now_s)
        except GammaError as exc:
            return exc.status, exc.body()
        return 404, {"type": "not found error", "error": "not found"}

    # --- rows -------------------------------------------------------------------------------------------------
    def listed_markets(self, now_s: float) -> list[Market]:
        return [m for m in self.world.catalogue.markets if self.world.is_listed(m, now_s)]

    def listed_events(self, now_s: float) -> list[Event]:
        markets = self.world.catalogue.markets
        return [e for e in self.world.catalogue.events if self.world.is_listed(markets[e.market_indexes[0]], now_s)]

    def market_json(self, market: Market) -> dict[str, Any]:
        return render_market(market, self.world.catalogue)

    def event_json(self, event: Event) -> dict[str, Any]:
        catalogue = self.world.catalogue
        return render_event(event, catalogue, [self.market_json(catalogue.markets[i]) for i in event.market_indexes])

    def _versions(self, query: list[tuple[str, str]], keyset: bool) -> frozenset[str]:
        """The versions a listing serves: those asked for (v1 alone when none), unless the offset listings are
        configured to ignore the key."""
        asked = frozenset(_params(query, "version"))
        if unknown := sorted(asked - set(VERSIONS)):
            raise GammaError(422, f"version must be one of {', '.join(VERSIONS)}, not {unknown[0]!r}")
        mode = "honour" if keyset else self.world.config.gamma_offset_versions
        if mode == "ignore":
            return frozenset(VERSIONS)
        return asked if asked and mode == "honour" else DEFAULT_VERSIONS

    def _filtered(self, kind: str, query: list[tuple[str, str]], now_s: float, keyset: bool = False) -> list[Any]:
        versions = self._versions(query, keyset)
        closed = _bool(_one(query, "closed"))
        closed = False if closed is None else closed  # Gamma's implicit closed=false
        ids, slugs = set(_params(query, "id")), set(_params(query, "slug"))
        if kind == "markets":
            rows: list[Any] = self.listed_markets(now_s)
            tokens, conditions = set(_params(query, "clob_token_ids")), set(_params(query, "condition_ids"))
            positions = set(_params(query, "position_ids")) if keyset else set()
            rows = [
                m
                for m in rows
                if (not tokens or tokens & set(m.listed_token_ids))
                and (not positions or positions & set(m.position_ids))
                and (not conditions or m.condition_id in conditions)
            ]
        else:
            rows = self.listed_events(now_s)
        version = market_version if kind == "markets" else self.event_version
        return [
            r
            for r in rows
            if r.closed == closed
            and version(r) in versions
            and (not ids or r.id in ids)
            and (not slugs or r.slug in slugs)
        ]

    def event_version(self, event: Event) -> str:
        return market_version(self.world.catalogue.markets[event.market_indexes[0]])

    def _sorted(self, kind: str, rows: list[Any], query: list[tuple[str, str]]) -> list[tuple[list[Any], Any]]:
        """[(sort key, row)] in the requested order; the key always ends with the numeric id."""
        fields = [f for f in (_one(query, "order") or "").split(",") if f]
        ascending = _bool(_one(query, "ascending"))
        ascending = True if ascending is None or not fields else ascending
        render = self.market_json if kind == "markets" else self.event_json
        keyed = []
        for row in rows:
            if fields == ["id"]:  # the ingesters' order: the same key as below, without rendering every row
                key: list[Any] = [(1, float(row.id))]
            else:
                data = render(row) if fields else None
                key = [_sort_value(data, f) for f in fields] if data is not None else []
            keyed.append(([*key, int(row.id)], row))
        keyed.sort(key=lambda pair: pair[0], reverse=not ascending)
        return keyed

    def _json(self, kind: str, rows: list[Any]) -> list[dict[str, Any]]:
        render = self.market_json if kind == "markets" else self.event_json
        return [render(r) for r in rows]

    # --- endpoints ----------------------------------------------------------------------------------------
    def offset_listing(self, kind: str, query: list[tuple[str, str]], now_s: float) -> list[dict[str, Any]]:
        limit = min(_int(query, "limit", OFFSET_DEFAULT_LIMIT), OFFSET_MAX_LIMIT)
        offset = _int(query, "offset", 0)
        cap = self.world.config.gamma_offset_cap
        if cap is not None and offset > cap:
            raise GammaError(422, f"offset too large, use /{kind}/keyset for deeper pagination", bare=True)
        keyed = self._sorted(kind, self._filtered(kind, query, now_s), query)
        return self._json(kind, [row for _, row in keyed[offset : offset + limit]])

    def keyset_listing(self, kind: str, query: list[tuple[str, str]], now_s: float) -> dict[str, Any]:
        if self.world.config.faults.keyset_off:
            raise GammaError(503, "keyset pagination is not configured", bare=True)
        if _one(query, "offset") is not None:
            raise GammaError(422, "offset is not allowed on keyset endpoints")
        limit = _int(query, "limit", 20)
        if kind == "events" and not 1 <= limit <= EVENTS_KEYSET_MAX_LIMIT:
            raise GammaError(422, f"limit must be between 1 and {EVENTS_KEYSET_MAX_LIMIT}")
        if kind == "markets" and limit < 1:
            raise GammaError(422, "limit must be >= 1")
        effective = min(limit, MARKETS_KEYSET_MAX_ROWS) if kind == "markets" else limit
        keyed = self._sorted(kind, self._filtered(kind, query, now_s, keyset=True), query)
        ascending = _bool(_one(query, "ascending"))
        descending = ascending is False and bool(_one(query, "order"))
        cursor = _one(query, "after_cursor")
        if cursor:
            after = decode_cursor(cursor)
            keyed = [(k, r) for k, r in keyed if (k < after if descending else k > after)]
        page = keyed[:effective]
        body: dict[str, Any] = {kind: self._json(kind, [row for _, row in page])}
        if len(page) == effective:
            body["next_cursor"] = encode_cursor(page[-1][0])
        return body

    def single(self, kind: str, rest: list[str], now_s: float) -> dict[str, Any]:
        if len(rest) == 2 and rest[0] != "slug":
            raise GammaError(404, "not found")
        by_slug = len(rest) == 2
        wanted = rest[-1]
        if kind == "markets":
            for market in self.listed_markets(now_s):
                if (market.slug if by_slug else market.id) == wanted:
                    return self.market_json(market)
        else:
            for event in self.listed_events(now_s):
                if (event.slug if by_slug else event.id) == wanted:
                    return self.event_json(event)
        raise GammaError(404, "id not found")
