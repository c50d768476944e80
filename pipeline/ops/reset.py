"""`python -m pipeline reset`: forget everything the pipeline has read, so the next run starts from scratch.

Deletes from Redis (listed, with counts, before anything is deleted):
  the streams `stream:markets`, `stream:events`, `stream:order_events`, `stream:trades`, `stream:dlq` (their
  consumer groups go with them) and their item counts `stream:items`, and every key matching `state:*` (cursors,
  backfill ranges), `markets:*` (token map, token lookups, content hashes), `events:*`, `failures:*`, `service:*`
  (heartbeats and counters) and `lock:*` (the writers' insert locks), each name under REDIS_KEY_PREFIX when one is
  set.
With `--truncate-clickhouse`, also empties the tables `markets`, `events` and `trades` (so the view
`order_filled_events` too) and `order_filled_events_before_view` where the upgrade kept it (the schema and its
migrations stay). Asks for confirmation unless `--yes`; refuses while a service heartbeats
(stop them first) unless `--force`, because a running service would write its in-memory state straight back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import redis.asyncio as aioredis

from common import keys, tables
from common.clickhouse import make_client, map_clickhouse_errors
from common.config import ClickHouseSettings, ServiceSettings, load
from common.redis_client import make_redis, map_redis_errors
from common.status.snapshot import read_services
from pipeline.ops.command import chunks, confirm, console, fail, make_parser, run_command, settings

# Streams (and their item counts) are listed by name; the rest by pattern, under this process's REDIS_KEY_PREFIX.
PATTERNS = tuple(keys.PREFIX + pattern for pattern in keys.LOGICAL_PATTERNS if pattern != "stream:*")


async def keys_to_delete(redis: aioredis.Redis) -> dict[str, list[str]]:
    """What a reset deletes, by pattern (streams under their own names)."""
    found: dict[str, list[str]] = {}
    for stream in (*keys.ALL_STREAMS, keys.STREAM_ITEMS):
        found[stream] = [stream] if await redis.exists(stream) else []
    for pattern in PATTERNS:
        found[pattern] = sorted({key.decode() async for key in redis.scan_iter(match=pattern, count=1000)})
    return found


async def live_services(redis: aioredis.Redis) -> list[str]:
    services = await read_services(redis, now=time.time(), dead_after_s=load(ServiceSettings).dead_after_s)
    return [s.name for s in services if s.state in ("running", "degraded", "starting", "stopping")]


async def delete_keys(redis: aioredis.Redis, names: list[str]) -> int:
    deleted = 0
    for batch in chunks(names, 1000):
        deleted += int(await redis.unlink(*batch))
    return deleted


def truncate_tables(ch: ClickHouseSettings) -> None:
    client = make_client(ch, database="default")
    with contextlib.closing(client), map_clickhouse_errors("truncate failed"):
        for table in tables.STORED:  # TRUNCATE of a view is refused
            client.command(f"TRUNCATE TABLE IF EXISTS {ch.database}.{table}")


async def reset(args: argparse.Namespace) -> int:
    redis_settings, ch = settings()
    redis = make_redis(redis_settings)
    try:
        async with map_redis_errors("reset"):
            live = await live_services(redis)
            if live and not args.force:
                return fail(f"reset: services still running: {', '.join(live)}; stop them first (or --force)")
            found = await keys_to_delete(redis)
            console.print("reset will delete from Redis:", markup=False)
            for pattern, names in found.items():
                console.print(f"  {pattern:<22} {len(names):>8,} key(s)", markup=False)
            if args.truncate_clickhouse:
                console.print(f"and truncate ClickHouse tables {', '.join(tables.STORED)} in {ch.database}",
                              markup=False)  # fmt: skip
            if not confirm("Delete all of this?", yes=args.yes):
                return fail("reset: nothing deleted")
            deleted = await delete_keys(redis, [name for names in found.values() for name in names])
    finally:
        await redis.aclose()
    if args.truncate_clickhouse:
        await asyncio.to_thread(truncate_tables, ch)
    console.print(f"reset: deleted {deleted:,} Redis key(s)" + (", truncated the tables" * args.truncate_clickhouse))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("reset", __doc__)
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--truncate-clickhouse", action="store_true", help="also empty the ClickHouse tables")
    parser.add_argument("--force", action="store_true", help="reset even while services heartbeat")
    args = parser.parse_args(argv)
    return run_command("reset", lambda: reset(args))
