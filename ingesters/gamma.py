"""Gamma sync, written once for the markets and events ingesters: validation, content hashing, the sync loop.

Sync position (the cursor key, a plain string readable with `redis-cli GET`):
- absent: nothing synced yet; the full sync starts with the `closed=false` pass, then does `closed=true`
  (Gamma applies an implicit `closed=false` when the parameter is missing, so both passes are explicit);
- `keyset closed=false versions=v1,v2 after=<next_cursor>`: the keyset page to fetch next (`after=` empty: the
  first page), requested with those versions (GAMMA_VERSIONS);
- `offset closed=true versions=v1,v2 after=1500`: the offset listing (fallback) at row 1500 of that pass;
- `synced versions=v1,v2`: the full sync is done; refresh passes over open items keep their position in memory.
A position made with another selection than GAMMA_VERSIONS, or stored before positions named one (they then
mean v1, Gamma's default), restarts the full sync with the current selection: a cursor is only valid under the
selection it was made with, and an earlier sync never saw the versions it lacked. The content hashes make that
re-listing cheap: the items already stored are unchanged and not appended again; only the new ones are.
A page, its content hashes (and the token map for markets) and the next position are written by one
`append_with_cursor` call, compare-and-set on the position. A crash before that call leaves the old position:
the page is fetched again and, thanks to the hashes, nothing is appended twice. A crash after it resumes on
the next page. A crashed refresh pass just starts over; unchanged items cost one HMGET per page.
An item that leaves the open listing between two passes of one process has closed: it is fetched by id with
`closed=true` and its final state appended. Items that close while the service is down are not seen closed
until the next full sync (delete the cursor key to run one; unchanged items are not appended again).

Keyset and offset listings: see `ingesters/gamma_listing.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
import structlog

from common.config import GammaSettings, HttpSettings, RedisSettings, SourceSettings, load
from common.errors import PermanentSourceError, PoisonMessage, TransientSourceError
from common.payloads import encode_dead_letter
from common.redis_client import map_redis_errors
from common.service import Service, poll_forever, run_worker
from common.streams import append_with_cursor, read_cursor
from ingesters.gamma_listing import (
    ID_BATCH,
    GammaClient,
    Listing,
    Page,
    Position,
    fetch_by_ids,
    fetch_page,
    keyset_unavailable,
    open_gamma,
    probe_keyset,
    sync_state_after,
    synced,
    synced_versions,
)

log = structlog.get_logger()

HashItems = dict[str, dict[str, bytes | str]]

# --- pure: validation and hashing ----------------------------------------------------------------------------


def require_id(item: Any) -> None:
    if not isinstance(item, dict):
        raise PoisonMessage(f"not an object but {type(item).__name__}")
    if not isinstance(item.get("id"), str | int) or str(item["id"]) == "":
        raise PoisonMessage("no id")


def validate_event(item: Any) -> None:
    require_id(item)
    for name in ("tags", "markets"):
        children = item.get(name) or []
        if not isinstance(children, list) or not all(isinstance(c, dict) and "id" in c for c in children):
            raise PoisonMessage(f"{name} is not a list of objects with an id")


def content_hash(item: Any) -> str:
    """Stable digest of an item's whole content (keys sorted), so any change upstream shows."""
    return hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def item_key(item: Any) -> str:
    """Field of the content-hash hash: the id, or a digest for an item without one (so it is dead-lettered once)."""
    if isinstance(item, dict) and isinstance(item.get("id"), str | int) and str(item["id"]):
        return str(item["id"])
    return f"invalid:{content_hash(item)}"


@dataclass(frozen=True, slots=True)
class Resource:
    """One Gamma collection and where it goes in Redis."""

    name: str  # path and keyset envelope key: "markets" | "events"
    stream: str
    cursor_key: str
    hash_key: str
    validate: Callable[[Any], None]
    index: Callable[[dict[str, Any]], HashItems] = lambda _: {}  # extra hash writes per appended item


@dataclass(slots=True)
class PreparedPage:
    entries: list[bytes] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)
    hash_items: HashItems = field(default_factory=dict)
    unchanged: int = 0

    def add_hashes(self, extra: HashItems) -> None:
        for key, fields in extra.items():
            self.hash_items.setdefault(key, {}).update(fields)


