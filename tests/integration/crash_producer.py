"""A producer run as a subprocess by test_append_crash.py, which SIGKILLs it at random moments.

It pages through a deterministic source (item i is `str(i)`, pages of PAGE items) with append_with_cursor,
resuming from the cursor in Redis, exactly as an ingester does.
"""

from __future__ import annotations

import asyncio
import sys

from common.config import RedisSettings
from common.redis_client import make_redis
from common.streams import append_with_cursor, read_cursor

STREAM = "stream:crash"
CURSOR = "state:crash_offset"
PAGE = 50


async def produce(port: int, total: int) -> None:
    redis = make_redis(RedisSettings(host="127.0.0.1", port=port))
    offset = (await read_cursor(redis, [CURSOR]))[CURSOR]
    while True:
        start = int(offset or 0)
        if start >= total:
            break
        page = [str(i).encode() for i in range(start, min(total, start + PAGE))]
        new_offset = str(start + len(page))
        await append_with_cursor(redis, STREAM, page, {CURSOR: (offset, new_offset)})
        offset = new_offset
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(produce(int(sys.argv[1]), int(sys.argv[2])))
