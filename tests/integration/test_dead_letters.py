"""Re-delivering dead letters against a real redis-server (`common.dead_letters`, lua/retry_dead_letter.lua)."""

from __future__ import annotations

import redis.asyncio as aioredis

from common import keys
from common.dead_letters import retry_dead_letters
from common.payloads import DeadLetter

STREAM = "stream:test"


async def test_retry_readds_the_payload_once_and_deletes_every_dead_letter(redis_client: aioredis.Redis) -> None:
    first = (await redis_client.xadd(keys.STREAM_DLQ, {"data": b'{"group": "a"}'})).decode()
    second = (await redis_client.xadd(keys.STREAM_DLQ, {"data": b'{"group": "b"}'})).decode()
    kept = (await redis_client.xadd(keys.STREAM_DLQ, {"data": b'{"group": "other entry"}'})).decode()

    new_id = await retry_dead_letters(redis_client, DeadLetter(stream=STREAM, payload='[{"fill":1},{"fill":2}]'),
                                      [first, second])  # fmt: skip

    [(entry_id, fields)] = await redis_client.xrange(STREAM)
    assert (entry_id.decode(), fields) == (new_id, {b"data": b'[{"fill":1},{"fill":2}]'})
    assert [entry_id.decode() for entry_id, _ in await redis_client.xrange(keys.STREAM_DLQ)] == [kept]
    assert await redis_client.hget(keys.STREAM_ITEMS, STREAM) == b"2"


async def test_retry_of_a_dead_item_readds_it_as_a_page_of_one(redis_client: aioredis.Redis) -> None:
    letter = (await redis_client.xadd(keys.STREAM_DLQ, {"data": b"{}"})).decode()

    await retry_dead_letters(redis_client, DeadLetter(stream=STREAM, entry_id="1-0", item=7, payload='{"fill":7}'),
                             [letter])  # fmt: skip

    [(_, fields)] = await redis_client.xrange(STREAM)
    assert fields == {b"data": b'[{"fill":7}]'}
    assert await redis_client.hget(keys.STREAM_ITEMS, STREAM) == b"1"
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0


async def test_retry_of_a_dead_letter_already_gone_writes_nothing(redis_client: aioredis.Redis) -> None:
    present = (await redis_client.xadd(keys.STREAM_DLQ, {"data": b"{}"})).decode()
    gone = (await redis_client.xadd(keys.STREAM_DLQ, {"data": b"{}"})).decode()
    await redis_client.xdel(keys.STREAM_DLQ, gone)  # a concurrent retry or purge got there first

    letter = DeadLetter(stream=STREAM, payload='{"fill": 1}')
    assert await retry_dead_letters(redis_client, letter, [present, gone]) is None
    assert await redis_client.exists(STREAM) == 0
    assert await redis_client.xlen(keys.STREAM_DLQ) == 1
