"""Goldsky orderbook subgraph `orderFilledEvents` -> `stream:order_events` (v1 history, to the 2026-04-28 cutover).

Writes: `stream:order_events` (normalized fills, `source="goldsky"`), `stream:dlq` (malformed fills, with the raw
item and the reason), and the cursor `state:goldsky_last_timestamp` + `state:goldsky_last_id`: every fill with
`(timestamp, id) <= (last_timestamp, last_id)` is in the stream (paging rules in `ingesters/goldsky_pages.py`).
A backfill (`backfill()`, run by `python -m pipeline backfill goldsky --from FROM --to TO --workers N`) splits
`[FROM, TO]` into N adjacent ranges paged concurrently, each with its own cursor
`state:goldsky_backfill:<first>-<last>:last_timestamp` / `:last_id`; the split is stored in
`state:goldsky_backfill:<FROM>-<TO>:ranges`, so a restart resumes the same ranges.

Each page, its dead letters and the cursor after it are one `append_with_cursor` call (compare-and-set): a crash
before it leaves the cursor at the previous page, which is fetched again; a crash after it loses nothing. The
next page is requested while one is written (`fetch_ahead.FetchAhead`); it is used only if the cursor is then where
that request assumed, so fetching ahead never changes what is written.
Client: plain `request_json` POSTs of the GraphQL JSON rather than gql, so timeouts, retries, Retry-After and
the rate limit follow the one policy in `common.http`; the reply is decoded straight into typed fills and GraphQL
`errors` are classified in `goldsky_pages`.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from common import keys
from common.config import HttpSettings, PipelineSettings, RedisSettings, SourceSettings, load
from common.errors import ConfigError
from common.http import RateLimiter, make_client, request_json
from common.service import Service, poll_forever, run_worker, service_main
from common.streams import append_with_cursor, read_cursor
from ingesters.backfill import ProgressCallback, plan_backfill, run_parts
from ingesters.cursor_ahead import AheadAlarm, goldsky_cursor_ahead
from ingesters.fetch_ahead import FetchAhead
from ingesters.goldsky_pages import (
    NEWEST_FILL_QUERY,
    Cursor,
    Row,
    build_request,
    decode_reply,
    extract_rows,
    is_second_complete,
    normalize_rows,
    order_key,
    parse_cursor,
    plan_page,
)

NAME = "goldsky_ingester"
FIELDS = ("last_timestamp", "last_id")  # suffixes of a backfill range's cursor keys
log = structlog.get_logger()


class GoldskySettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="GOLDSKY_")

    start_timestamp: int = Field(0, ge=0)  # first second ingested when no cursor is stored
    end_timestamp: int | None = Field(None, ge=0)  # last second ingested; None = follow the subgraph
    page_size: int = Field(1000, ge=1, le=1000)
    rate_limit_per_s: float = Field(50.0, gt=0, le=100)  # Goldsky publishes 100 req/s per IP
    poll_interval_s: float = Field(5.0, gt=0)
    backfill_workers: int = Field(4, ge=1, le=64)
    # A cursor this far past the subgraph's newest fill for this long degrades the service (ingesters/cursor_ahead.py).
    cursor_ahead_tolerance_s: int = Field(60, ge=0)
    cursor_ahead_grace_s: float = Field(60.0, ge=0)  # how long past the tolerance before the alarm

    @model_validator(mode="after")
    def _end_after_start(self) -> GoldskySettings:
        if self.end_timestamp is not None and self.end_timestamp < self.start_timestamp:
            raise ValueError("GOLDSKY_END_TIMESTAMP is before GOLDSKY_START_TIMESTAMP")
        return self


@dataclass(frozen=True)
class GoldskyConfig:
    goldsky: GoldskySettings
    source: SourceSettings
    http: HttpSettings
    redis: RedisSettings


def load_config() -> GoldskyConfig:
    source = load(SourceSettings)
    if not source.goldsky_url.startswith(("http://", "https://")):
        raise ConfigError(f"GOLDSKY_URL: must be an http(s) URL (got {source.goldsky_url!r})")
    return GoldskyConfig(load(GoldskySettings), source, load(HttpSettings), load(RedisSettings))


@dataclass(frozen=True)
class Subgraph:
    """The HTTP side, shared by every range of a process: one client, one rate limit."""

    client: httpx.AsyncClient
    limiter: RateLimiter
    config: GoldskyConfig

    async def fetch_page(self, body: dict[str, Any]) -> list[Row]:
        url, http = self.config.source.goldsky_url, self.config.http
        reply = await request_json(
            self.client, "POST", url, settings=http, what="goldsky orderFilledEvents", limiter=self.limiter,
            decode=decode_reply, json=body,
        )  # fmt: skip
        return extract_rows(reply)

    async def newest_fill_timestamp(self) -> int | None:
        """The timestamp of the subgraph's newest fill (None: it has none)."""
        rows = await self.fetch_page({"query": NEWEST_FILL_QUERY})
        return None if not rows else max(order_key(row)[0] for row in rows)