def prepare_page(
    resource: Resource, items: Sequence[Any], known: Mapping[str, str | None], *, index_unchanged: bool = False
) -> PreparedPage:
    """Entries for the items whose content changed since `known` (key -> hash), dead letters for malformed ones.

    `index_unchanged` also rewrites the index (token map) of unchanged items: a lookup asks because it lacks them.
    """
    page = PreparedPage(hash_items={resource.hash_key: {}})
    seen: dict[str, str] = {}
    for item in items:
        key, digest = item_key(item), content_hash(item)
        if known.get(key) == digest or seen.get(key) == digest:
            page.unchanged += 1
            if index_unchanged and seen.get(key) != digest:
                page.add_hashes(resource.index(item))  # known hash: it passed validation when first appended
            continue
        seen[key] = digest
        page.hash_items[resource.hash_key][key] = digest
        raw = orjson.dumps(item)
        try:
            resource.validate(item)
        except PoisonMessage as exc:
            error = f"malformed {resource.name[:-1]}: {exc}"
            page.dead_letters.append(encode_dead_letter(stream=resource.stream, payload=raw, error=error))
            continue
        page.entries.append(raw)
        page.add_hashes(resource.index(item))
    return page


# --- I/O: Redis --------------------------------------------------------------------------------------------------


async def read_known_hashes(redis: aioredis.Redis, hash_key: str, fields: Sequence[str]) -> dict[str, str | None]:
    if not fields:
        return {}
    async with map_redis_errors(f"read {hash_key}"):
        values = await redis.hmget(hash_key, list(fields))
    return {f: (v.decode() if v is not None else None) for f, v in zip(fields, values, strict=True)}


async def append_changed(
    redis: aioredis.Redis,
    resource: Resource,
    items: Sequence[Any],
    cursor: tuple[str | None, str] | None,
    *,
    index_unchanged: bool = False,
) -> PreparedPage:
    """Append the changed items of a page (and move the cursor, when given) in one script call."""
    known = await read_known_hashes(redis, resource.hash_key, [item_key(item) for item in items])
    page = prepare_page(resource, items, known, index_unchanged=index_unchanged)
    moves = cursor is not None and cursor[0] != cursor[1]
    if page.entries or page.dead_letters or moves or any(len(f) for f in page.hash_items.values()):
        await append_with_cursor(
            redis,
            resource.stream,
            page.entries,
            {resource.cursor_key: cursor} if cursor is not None else {},
            dead_letters=page.dead_letters,
            hash_items=page.hash_items,
        )
    return page


# --- the sync loop -----------------------------------------------------------------------------------------------


