"""Parallel backfill for both fill ingesters: a range split into adjacent parts, each paged on its own cursor.

A backfill range is inclusive on both ends, `[first, last]`, in the source's own cursor unit (unix seconds for
Goldsky, block numbers for the chain). `split_range` cuts it into disjoint, adjacent ranges that cover it
exactly: range i+1 starts at range i's last + 1, so there is no gap and no overlap at the seams. Each range has
its own cursor keys (`keys.backfill_key`), and the split itself is stored (`plan_backfill`), so a restart with a
different worker count still resumes the ranges it started with.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from common import keys
from common.service import Service, poll_forever
from common.streams import append_with_cursor, read_cursor

log = structlog.get_logger()

# progress(done, total): called after each page of a backfill; units are the range's (seconds or blocks).
ProgressCallback = Callable[[int, int], None]


def split_range(first: int, last: int, parts: int) -> list[tuple[int, int]]:
    """`[first, last]` -> at most `parts` adjacent inclusive ranges of near-equal size, in order."""
    if last < first:
        raise ValueError(f"empty range [{first}, {last}]")
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    size = last - first + 1
    parts = min(parts, size)
    bounds = [first + size * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]


class RangePart(Protocol):
    """One range of a backfill: `step()` ingests a page (True while more is ready), `done` counts progress."""

    done: int

    async def step(self) -> bool: ...

    def close_ahead(self) -> None:
        """Drop any request made ahead of time."""


async def plan_backfill(service: Service, source: str, first: int, last: int, workers: int) -> list[tuple[int, int]]:
    """The ranges of backfill `[first, last]`: the split stored by an earlier run if any, else a new one (stored)."""
    plan_key = keys.backfill_key(source, first, last, "ranges")
    stored = (await read_cursor(service.redis, [plan_key]))[plan_key]
    if stored is None:
        # A cursor-only write (no entries): the same compare-and-set script as every page.
        await append_with_cursor(service.redis, keys.STREAM_ORDER_EVENTS, [], {plan_key: (None, str(workers))})
    elif int(stored) != workers:
        log.warning("resuming a backfill with its original split", ranges=int(stored), asked=workers)
    return split_range(first, last, int(stored or workers))


async def run_parts(
    service: Service, parts: Sequence[RangePart], total: int, progress: ProgressCallback | None
) -> None:
    """Page every range concurrently to its end (or until stopped), reporting progress after each page."""

    async def step_and_report(part: RangePart) -> bool:
        more = await part.step()
        if progress is not None:
            progress(sum(p.done for p in parts), total)
        return more

    steps = [functools.partial(step_and_report, part) for part in parts]
    try:
        await asyncio.gather(*(poll_forever(service, step, interval_s=1.0, once=True) for step in steps))
    finally:
        for part in parts:
            part.close_ahead()
    log.info("backfill finished", parts=len(parts), stopped=service.stop.is_set(), **dict(service.counters))
