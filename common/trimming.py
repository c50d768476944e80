"""Trimming streams without losing work (docs/CONTRACT.md §3 rule 5).

Only entries below the oldest one some group still needs are removed (XTRIM MINID), and only once every group
that reads the stream exists: a blind MAXLEN deletes pending entries, and a group created after a trim would
never see what was trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from common.redis_client import map_redis_errors


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _next_id(stream_id: str) -> str:
    ms, seq = stream_id.split("-")
    return f"{ms}-{int(seq) + 1}"


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream id as a tuple that sorts as Redis orders ids."""
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


async def safe_trim_id(redis: aioredis.Redis, stream: str, required_groups: Sequence[str] = ()) -> str | None:
    """The lowest id some group still needs: its oldest pending entry, else the first it has not been given.

    None when the stream has no group, or lacks one of `required_groups`: nothing tells us what is safe to drop.
    """
    groups = await redis.xinfo_groups(stream)
    names = {_text(group["name"]) for group in groups}
    if not groups or not names.issuperset(required_groups):
        return None
    floor: list[str] = []
    for group in groups:
        after_last_delivered = _next_id(_text(group["last-delivered-id"]))
        if int(group["pending"]) > 0:
            # Acks may land between XINFO and XPENDING; an emptied pending list means "up to last delivered",
            # and that id, read first, can only be lower than the truth: still safe.
            summary = await redis.xpending(stream, group["name"])
            floor.append(_text(summary["min"]) if summary["min"] is not None else after_last_delivered)
        else:
            floor.append(after_last_delivered)
    return min(floor, key=stream_id_key)


async def trim_acked(redis: aioredis.Redis, stream: str, required_groups: Sequence[str] = ()) -> int:
    """Remove entries every group has acked (XTRIM MINID); returns how many were removed.

    Pass the groups that must exist first (keys.STREAM_GROUPS): a group created later starts from the oldest
    entry left, so trimming before it exists would lose entries for it.
    """
    async with map_redis_errors(f"trim {stream}"):
        if not await redis.exists(stream):
            return 0
        floor = await safe_trim_id(redis, stream, required_groups)
        if floor is None:
            return 0
        # Exact, not `~`: cheap enough at our batch sizes, and lengths on the dashboard stay truthful.
        return int(await redis.xtrim(stream, minid=floor, approximate=False))
