"""Gamma events (with their tags and markets) -> `stream:events`.

Writes: `stream:events` (each entry the Gamma event object as compact JSON, unmodified: tags, nested markets
and their ids included), `stream:dlq` (malformed events, with the raw object and the reason),
`events:content_hash` (event id -> digest of the content last appended), the cursor
`state:polymarket_events_offset`, heartbeat `service:polymarket_events_ingester`.

Cursor: see `ingesters/gamma.py` (`keyset closed=false after=<next_cursor>`, `offset closed=true after=1500`, or
`synced`). Gamma's `/events` answers differently when `closed` is omitted, so both passes send it. Full sync:
open events, then closed ones; afterwards open events are re-listed every EVENTS_REFRESH_S. Only events whose
content hash changed are appended, with their hashes in the same script as the cursor: a crash before that
script refetches the page, after it resumes on the next one; nothing is appended twice.
"""

from __future__ import annotations

import argparse
from typing import Literal

import structlog
from pydantic import Field

from common import keys
from common.config import PipelineSettings, load
from common.service import Service, service_main
from ingesters.gamma import Connections, Resource, SyncKnobs, run_sync, validate_event

NAME = "polymarket_events_ingester"
log = structlog.get_logger()


class EventsSettings(PipelineSettings):
    events_refresh_s: float = Field(60.0, gt=0)
    events_page_limit: int = Field(500, ge=1, le=500)  # the keyset endpoint refuses more than 500
    events_listing: Literal["keyset", "offset", "auto"] = "auto"
    # Gamma publishes 500 requests / 10 s for /events; stay well under it.
    gamma_rate_per_s: float = Field(10.0, gt=0, le=50)


EVENTS = Resource(
    name="events",
    stream=keys.STREAM_EVENTS,
    cursor_key=keys.STATE_POLYMARKET_EVENTS_OFFSET,
    hash_key=keys.EVENTS_CONTENT_HASH,
    validate=validate_event,
)


async def run(settings: EventsSettings, connections: Connections, *, once: bool = False) -> Service:
    """Full sync, then refresh passes until stopped (`once`: the full sync, or one refresh pass, then exit)."""
    knobs = SyncKnobs(
        listing=settings.events_listing,
        page_limit=settings.events_page_limit,
        refresh_s=settings.events_refresh_s,
        rate_per_s=settings.gamma_rate_per_s,
        interval_s=min(settings.events_refresh_s, 5.0),
    )
    return await run_sync(NAME, EVENTS, knobs, connections, once=once)


async def start(args: argparse.Namespace) -> None:
    await run(load(EventsSettings), Connections.load(), once=args.once)


def main(argv: list[str] | None = None) -> int:
    return service_main(NAME, start, "Gamma events (tags, market ids) -> stream:events.", argv)


if __name__ == "__main__":
    raise SystemExit(main())
