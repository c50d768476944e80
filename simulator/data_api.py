"""Data API v2 stand-in: `GET /data-api/v2/trades`, served from the world's fills (docs/upstream.md).

Shape as documented: envelope `{data, pagination: {limit, offset, has_more, next_cursor}}`, snake_case rows
`proxy_wallet, token_id, condition_id, side, size, price, timestamp, transaction_hash, title, slug, outcome,
outcome_index`, newest first, cursor-only (`cursor=<next_cursor>`; an `offset` parameter is a 400; the cursor
carries the page size and must come back with the same filters, else 400), `limit` default 100 and at most 1,000,
`condition` a comma list of at most 20 condition ids (`condition_id`/`conditionId` accepted; a malformed one is a
400 naming it), `taker_only` default true (each fill once, on its taker side: the row whose `taker` is the
exchange, `proxy_wallet` its maker, the taker order's owner), `side`, `filter_type` TOKENS (default) or CASH with
`filter_amount` default 0.01 (0 means the same, as the published OpenAPI text says), and 200 requests per 10 s
(429 with Retry-After past it). `start`/`end` are ignored on the condition shape, as that text says. Combo
positions have no condition: they are not served. `size` and `price` are floats.

`plant_discrepancy(market_id, hour, mode)` makes it disagree with the truth on purpose: the first taker-side fill
of that market in that hour is dropped (`drop`) or served with 1.5 times its size (`alter`).
"""

from __future__ import annotations

import base64
import collections
import re
import time
from functools import cached_property
from typing import Any

import numpy as np
import orjson

from simulator.catalogue import COMBO
from simulator.world import World

MAX_LIMIT = 1_000
DEFAULT_LIMIT = 100
MAX_CONDITIONS = 20
DEFAULT_FILTER_AMOUNT = 0.01
RATE_LIMIT = (200, 10.0)  # requests per seconds on /trades
CONDITION = re.compile(r"^0x[0-9a-fA-F]{64}$")
FILTERS = ("condition", "taker_only", "side", "filter_type", "filter_amount", "user", "event_id")
MODES = ("drop", "alter")


class BadRequest(ValueError):
    pass


