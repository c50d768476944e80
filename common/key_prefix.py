"""REDIS_KEY_PREFIX changes without stranding data: the check every service runs at start, and the move.

A process whose prefix differs from the one the data was written under would start over from empty cursors and
streams while the real ones sit under the old names. So every service (and `python -m pipeline run`) first looks
for pipeline keys under another prefix and refuses to start when it finds any, naming the command that moves them.
The pipeline's keys are recognised by the names of its streams and its fixed cursors, whatever comes before them.

`migrate_keys` moves every pipeline key (`keys.LOGICAL_PATTERNS`) from one prefix to another, services stopped:
RENAMENX where both names hash to one slot (standalone and Sentinel always; on Redis Cluster when both prefixes
share a hash tag): a stream keeps its consumer groups, their pending entries and last-delivered ids, and the key
keeps its TTL. Across Redis Cluster slots RENAME is refused (CROSSSLOT), so the key is copied with DUMP + RESTORE
(the serialized value carries a stream's groups, pending lists and ids too, and the TTL is passed along), then
deleted; that copy is not atomic, which is why nothing may write meanwhile (refused while a service heartbeats).
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis
from redis.crc import key_slot

from common import keys
from common.errors import ConfigError
from common.redis_client import is_cluster

# The fixed names whose presence under some prefix means "a pipeline's data lives here".
MARKERS = (
    *keys.LOGICAL_STREAMS,
    *(
        keys.logical_name(name)
        for name in (
            keys.STATE_POLYMARKET_OFFSET,
            keys.STATE_POLYMARKET_EVENTS_OFFSET,
            keys.STATE_GOLDSKY_LAST_TIMESTAMP,
            keys.STATE_GOLDSKY_LAST_ID,
            keys.STATE_CHAIN_LAST_BLOCK,
        )
    ),
)


async def prefixes_in_use(redis: aioredis.Redis) -> dict[str, list[str]]:
    """Prefix -> the marker keys found under it (a stream or a cursor of the pipeline)."""
    found: dict[str, list[str]] = {}
    for pattern in ("*stream:*", "*state:*"):
        async for raw in redis.scan_iter(match=pattern, count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            for marker in MARKERS:
                if key.endswith(marker):
                    found.setdefault(key.removesuffix(marker), []).append(key)
    return found


async def check_key_prefix(redis: aioredis.Redis) -> None:
    """Raise ConfigError when pipeline keys exist under a prefix other than REDIS_KEY_PREFIX."""
    others = {prefix: names for prefix, names in (await prefixes_in_use(redis)).items() if prefix != keys.PREFIX}
    if not others:
        return
    old = sorted(others)[0]
    raise ConfigError(
        f"REDIS_KEY_PREFIX is {keys.PREFIX!r} but Redis holds the pipeline's keys under "
        + ", ".join(f"{prefix!r} ({', '.join(sorted(names)[:3])})" for prefix, names in sorted(others.items()))
        + f": stop the services and move them with `python -m pipeline migrate-keys --from '{old}'`, "
        f"or set REDIS_KEY_PREFIX={old!r}"
    )


async def keys_under(redis: aioredis.Redis, prefix: str) -> list[str]:
    """Every pipeline key under `prefix` (prefixes are glob-safe: REDIS_KEY_PREFIX refuses * ? [ ] \\)."""
    found: set[str] = set()
    for pattern in keys.LOGICAL_PATTERNS:
        async for raw in redis.scan_iter(match=prefix + pattern, count=1000):
            found.add(raw.decode() if isinstance(raw, bytes) else raw)
    return sorted(found)


async def migrate_keys(
    redis: aioredis.Redis, old: str, new: str, *, progress: Callable[[str, str, str], None] | None = None
) -> dict[str, int]:
    """Move every pipeline key from prefix `old` to prefix `new`; returns how many were renamed and copied.

    Refuses (ConfigError) before moving anything when a target name is taken."""
    moves = [(key, new + key.removeprefix(old)) for key in await keys_under(redis, old)]
    moves = [(source, target) for source, target in moves if source != target]
    taken = [target for _, target in moves if await redis.exists(target)]
    if taken:
        shown = ", ".join(taken[:5])
        raise ConfigError(f"migrate-keys: {len(taken)} target key(s) exist already ({shown}); nothing moved")
    counts = {"renamed": 0, "copied": 0}
    cluster = is_cluster(redis)
    for source, target in moves:
        if not cluster or key_slot(source.encode()) == key_slot(target.encode()):
            await redis.renamenx(source, target)
            how = "renamed"
        else:
            await _copy_across_slots(redis, source, target)
            how = "copied"
        counts[how] += 1
        if progress is not None:
            progress(how, source, target)
    await _rename_item_fields(redis, old, new)
    return counts


async def _rename_item_fields(redis: aioredis.Redis, old: str, new: str) -> None:
    """`stream:items` (moved with the rest) counts by stream key: its fields follow the streams to the new prefix."""
    items_key = new + keys.logical_name(keys.STREAM_ITEMS)
    counts = {field.decode(): value for field, value in (await redis.hgetall(items_key)).items()}
    renamed = {new + field.removeprefix(old): value for field, value in counts.items() if field.startswith(old)}
    if renamed:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hdel(items_key, *(field for field in counts if field.startswith(old)))
            pipe.hset(items_key, mapping=renamed)
            await pipe.execute()


async def _copy_across_slots(redis: aioredis.Redis, source: str, target: str) -> None:
    """DUMP + RESTORE (keeping the TTL) + DEL: RENAME between two Redis Cluster slots is refused."""
    dumped = await redis.dump(source)
    if dumped is None:  # gone meanwhile (a lock that expired)
        return
    ttl_ms = await redis.pttl(source)
    await redis.restore(target, max(0, ttl_ms), dumped)
    await redis.delete(source)
