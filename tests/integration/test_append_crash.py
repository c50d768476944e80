"""A producer killed (SIGKILL) at random moments, then restarted, neither loses nor duplicates (rule 1)."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import redis.asyncio as aioredis

from tests.fixtures.crash_producer import CURSOR, STREAM
from tests.fixtures.helpers import items_in

TOTAL = 20_000


def start_producer(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.fixtures.crash_producer", str(port), str(TOTAL)])


async def test_producer_killed_ten_times_ends_with_every_item_once(redis_server, redis_client: aioredis.Redis) -> None:
    rng = random.Random(7)
    kills = 0
    while kills < 10:
        process = start_producer(redis_server.port)
        # wait until it is actually writing, then kill it at a random moment
        before = await redis_client.xlen(STREAM)
        deadline = time.monotonic() + 20
        while await redis_client.xlen(STREAM) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        if process.poll() is not None:
            break  # it finished before we could kill it: enough kills happened to prove the point
        process.kill()
        process.wait()
        kills += 1
    final = start_producer(redis_server.port)
    assert final.wait(60) == 0

    items = [int(item) for item in items_in(await redis_client.xrange(STREAM))]
    assert kills == 10
    assert items == list(range(TOTAL))  # every item, once, in source order
    assert await redis_client.get(CURSOR) == str(TOTAL).encode()
