"""A Redis that is out of memory or a read-only replica: writers get TransientSinkError(sink="redis") and nothing
is lost, acked or written twice (docs/CONTRACT.md §3 rule 2).

Under OOM Redis refuses commands that may grow memory (XADD, HSET, XGROUP CREATE) but not acks, and lets a script
that has already written go on: a batch in hand still finishes (its XACK comes first), while producers, a
(re)starting consumer and heartbeats wait for memory.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from common import keys
from common.clickhouse import make_client
from common.config import ClickHouseSettings, RedisSettings
from common.errors import SinkCommandError, TransientSinkError
from common.redis_client import make_redis
from common.streams import Entry, Finish, StreamConsumer, append_with_cursor, run_consumer
from processors import clickhouse_writer, trade_processor
from tests.fixtures.fills_world import make_fills, make_markets, publish_fills, publish_markets
from tests.fixtures.helpers import FAST_STREAMS, wait_until
from tests.fixtures.redis_server import RedisServer, group_backlog, start_replica

STREAM = "stream:test"


@pytest.fixture
async def out_of_memory(redis_client: aioredis.Redis) -> AsyncIterator[Callable[[bool], Awaitable[None]]]:
    """Switches the session's redis-server to `maxmemory 1` with `noeviction` (every write refused with OOM) and
    back; the server's own settings are restored after the test whatever happens."""
    saved = {name: (await redis_client.config_get(name))[name] for name in ("maxmemory", "maxmemory-policy")}

    async def switch(on: bool) -> None:
        if on:
            await redis_client.config_set("maxmemory-policy", "noeviction")
            await redis_client.config_set("maxmemory", 1)
        else:
            await redis_client.config_set("maxmemory", saved["maxmemory"])

    yield switch
    for name, value in saved.items():
        await redis_client.config_set(name, value)


async def test_append_to_a_redis_out_of_memory_is_transient_and_writes_nothing(redis_client, out_of_memory) -> None:
    await out_of_memory(True)
    with pytest.raises(TransientSinkError) as raised:
        await append_with_cursor(redis_client, STREAM, [b"a"], {"state:test_cursor": (None, "1")})
    assert raised.value.sink == "redis" and "OutOfMemoryError" in str(raised.value)
    await out_of_memory(False)
    assert await redis_client.exists(STREAM, "state:test_cursor") == 0


async def test_consumer_starting_on_a_redis_out_of_memory_waits_and_then_consumes(redis_client, out_of_memory) -> None:
    await redis_client.xadd(STREAM, {"data": b"fill"})
    worker = StreamConsumer(redis_client, stream=STREAM, group="g", consumer="c1", settings=FAST_STREAMS,
                            batch_max=10)  # fmt: skip
    errors: list[BaseException] = []
    handled: list[bytes] = []

    async def handle(batch: list[Entry]) -> None:
        handled.extend(entry.data for entry in batch)
        await worker.finish([entry.id for entry in batch])

    await out_of_memory(True)  # XGROUP CREATE is refused with OOM, even for a group that would already exist
    consuming = asyncio.create_task(run_consumer(worker, handle, stop=asyncio.Event(), on_error=errors.append,
                                                 once=True))  # fmt: skip

    async def reported() -> int:
        return len(errors)

    await wait_until(reported, "an error reported", accept=lambda n: n > 0, timeout_s=10)
    assert isinstance(errors[0], TransientSinkError) and errors[0].sink == "redis"
    assert handled == [] and not consuming.done()
    await out_of_memory(False)
    await asyncio.wait_for(consuming, timeout=30)
    assert handled == [b"fill"]
    assert (await redis_client.xpending(STREAM, "g"))["pending"] == 0


async def test_a_batch_in_hand_still_finishes_on_a_redis_out_of_memory(redis_client, out_of_memory) -> None:
    await redis_client.xadd(STREAM, {"data": b"fill"})
    worker = StreamConsumer(redis_client, stream=STREAM, group="g", consumer="c1", settings=FAST_STREAMS,
                            batch_max=10)  # fmt: skip
    await worker.ensure_group()
    [entry] = await worker.read()
    await out_of_memory(True)
    assert await worker.finish({entry.id: Finish(outputs=[(b"trade", 1)])}, output_stream="stream:out") == (1, 1, 0, 0)
    await out_of_memory(False)
    assert (await redis_client.xpending(STREAM, "g"))["pending"] == 0


async def test_a_command_against_the_wrong_key_type_is_a_command_error(redis_client) -> None:
    await redis_client.set(STREAM, b"not a stream")
    with pytest.raises(SinkCommandError) as raised:
        await append_with_cursor(redis_client, STREAM, [b"a"], {"state:test_cursor": (None, "1")})
    assert raised.value.sink == "redis" and "WRONGTYPE" in str(raised.value)


@pytest.fixture
async def replica(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[aioredis.Redis]:
    """A second redis-server, a read-only replica of the session's one (flushed by `redis_client`)."""
    server = await asyncio.to_thread(start_replica, redis_server, tmp_path)
    client = make_redis(server.settings)
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


async def test_append_to_a_read_only_replica_is_transient(replica: aioredis.Redis) -> None:
    with pytest.raises(TransientSinkError) as raised:
        await append_with_cursor(replica, STREAM, [b"a"], {"state:test_cursor": (None, "1")})
    assert raised.value.sink == "redis" and "ReadOnlyError" in str(raised.value)


async def test_writer_restarted_on_a_redis_out_of_memory_keeps_everything_pending(
    redis_client: aioredis.Redis, redis_settings: RedisSettings, ch_settings: ClickHouseSettings, out_of_memory
) -> None:
    rng = random.Random(13)
    markets = make_markets(rng, 3)
    fills = make_fills(rng, markets, groups=40)
    writer = clickhouse_writer.WriterSettings()
    await clickhouse_writer.run(
        writer, redis=redis_settings, clickhouse=ch_settings, streams=FAST_STREAMS, once=True
    )  # fmt: skip  (creates the groups and the tables)
    await publish_markets(redis_client, markets)
    await publish_fills(redis_client, fills)
    await trade_processor.run(trade_processor.ProcessorSettings(), redis=redis_settings, streams=FAST_STREAMS,
                              once=True)  # fmt: skip
    client = make_client(ch_settings)

    async def stored() -> int:
        return await asyncio.to_thread(client.command, "SELECT count() FROM trades")

    async def backlog() -> int:
        return await group_backlog(redis_client, keys.STREAM_TRADES, keys.GROUP_CLICKHOUSE_WRITER)

    await out_of_memory(True)
    stop = asyncio.Event()
    running = asyncio.create_task(clickhouse_writer.run(writer, redis=redis_settings, clickhouse=ch_settings,
                                                        streams=FAST_STREAMS, stop=stop))  # fmt: skip
    try:
        await asyncio.sleep(1.5)  # the writer retries, degraded; it takes nothing it could not ack
        assert (await stored(), await backlog()) == (0, await redis_client.xlen(keys.STREAM_TRADES))
        await out_of_memory(False)
        await wait_until(backlog, "the backlog written", accept=lambda n: n == 0, timeout_s=30)
    finally:
        stop.set()
        service = await asyncio.wait_for(running, timeout=30)
    assert "redis" in service.last_error and "OutOfMemoryError" in service.last_error
    assert await asyncio.to_thread(client.command, "SELECT count() - uniqExact(id) FROM trades") == 0
    assert await stored() == len(fills)
    client.close()