class DataApiService:
    def __init__(self, world: World) -> None:
        self.world = world
        self.dropped: set[int] = set()
        self.altered: dict[int, float] = {}  # fill index -> size factor
        self.recent: collections.deque[float] = collections.deque()

    def handle(self, path: str, query: list[tuple[str, str]]) -> tuple[int, Any]:
        if path.rstrip("/") != "/v2/trades":
            return 404, {"error": "not found"}
        if self._throttled():
            return 429, {"error": "rate limit exceeded: 200 requests per 10 s on /trades"}
        try:
            return 200, self.trades(query)
        except BadRequest as exc:
            return 400, {"error": str(exc)}

    def _throttled(self) -> bool:
        limit, window_s = RATE_LIMIT
        now = time.monotonic()
        while self.recent and now - self.recent[0] > window_s:
            self.recent.popleft()
        if len(self.recent) >= limit:
            return True
        self.recent.append(now)
        return False

    @cached_property
    def market_of_token(self) -> np.ndarray:
        """Per token index, its market's index, or -1 for a Combo position (no condition)."""
        markets = self.world.catalogue.markets
        return np.array([-1 if markets[t // 2].listing == COMBO else t // 2 for t in range(2 * len(markets))])

    def trades(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        params = dict(query)
        if "offset" in params:
            raise BadRequest("offset is not supported: pagination is cursor-only (pass cursor=<next_cursor>)")
        filters = {k: params[k] for k in FILTERS if k in params}
        conditions = params.get("condition") or params.get("condition_id") or params.get("conditionId")
        if conditions is not None:
            filters["condition"] = conditions
        key = orjson.dumps(sorted(filters.items())).decode()
        limit, before = self._page(params, key)
        idx = self._matching(filters, before)
        page, more = idx[:limit], len(idx) > limit
        next_cursor = _cursor({"l": limit, "f": key, "b": int(page[-1])}) if more else None
        return {"data": self._rows(page),
                "pagination": {"limit": limit, "offset": 0, "has_more": more, "next_cursor": next_cursor}}  # fmt: skip

    def _page(self, params: dict[str, str], key: str) -> tuple[int, int]:
        """(page size, the fill index rows must be below) from the cursor, or from `limit` on a first page."""
        if params.get("cursor"):
            try:
                cursor = orjson.loads(base64.urlsafe_b64decode(params["cursor"].encode()))
                limit, filters, before = int(cursor["l"]), cursor["f"], int(cursor["b"])
            except (ValueError, KeyError, TypeError):
                raise BadRequest("invalid cursor") from None
            if filters != key:
                raise BadRequest("the cursor was issued for other filters: re-send the same filters on every page")
            return limit, before
        try:
            limit = int(params.get("limit", DEFAULT_LIMIT))
        except ValueError:
            raise BadRequest(f"limit: not an integer: {params['limit']!r}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit: must be between 1 and {MAX_LIMIT}")
        return limit, self.world.count

    def _matching(self, filters: dict[str, str], before: int) -> np.ndarray:
        """Fill indexes the filters select below `before`, newest first (fills are stored in block order)."""
        world = self.world
        tokens = world.col("token")[:before]
        market = self.market_of_token[tokens]
        mask = market >= 0
        if "condition" in filters:
            wanted = [c.strip().lower() for c in filters["condition"].split(",") if c.strip()]
            bad = [c for c in wanted if not CONDITION.match(c)]
            if bad:
                raise BadRequest(f"condition: malformed condition id {bad[0]!r}")
            if len(set(wanted)) > MAX_CONDITIONS:
                raise BadRequest(f"condition: at most {MAX_CONDITIONS} distinct values")
            indexes = [m.index for m in world.catalogue.markets if m.condition_id.lower() in set(wanted)]
            mask &= np.isin(market, indexes)
        if filters.get("taker_only", "true").lower() != "false":
            mask &= world.col("taker")[:before] < 0
        side = filters.get("side", "").upper()
        if side in ("BUY", "SELL"):
            mask &= world.col("maker_buys")[:before] == (side == "BUY")
        amount = _float(filters.get("filter_amount"), "filter_amount") or DEFAULT_FILTER_AMOUNT
        cash = filters.get("filter_type", "TOKENS").upper() == "CASH"
        amounts = world.usdc_amounts(slice(0, before)) if cash else world.token_amounts(slice(0, before))
        mask &= amounts / 1e6 >= amount
        idx = np.flatnonzero(mask)[::-1]
        return idx[~np.isin(idx, list(self.dropped))] if self.dropped else idx

    def _rows(self, idx: np.ndarray) -> list[dict[str, Any]]:
        world, markets = self.world, self.world.catalogue.markets
        tokens = world.col("token")[idx].tolist()
        usdc, shares = world.usdc_amounts(idx).tolist(), world.token_amounts(idx).tolist()
        buys = world.col("maker_buys")[idx].tolist()
        wallets = world.address_hex(world.col("maker")[idx])
        stamps, tx_hashes = world.timestamps(idx).tolist(), world.tx_hashes(idx)
        rows = []
        for i, fill in enumerate(idx.tolist()):
            market, outcome = markets[tokens[i] // 2], tokens[i] % 2
            rows.append({
                "proxy_wallet": wallets[i], "token_id": world.token_id_list[tokens[i]],
                "condition_id": market.condition_id, "side": "BUY" if buys[i] else "SELL",
                "size": shares[i] / 1e6 * self.altered.get(fill, 1.0), "price": usdc[i] / shares[i],
                "timestamp": stamps[i], "transaction_hash": tx_hashes[i], "title": market.question,
                "slug": market.slug, "outcome": market.outcomes[outcome], "outcome_index": outcome,
            })  # fmt: skip
        return rows

    def plant_discrepancy(self, market_id: str, hour: int, mode: str) -> str:
        """Drop or alter the first taker-side fill of `market_id` in the hour starting at `hour` (unix s, a
        multiple of 3600); returns the fill's id."""
        if mode not in MODES:
            raise ValueError(f"data_api_discrepancy: mode must be one of {MODES}, not {mode!r}")
        world = self.world
        market = next((m for m in world.catalogue.markets if m.id == str(market_id) and m.listing != COMBO), None)
        if market is None:
            raise ValueError(f"data_api_discrepancy: no market {market_id!r}")
        stamps = world.timestamps(slice(0, world.count))
        mask = (world.col("token") // 2 == market.index) & (world.col("taker") < 0)
        mask &= (stamps >= hour) & (stamps < hour + 3600) & (world.token_amounts(slice(0, world.count)) >= 10_000)
        hits = np.flatnonzero(mask)
        if not len(hits):
            raise ValueError(f"data_api_discrepancy: market {market_id} has no taker-side fill in hour {hour}")
        fill = int(hits[0])
        if mode == "drop":
            self.dropped.add(fill)
        else:
            self.altered[fill] = 1.5
        return world.fill_ids(np.array([fill]))[0]


def _cursor(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode()


def _float(text: str | None, name: str) -> float:
    try:
        return float(text) if text not in (None, "") else 0.0
    except ValueError:
        raise BadRequest(f"{name}: not a number: {text!r}") from None
