"""Re-delivering dead letters (`stream:dlq`): the write half of `python -m pipeline dlq retry`.

Which dead letters may be retried (only entries every group of their stream gave up on) is the command's
decision; this module only does the write, in one Lua script (lua/retry_dead_letter.lua).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from common import keys
from common.errors import PoisonMessage
from common.lua_scripts import join_lines, run_script
from common.pages import items_of, page
from common.payloads import DeadLetter
from common.redis_client import map_redis_errors


def redelivered(letter: DeadLetter) -> tuple[bytes, int]:
    """What re-delivering `letter` appends, and how many items that holds: a dead item as a page of one, a whole
    entry as it was."""
    payload = letter.payload.encode()
    if letter.item is not None:
        return page([payload]), 1
    try:
        return payload, len(items_of(payload))
    except PoisonMessage:  # still not a page of items: it will be dead-lettered again, whole
        return payload, 1


async def retry_dead_letters(redis: aioredis.Redis, letter: DeadLetter, dead_letter_ids: Sequence[str]) -> str | None:
    """Append `letter`'s payload to its stream as a new entry and delete `dead_letter_ids` from the DLQ, atomically.

    Returns the new entry's id, or None (writing nothing) when one of the dead letters is no longer there:
    someone else retried or purged it meanwhile, and re-adding the entry would deliver it twice.
    """
    payload, items = redelivered(letter)
    async with map_redis_errors(f"retry dead letters of {letter.stream}"):
        new_id = await run_script(redis, "retry_dead_letter", [letter.stream, keys.STREAM_DLQ, keys.STREAM_ITEMS],
                                  [payload, join_lines(dead_letter_ids), items])  # fmt: skip
    return new_id.decode() if new_id is not None else None