class GammaSync:
    """`step()` for poll_forever: one page of the full sync, then refresh passes over open items."""

    def __init__(
        self,
        service: Service,
        resource: Resource,
        gamma: GammaClient,
        *,
        listing: Literal["keyset", "offset", "auto"],
        page_limit: int,
        refresh_s: float,
    ) -> None:
        self.service, self.resource, self.gamma = service, resource, gamma
        self.listing: Listing | None = None if listing == "auto" else listing
        self.auto = listing == "auto"
        self.page_limit, self.refresh_s = page_limit, refresh_s
        self.refresh: Position | None = None  # the open-items refresh pass in progress
        self.refresh_due_at = 0.0  # monotonic; right away at start
        # Ids listed open by the last complete pass of this process, and by the pass in progress: an id that
        # leaves the open listing has closed, and is fetched once with closed=true to append its final state.
        self.open_ids: set[str] = set()
        self.pass_ids: set[str] = set()
        self.synced = synced(gamma.versions)  # the stored state once the full sync is done

    async def step(self) -> bool:
        state = (await read_cursor(self.service.redis, [self.resource.cursor_key]))[self.resource.cursor_key]
        if state == self.synced:
            return await self.refresh_page()
        return await self.sync_page(state)

    def start(self, state: str | None) -> Position:
        """The position to sync from: the stored one if it was made with the current selection, else the start."""
        first = Position(self.listing or "keyset", closed=False, versions=self.gamma.versions)
        if state is None:
            return first
        try:
            position = Position.decode(state)
            versions = position.versions
        except ValueError as exc:
            versions = synced_versions(state)
            if versions is None:
                log.warning("unreadable position; restarting the full sync", resource=self.resource.name,
                            error=str(exc))  # fmt: skip
                return first
            position = first
        if versions != self.gamma.versions:
            log.warning("position made with other versions; full sync again with GAMMA_VERSIONS",
                        resource=self.resource.name, stored=state, versions=",".join(self.gamma.versions))  # fmt: skip
            return first
        return position

    async def mode(self) -> Listing:
        if self.listing is None:
            self.listing = await probe_keyset(self.gamma, self.resource.name)
        return self.listing

    async def sync_page(self, state: str | None) -> bool:
        await self.mode()
        position = self.start(state)
        if self.listing is not None and position.listing != self.listing:
            position = position.start_of_pass(self.listing)
        page = await self.fetch(position)
        if page is None:  # keyset turned out unavailable: restart this pass on the offset listing
            new_state = position.start_of_pass("offset").encode()
            await append_changed(self.service.redis, self.resource, [], (state, new_state))
            return True
        new_state = sync_state_after(position, page.next_after)
        written = await append_changed(self.service.redis, self.resource, page.items, (state, new_state))
        self.report(written, page, position, next_position=new_state)
        if not position.closed:
            self.pass_ids.update(item_key(item) for item in page.items)
            if page.next_after is None:
                self.open_ids, self.pass_ids = self.pass_ids, set()
        if new_state == self.synced:
            self.refresh_due_at = time.monotonic() + self.refresh_s
            log.info("full sync done", resource=self.resource.name)
            return False
        return True

    async def refresh_page(self) -> bool:
        if self.refresh is None:
            if time.monotonic() < self.refresh_due_at:
                return False
            self.refresh = Position(await self.mode(), closed=False, versions=self.gamma.versions)
        position = self.refresh
        page = await self.fetch(position)
        if page is None:
            self.refresh = position.start_of_pass("offset")
            return True
        written = await append_changed(self.service.redis, self.resource, page.items, (self.synced, self.synced))
        self.report(written, page, position, next_position="refresh")
        self.pass_ids.update(item_key(item) for item in page.items)
        if page.next_after is None:
            closed_ids = sorted(self.open_ids - self.pass_ids)
            await self.append_closed(closed_ids)
            self.open_ids, self.pass_ids = self.pass_ids, set()
            self.refresh = None
            self.refresh_due_at = time.monotonic() + self.refresh_s
            return False
        self.refresh = Position(position.listing, position.closed, page.next_after, position.versions)
        return True

    async def append_closed(self, ids: Sequence[str]) -> None:
        """Append the final state of items that left the open listing; a failure retries the last page, then this."""
        for start in range(0, len(ids), ID_BATCH):
            items = await fetch_by_ids(self.gamma, self.resource.name, ids[start : start + ID_BATCH], closed=True)
            written = await append_changed(self.service.redis, self.resource, items, (self.synced, self.synced))
            self.service.count("appended", len(written.entries))
            log.info("closed since last pass", resource=self.resource.name, ids=len(ids), appended=len(written.entries))

    async def fetch(self, position: Position) -> Page | None:
        """The page at `position`; None when auto mode learns here that keyset is unavailable."""
        try:
            return await fetch_page(self.gamma, self.resource.name, position, limit=self.page_limit)
        except (PermanentSourceError, TransientSourceError) as exc:
            if self.auto and position.listing == "keyset" and keyset_unavailable(exc):
                log.warning("keyset listing failed; falling back to offset", resource=self.resource.name)
                self.listing = "offset"
                return None
            raise

    def report(self, written: PreparedPage, page: Page, position: Position, *, next_position: str) -> None:
        self.service.count("pages")
        self.service.count("appended", len(written.entries))
        self.service.count("dead_letters", len(written.dead_letters))
        log.info(
            "page",
            resource=self.resource.name,
            position=position.encode(),
            next=next_position,
            items=len(page.items),
            appended=len(written.entries),
            unchanged=written.unchanged,
            dead=len(written.dead_letters),
        )


# --- the service -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncKnobs:
    """An ingester's settings for its sync (each ingester names them with its own prefix: MARKETS_, EVENTS_)."""

    listing: Literal["keyset", "offset", "auto"]
    page_limit: int
    refresh_s: float
    rate_per_s: float  # over every Gamma request of the process
    interval_s: float  # poll_forever's pause when a step says there is nothing more right away


@dataclass(frozen=True, slots=True)
class Connections:
    """What a Gamma ingester talks to: Redis, and Gamma (`source.gamma_api_url`) under the HTTP retry policy,
    asking for the versions of `gamma` (GAMMA_VERSIONS)."""

    redis: RedisSettings
    http: HttpSettings
    source: SourceSettings
    gamma: GammaSettings = field(default_factory=GammaSettings)

    @classmethod
    def load(cls) -> Connections:
        return cls(load(RedisSettings), load(HttpSettings), load(SourceSettings), load(GammaSettings))


async def run_sync(
    name: str,
    resource: Resource,
    knobs: SyncKnobs,
    connections: Connections,
    *,
    once: bool,
    stop: asyncio.Event | None = None,
    also: Callable[[Service, GammaClient], Awaitable[bool]] | None = None,
) -> Service:
    """Service `name`: the full sync, then refresh passes, until stopped (`once`: one step that has nothing more).

    `also(service, gamma)` runs before each sync step, on the same Gamma client; True means it has more to do.
    """

    async def body(service: Service) -> None:
        async with open_gamma(
            connections.http, connections.source, knobs.rate_per_s, connections.gamma.versions
        ) as gamma:
            sync = GammaSync(
                service, resource, gamma, listing=knobs.listing, page_limit=knobs.page_limit, refresh_s=knobs.refresh_s
            )

            async def step() -> bool:
                more = await also(service, gamma) if also is not None else False
                return await sync.step() or more

            await poll_forever(service, step, interval_s=knobs.interval_s, once=once)

    return await run_worker(name, connections.redis, body, stop=stop)
