"""Gamma's listings over HTTP: where a pass stands (`Position`), its pages, fetches by id, the keyset probe.

Keyset first: pages follow `next_cursor` as `after_cursor`, with the same filters on every page, and end-of-pass is
decided by `next_cursor` alone (pages may be shorter than `limit`). Offset listings serve only the first ~2000 rows
(Gamma answers 422 past that, docs/upstream.md §1.2): they are the fallback for a Gamma without keyset (404, 501,
503 "not configured"), and a 422 stops the sync with an error naming MARKETS_LISTING/EVENTS_LISTING, leaving the
position at the refused page (the service shows degraded; nothing claims the sync complete). Offset end-of-pass is
an empty page, since Gamma may cap `limit` below what we asked.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog

from common.config import HttpSettings, SourceSettings
from common.errors import PermanentSourceError, SourceError, TransientSourceError
from common.http import RateLimiter, make_client, request_json, request_json_once

log = structlog.get_logger()

Listing = Literal["keyset", "offset"]
SYNCED = "synced"
ID_BATCH = 100  # ids per `?id=` request: short numeric ids, far below Gamma's ~8 KB URL limit

# --- positions -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """Where a pass over one `closed` value stands: the keyset cursor or the offset to request next."""

    listing: Listing
    closed: bool
    after: str = ""  # keyset: next_cursor to send ("" = first page); offset: row offset ("" = 0)

    def encode(self) -> str:
        return f"{self.listing} closed={str(self.closed).lower()} after={self.after}"

    @classmethod
    def decode(cls, text: str) -> Position:
        match = re.fullmatch(r"(keyset|offset) closed=(true|false) after=(\S*)", text)
        if match is None:
            raise ValueError(f"not a Gamma sync position: {text!r}")
        listing, closed, after = match.groups()
        if listing == "offset" and after and not after.isdigit():
            raise ValueError(f"not an offset: {text!r}")
        return cls(listing, closed == "true", after)  # type: ignore[arg-type]

    def start_of_pass(self, listing: Listing) -> Position:
        return Position(listing, self.closed)


def sync_state_after(position: Position, next_after: str | None) -> str:
    """The cursor to store once the page at `position` is written: the next page, the next pass, or synced."""
    if next_after is not None:
        return Position(position.listing, position.closed, next_after).encode()
    return Position(position.listing, closed=True).encode() if not position.closed else SYNCED


# --- HTTP ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_after: str | None  # None: this was the last page of the pass


@dataclass(frozen=True, slots=True)
class GammaClient:
    client: httpx.AsyncClient  # base_url = GAMMA_API_URL
    http: HttpSettings
    limiter: RateLimiter

    async def get(self, path: str, params: Any, *, what: str) -> Any:
        return await request_json(
            self.client, "GET", path, settings=self.http, what=what, limiter=self.limiter, params=params
        )


@asynccontextmanager
async def open_gamma(http: HttpSettings, source: SourceSettings, rate_per_s: float) -> AsyncIterator[GammaClient]:
    """The process's Gamma client: GAMMA_API_URL as the base URL, one rate limit over every request."""
    async with make_client(http, base_url=source.gamma_api_url.rstrip("/")) as client:
        yield GammaClient(client, http, RateLimiter(rate_per_s, burst=5))


def keyset_unavailable(exc: SourceError) -> bool:
    """404/501, or 503 "keyset pagination is not configured": this Gamma has no keyset listing.

    A 422 is not one of them: it refuses the request's parameters, which offset paging would not fix.
    """
    return exc.status in (404, 501) or (exc.status == 503 and "not configured" in str(exc))


def offset_refused(name: str, offset: int, exc: SourceError) -> PermanentSourceError:
    """Gamma's 422 past offset ~2000 (docs/upstream.md §1.2), as an error that says what it means and what to set."""
    setting = f"{name.upper()}_LISTING"  # the ingesters' MARKETS_LISTING / EVENTS_LISTING
    return PermanentSourceError(
        f"{exc} (Gamma refused offset {offset} of the {name} offset listing, which serves only the first ~2000 "
        f"rows: the full sync is not complete; it needs /{name}/keyset, {setting}=auto or keyset)",
        status=exc.status,
    )


async def fetch_page(gamma: GammaClient, name: str, position: Position, *, limit: int) -> Page:
    closed = str(position.closed).lower()
    what = f"gamma {name} {position.listing} closed={closed}"
    if position.listing == "keyset":
        params = {"limit": limit, "closed": closed} | ({"after_cursor": position.after} if position.after else {})
        body = await gamma.get(f"/{name}/keyset", params, what=what)
        if not isinstance(body, dict) or not isinstance(body.get(name), list):
            raise TransientSourceError(f"{what}: reply has no {name!r} list")
        return Page(body[name], str(body["next_cursor"]) if body.get("next_cursor") else None)
    offset = int(position.after or 0)
    params = {"limit": limit, "offset": offset, "closed": closed, "order": "id", "ascending": "true"}
    try:
        body = await gamma.get(f"/{name}", params, what=what)
    except PermanentSourceError as exc:
        if exc.status == 422:
            raise offset_refused(name, offset, exc) from exc
        raise
    if not isinstance(body, list):
        raise TransientSourceError(f"{what}: reply is not a list")
    return Page(body, str(offset + len(body)) if body else None)


async def fetch_by_ids(gamma: GammaClient, name: str, ids: Sequence[str], *, closed: bool) -> list[Any]:
    """`GET /{name}?id=1&id=2&closed=...` (repeated keys; ≤ ID_BATCH ids keep the URL short)."""
    closed_text = str(closed).lower()
    params = [("id", i) for i in ids] + [("closed", closed_text), ("limit", str(len(ids)))]
    body = await gamma.get(f"/{name}", params, what=f"gamma {name} by id closed={closed_text}")
    return body if isinstance(body, list) else []


async def probe_keyset(gamma: GammaClient, name: str) -> Listing:
    """One unretried keyset request: does this Gamma serve keyset listings? Other failures propagate."""
    await gamma.limiter.acquire()
    try:
        await request_json_once(
            gamma.client, "GET", f"/{name}/keyset", what=f"gamma {name} keyset probe", params={"limit": 1}
        )
    except SourceError as exc:
        if keyset_unavailable(exc):
            log.warning("keyset listing unavailable; using offset listing", resource=name, error=str(exc))
            return "offset"
        raise
    return "keyset"
