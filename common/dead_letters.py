"""Re-delivering dead letters (`stream:dlq`): the write half of `python -m pipeline dlq retry`.

Which dead letters may be retried (only entries every group of their stream gave up on) is the command's
decision; this module only does the write, in one Lua script (lua/retry_dead_letter.lua).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from common import keys
from common.lua_scripts import join_lines, run_script
from common.redis_client import map_redis_errors


async def retry_dead_letters(
    redis: aioredis.Redis, stream: str, payload: bytes | str, dead_letter_ids: Sequence[str]
) -> str | None:
    """Append `payload` to `stream` as a new entry and delete `dead_letter_ids` from the DLQ, atomically.

    Returns the new entry's id, or None (writing nothing) when one of the dead letters is no longer there:
    someone else retried or purged it meanwhile, and re-adding the entry would deliver it twice.
    """
    async with map_redis_errors(f"retry dead letters of {stream}"):
        new_id = await run_script(
            redis, "retry_dead_letter", [stream, keys.STREAM_DLQ], [payload, join_lines(dead_letter_ids)]
        )
    return new_id.decode() if new_id is not None else None