@dataclass
class RangeIngester:
    """Pages one cursor range `[first_ts, last_ts]` (`last_ts` None: open-ended) into the stream."""

    service: Service
    subgraph: Subgraph
    first_ts: int
    last_ts: int | None
    ts_key: str = keys.STATE_GOLDSKY_LAST_TIMESTAMP
    id_key: str = keys.STATE_GOLDSKY_LAST_ID
    done: int = 0  # seconds of the range behind the cursor, for progress
    _complete: Cursor | None = None  # a cursor whose second is known complete
    ahead: FetchAhead = field(init=False)
    past_newest: AheadAlarm = field(init=False)

    def __post_init__(self) -> None:
        self.ahead = FetchAhead(self.subgraph.fetch_page)
        self.past_newest = AheadAlarm(self.subgraph.config.goldsky.cursor_ahead_grace_s)

    def request(self, cursor: Cursor, complete: bool) -> dict[str, Any]:
        size = self.subgraph.config.goldsky.page_size
        return build_request(cursor, second_complete=complete, last_ts=self.last_ts, page_size=size)

    def close_ahead(self) -> None:
        self.ahead.close()

    async def step(self) -> bool:
        stored = await read_cursor(self.service.redis, [self.ts_key, self.id_key])
        cursor = parse_cursor(stored[self.ts_key], stored[self.id_key], self.first_ts)
        complete = is_second_complete(cursor, self.first_ts, self._complete)
        size = self.subgraph.config.goldsky.page_size
        page = plan_page(
            await self.ahead.get(self.request(cursor, complete)),
            cursor=cursor,
            second_complete=complete,
            page_size=size,
        )
        self._complete = page.cursor if page.second_complete else None
        if not page.exhausted:
            self.ahead.start(self.request(page.cursor, is_second_complete(page.cursor, self.first_ts, self._complete)))
        entries, dead = normalize_rows(page.rows)
        if entries or dead or page.cursor != cursor:
            moves = {
                self.ts_key: (stored[self.ts_key], str(page.cursor.timestamp)),
                self.id_key: (stored[self.id_key], page.cursor.last_id),
            }
            # A crash before this line refetches the page; the script writes all of it or nothing.
            await append_with_cursor(self.service.redis, keys.STREAM_ORDER_EVENTS, entries, moves, dead_letters=dead)
        for counter, n in (("fills", len(entries)), ("dead_letters", len(dead)), ("pages", 1)):
            self.service.count(counter, n)
        if page.exhausted and not page.rows and stored[self.ts_key] is not None and self.last_ts is None:
            await self.check_past_newest(cursor.timestamp)
        else:
            self.past_newest.check(None)
        end = self.last_ts if page.exhausted and self.last_ts is not None else page.cursor.timestamp
        self.done = max(0, end - self.first_ts + 1)
        log.info(
            "page",
            range=self.ts_key,
            fills=len(entries),
            dead=len(dead),
            last_timestamp=page.cursor.timestamp,
            sticky=not page.second_complete,
        )
        return not page.exhausted

    async def check_past_newest(self, cursor_ts: int) -> None:
        """Nothing new after the cursor: is that because the cursor is past everything the subgraph holds?"""
        tolerance_s = self.subgraph.config.goldsky.cursor_ahead_tolerance_s
        newest = await self.subgraph.newest_fill_timestamp()
        self.past_newest.check(goldsky_cursor_ahead(cursor_ts, newest, tolerance_s))


async def run(config: GoldskyConfig, *, once: bool = False, stop: asyncio.Event | None = None) -> Service:
    """Follow the subgraph from the stored cursor (or GOLDSKY_START_TIMESTAMP); `once`: up to what exists now."""
    settings = config.goldsky

    async def body(service: Service) -> None:
        async with make_client(config.http) as client:
            subgraph = Subgraph(client, RateLimiter(settings.rate_limit_per_s), config)
            ingester = RangeIngester(service, subgraph, settings.start_timestamp, settings.end_timestamp)
            try:
                await poll_forever(service, ingester.step, interval_s=settings.poll_interval_s, once=once)
            finally:
                ingester.close_ahead()

    return await run_worker(NAME, config.redis, body, stop=stop)


async def backfill(
    config: GoldskyConfig, *, start_ts: int, end_ts: int, workers: int, progress: ProgressCallback | None = None
) -> int:
    """Ingest `[start_ts, end_ts]` as `workers` ranges fetched concurrently; returns the fills appended.

    `progress(done_s, total_s)` is called after every page with the seconds of the range behind the cursors.
    """
    if end_ts < start_ts or workers < 1:
        raise ConfigError(f"backfill: need FROM <= TO and workers >= 1 (got {start_ts}, {end_ts}, {workers})")

    async def body(service: Service) -> None:
        ranges = await plan_backfill(service, "goldsky", start_ts, end_ts, workers)
        async with make_client(config.http) as client:
            subgraph = Subgraph(client, RateLimiter(config.goldsky.rate_limit_per_s), config)
            parts = [
                RangeIngester(
                    service, subgraph, first, last, *(keys.backfill_key("goldsky", first, last, f) for f in FIELDS)
                )
                for first, last in ranges
            ]
            await run_parts(service, parts, end_ts - start_ts + 1, progress)

    service = await run_worker(f"{NAME}_backfill", config.redis, body)
    return service.counters["fills"]


async def start(args: argparse.Namespace) -> None:
    await run(load_config(), once=args.once)


def main(argv: list[str] | None = None) -> int:
    description = "Goldsky orderFilledEvents (v1 exchanges, to the 2026-04-28 cutover) -> stream:order_events."
    return service_main(NAME, start, description + " History: python -m pipeline backfill goldsky.", argv)


if __name__ == "__main__":
    raise SystemExit(main())
