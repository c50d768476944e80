"""`python -m pipeline migrate-keys --from OLD`: move the pipeline's Redis keys from prefix OLD to REDIS_KEY_PREFIX.

Run it after changing REDIS_KEY_PREFIX (e.g. to `{pm}:` before moving to Redis Cluster), with every service stopped:
it refuses while a service heartbeats under either prefix, and refuses before moving anything when a target name
is taken. Moves every key matching `stream:*`, `state:*`, `markets:*`, `events:*`, `failures:*`, `service:*` and
`lock:*` under OLD (`--from ''` is the default, unprefixed names). On one Redis server or Sentinel, and on Redis
Cluster when both prefixes carry the same hash tag, each key is RENAMEd: a stream keeps its consumer groups,
pending entries and ids. Between two Redis Cluster slots RENAME is refused, so each key is copied with DUMP +
RESTORE (which carries a stream's groups and pending entries too) and then deleted. The simplest way onto a
cluster: migrate on the old standalone server, then copy the one slot's keys with your usual tool (or
`redis-cli --cluster import`). Dead letters keep naming the stream they came from as it was then called;
`dlq` reads that name under the current prefix.
"""

from __future__ import annotations

import argparse
import re
import time

from common import keys
from common.config import ServiceSettings, load
from common.key_prefix import keys_under, migrate_keys
from common.redis_client import make_redis, map_redis_errors
from common.status.snapshot import service_status
from pipeline.ops.command import confirm, console, fail, make_parser, run_command, settings

LIVE = ("running", "degraded", "starting", "stopping")


async def migrate(args: argparse.Namespace) -> int:
    old, new = args.old_prefix, keys.PREFIX
    if old == new:
        return fail(f"migrate-keys: --from {old!r} is REDIS_KEY_PREFIX already; nothing to move")
    redis = make_redis(settings()[0])
    try:
        async with map_redis_errors("migrate keys"):
            found = await keys_under(redis, old)
            now, dead_after_s = time.time(), load(ServiceSettings).dead_after_s
            heartbeats = [key for key in found if key.startswith(old + "service:")]
            heartbeats += [raw.decode() async for raw in redis.scan_iter(match=new + "service:*", count=1000)]
            live = [
                key
                for key in heartbeats
                if service_status(key, await redis.hgetall(key), now=now, dead_after_s=dead_after_s).state in LIVE
            ]
            if live:
                return fail(f"migrate-keys: services still running ({', '.join(live)}); stop them first")
            if not found:
                return fail(f"migrate-keys: no pipeline keys under {old!r}; nothing to move")
            console.print(f"migrate-keys will move {len(found):,} key(s) from {old!r} to {new!r}", markup=False)
            if not confirm("Move them?", yes=args.yes):
                return fail("migrate-keys: nothing moved")
            counts = await migrate_keys(
                redis, old, new, progress=lambda how, a, b: console.print(f"  {how} {a} -> {b}", markup=False)
            )
    finally:
        await redis.aclose()
    console.print(f"migrate-keys: {counts['renamed']:,} renamed, {counts['copied']:,} copied across slots")
    return 0


def prefix_argument(text: str) -> str:
    if re.search(r"[\s*?\[\]\\]", text):
        raise argparse.ArgumentTypeError(f"{text!r}: a prefix holds no whitespace, * ? [ ] or \\")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("migrate-keys", __doc__)
    parser.add_argument("--from", dest="old_prefix", type=prefix_argument, default="",
                        help="the prefix the keys carry now (default: none)")  # fmt: skip
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)
    return run_command("migrate-keys", lambda: migrate(args))
