"""Gamma's listings over HTTP: where a pass stands (`Position`), its pages, fetches by id, the keyset probe.

Keyset first: pages follow `next_cursor` as `after_cursor`, with the same filters on every page, and end-of-pass is
decided by `next_cursor` alone (pages may be shorter than `limit`). Offset listings serve only the first ~2000 rows
(Gamma answers 422 past that, docs/upstream.md §1.2): they are the fallback for a Gamma without keyset (404, 501,
503 "not configured"), and a 422 stops the sync with an error naming MARKETS_LISTING/EVENTS_LISTING, leaving the
position at the refused page (the service shows degraded; nothing claims the sync complete). Offset end-of-pass is
an empty page, since Gamma may cap `limit` below what we asked.

Versions: Gamma serves only `version: "v1"` items to a request naming no `version` (docs/upstream-gamma.md), so every
request here names the selection (GAMMA_VERSIONS) as repeated `version` keys, on every page of a cursor; a position
records the selection it was made with and is resumed only under the same one. Whether the offset listings and the
`clob_token_ids` lookup honour the key is unverified: the items of a version not selected are dropped here, so
either answer gives the selection (a listing that serves v1 only whatever is asked shows in `pipeline doctor`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog

from common.config import GammaVersion, HttpSettings, SourceSettings
from common.errors import PermanentSourceError, SourceError, TransientSourceError
from common.gamma_fields import item_version, version_params
from common.http import RateLimiter, make_client, request_json, request_json_once

log = structlog.get_logger()

Listing = Literal["keyset", "offset"]
SYNCED = "synced"  # followed by " versions=v1,v2"; alone, as stored before versions were named, it means v1
LEGACY_VERSIONS: tuple[GammaVersion, ...] = ("v1",)  # what a position stored without versions was listed with
ID_BATCH = 100  # ids per `?id=` request: short numeric ids, far below Gamma's ~8 KB URL limit

# --- positions -----------------------------------------------------------------------------------------------


def encode_versions(versions: Sequence[str]) -> str:
    return ",".join(versions)


def decode_versions(text: str | None) -> tuple[GammaVersion, ...]:
    if text is None:
        return LEGACY_VERSIONS
    versions = tuple(text.split(","))
    if not versions or any(v not in ("v1", "v2") for v in versions):
        raise ValueError(f"not a version selection: {text!r}")
    return versions  # type: ignore[return-value]


def synced(versions: Sequence[str]) -> str:
    """The stored state of a completed full sync made with `versions`."""
    return f"{SYNCED} versions={encode_versions(versions)}"


def synced_versions(state: str | None) -> tuple[GammaVersion, ...] | None:
    """The selection a completed full sync was made with; None when `state` is not a completed sync."""
    match = re.fullmatch(rf"{SYNCED}(?: versions=(\S+))?", state or "")
    return decode_versions(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Position:
    """Where a pass over one `closed` value stands: the keyset cursor or the offset to request next, and the
    version selection its pages are requested with (a cursor is only valid under the same selection)."""

    listing: Listing
    closed: bool
    after: str = ""  # keyset: next_cursor to send ("" = first page); offset: row offset ("" = 0)
    versions: tuple[GammaVersion, ...] = LEGACY_VERSIONS

    def encode(self) -> str:
        closed = str(self.closed).lower()
        return f"{self.listing} closed={closed} versions={encode_versions(self.versions)} after={self.after}"

    @classmethod
    def decode(cls, text: str) -> Position:
        match = re.fullmatch(r"(keyset|offset) closed=(true|false)(?: versions=(\S+))? after=(\S*)", text)
        if match is None:
            raise ValueError(f"not a Gamma sync position: {text!r}")
        listing, closed, versions, after = match.groups()
        if listing == "offset" and after and not after.isdigit():
            raise ValueError(f"not an offset: {text!r}")
        return cls(listing, closed == "true", after, decode_versions(versions))  # type: ignore[arg-type]

    def start_of_pass(self, listing: Listing) -> Position:
        return Position(listing, self.closed, versions=self.versions)


def sync_state_after(position: Position, next_after: str | None) -> str:
    """The cursor to store once the page at `position` is written: the next page, the next pass, or synced."""
    if next_after is not None:
        return Position(position.listing, position.closed, next_after, position.versions).encode()
    if not position.closed:
        return Position(position.listing, closed=True, versions=position.versions).encode()
    return synced(position.versions)


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
    versions: tuple[GammaVersion, ...] = ("v1", "v2")  # GAMMA_VERSIONS: named by every listing and lookup

    def selected(self, items: list[Any]) -> list[Any]:
        return of_versions(items, self.versions)

    async def get(self, path: str, params: Any, *, what: str) -> Any:
        return await request_json(
            self.client, "GET", path, settings=self.http, what=what, limiter=self.limiter, params=params
        )


def of_versions(items: list[Any], versions: Sequence[str]) -> list[Any]:
    """The items of a selected version (a Gamma that ignores `version` may send others); anything that is not
    an object stays, to be dead-lettered with its reason."""
    return [item for item in items if not isinstance(item, dict) or item_version(item) in versions]


@asynccontextmanager
async def open_gamma(
    http: HttpSettings, source: SourceSettings, rate_per_s: float, versions: tuple[GammaVersion, ...]
) -> AsyncIterator[GammaClient]:
    """The process's Gamma client: GAMMA_API_URL as the base URL, one rate limit over every request, the
    GAMMA_VERSIONS selection."""
    async with make_client(http, base_url=source.gamma_api_url.rstrip("/")) as client:
        yield GammaClient(client, http, RateLimiter(rate_per_s, burst=5), versions)


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
    """The page at `position`, requested with the position's version selection, only items of those versions."""
    closed = str(position.closed).lower()
    what = f"gamma {name} {position.listing} closed={closed} versions={encode_versions(position.versions)}"
    versions = version_params(position.versions)
    if position.listing == "keyset":
        after = [("after_cursor", position.after)] if position.after else []
        params = [("limit", str(limit)), ("closed", closed), *versions, *after]
        body = await gamma.get(f"/{name}/keyset", params, what=what)
        if not isinstance(body, dict) or not isinstance(body.get(name), list):
            raise TransientSourceError(f"{what}: reply has no {name!r} list")
        next_after = str(body["next_cursor"]) if body.get("next_cursor") else None
        return Page(of_versions(body[name], position.versions), next_after)
    offset = int(position.after or 0)
    params = [("limit", str(limit)), ("offset", str(offset)), ("closed", closed), ("order", "id"),
              ("ascending", "true"), *versions]  # fmt: skip
    try:
        body = await gamma.get(f"/{name}", params, what=what)
    except PermanentSourceError as exc:
        if exc.status == 422:
            raise offset_refused(name, offset, exc) from exc
        raise
    if not isinstance(body, list):
        raise TransientSourceError(f"{what}: reply is not a list")
    # the next offset counts every row served, selected or not
    return Page(of_versions(body, position.versions), str(offset + len(body)) if body else None)


async def fetch_by_ids(gamma: GammaClient, name: str, ids: Sequence[str], *, closed: bool) -> list[Any]:
    """`GET /{name}?id=1&id=2&closed=...&version=...` (repeated keys; ≤ ID_BATCH ids keep the URL short)."""
    closed_text = str(closed).lower()
    params = [("id", i) for i in ids] + [("closed", closed_text), ("limit", str(len(ids)))]
    params += version_params(gamma.versions)
    body = await gamma.get(f"/{name}", params, what=f"gamma {name} by id closed={closed_text}")
    return gamma.selected(body) if isinstance(body, list) else []


async def probe_keyset(gamma: GammaClient, name: str) -> Listing:
    """One unretried keyset request: does this Gamma serve keyset listings? Other failures propagate."""
    await gamma.limiter.acquire()
    try:
        await request_json_once(
            gamma.client, "GET", f"/{name}/keyset", what=f"gamma {name} keyset probe",
            params=[("limit", "1"), *version_params(gamma.versions)],
        )  # fmt: skip
    except SourceError as exc:
        if keyset_unavailable(exc):
            log.warning("keyset listing unavailable; using offset listing", resource=name, error=str(exc))
            return "offset"
        raise
    return "keyset"
