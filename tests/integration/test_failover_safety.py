"""What a Redis failover must not break (real redis-servers, embedded ClickHouse): a batch's dedup token is its own,
so stream ids re-issued by a new primary never make ClickHouse drop another batch as a retry; one writer per table,
a second one waiting as a standby; a lock is held only once the replicas have it (WAIT)."""

from __future__ import annotations

import asyncio
import random
import signal
import time

import pytest

from common import keys, unique_insert
from common.clickhouse import apply_migrations
from common.errors import TransientSinkError
from common.payloads import encode_trade
from common.redis_client import make_redis
from common.redis_probe import connected_replicas
from common.streams import Entry
from common.unique_insert import insert_lock
from processors import clickhouse_writer
from processors.trades import derive_trade
from tests.fixtures.fills_world import make_fills, make_markets
from tests.fixtures.redis_server import start_replica
from tests.integration.test_writer_streams import (
    FAST_STREAMS,
    TRADES_STREAM,
    counts,
    insert_as_the_writer,
    publish_trades,
)


async def test_a_batch_under_reissued_stream_ids_is_stored_and_the_same_batch_again_is_dropped(
    redis_client, ch_settings
) -> None:
    apply_migrations(ch_settings)
    fills = make_fills(random.Random(23), make_markets(random.Random(23), 3), groups=40)
    half = len(fills) // 2
    stream_ids = [f"1777000000000-{n}" for n in range(half)]  # what a lagging new primary hands out again

    def entries(batch: list) -> list[Entry]:
        return [Entry(entry_id, encode_trade(derive_trade(fill, None)), 1)
                for entry_id, fill in zip(stream_ids, batch, strict=True)]  # fmt: skip

    lost_primary_batch, new_primary_batch = entries(fills[:half]), entries(fills[half : 2 * half])
    # no unique check (the bench knob): only the token stands between a batch and a second copy of it
    tokens_only = ch_settings.model_copy(update={"unique_keys": False})
    await insert_as_the_writer(redis_client, tokens_only, TRADES_STREAM, lost_primary_batch)
    await insert_as_the_writer(redis_client, tokens_only, TRADES_STREAM, lost_primary_batch)  # a replay
    assert counts(ch_settings, "trades") == (half, half)

    await insert_as_the_writer(redis_client, tokens_only, TRADES_STREAM, new_primary_batch)
    assert counts(ch_settings, "trades") == (2 * half, 2 * half)  # stream ids alone: it was dropped, (half, half)


# --- one writer per table ----------------------------------------------------------------------------------------


async def wait_until(condition, *, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def writer(name: str, redis_settings, ch_settings, stop: asyncio.Event, *, once: bool = False) -> asyncio.Task:
    return asyncio.create_task(clickhouse_writer.run(
        clickhouse_writer.WriterSettings(clickhouse_writer_consumer=name), redis=redis_settings,
        clickhouse=ch_settings, streams=FAST_STREAMS, stop=stop, once=once,
    ))  # fmt: skip


async def lease_holder(redis, table: str = "trades") -> str | None:
    holder = await redis.get(keys.writer_lease_key(table))
    return holder.decode() if holder else None


async def writer_consumers(redis) -> set[str]:
    if not await redis.exists(keys.STREAM_TRADES):
        return set()
    groups = {g["name"].decode() for g in await redis.xinfo_groups(keys.STREAM_TRADES)}
    if keys.GROUP_CLICKHOUSE_WRITER not in groups:
        return set()
    consumers = await redis.xinfo_consumers(keys.STREAM_TRADES, keys.GROUP_CLICKHOUSE_WRITER)
    return {c["name"].decode() for c in consumers}


async def test_a_second_writer_waits_as_a_standby_and_takes_over_when_the_first_stops(
    redis_client, redis_settings, ch_settings
) -> None:
    fills = make_fills(random.Random(24), make_markets(random.Random(24), 3), groups=60)
    first, second = fills[: len(fills) // 2], fills[len(fills) // 2 :]
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    running_a = writer("writer-a", redis_settings, ch_settings, stop_a)
    await wait_until(lambda: has(lease_holder(redis_client), "writer-a"))
    running_b = writer("writer-b", redis_settings, ch_settings, stop_b)
    try:
        await publish_trades(redis_client, first)
        await wait_until(lambda: stored(ch_settings, len(first)))
        assert await lease_holder(redis_client) == "writer-a"
        assert await writer_consumers(redis_client) == {"writer-a"}  # the standby has read nothing

        stop_a.set()
        service_a = await running_a
        await wait_until(lambda: has(lease_holder(redis_client), "writer-b"), timeout_s=10)
        await publish_trades(redis_client, second)
        await wait_until(lambda: stored(ch_settings, len(fills)))
    finally:
        stop_a.set()
        stop_b.set()
        service_b = await running_b
    assert counts(ch_settings, "trades") == counts(ch_settings, "order_filled_events") == (len(fills), len(fills))
    assert (service_a.counters["rows_written"], service_b.counters["rows_written"]) == (len(first), len(second))
    assert await lease_holder(redis_client) is None  # released on stop


async def test_a_lease_left_by_a_dead_writer_expires_and_a_lost_lease_stops_its_writer(
    redis_client, redis_settings, ch_settings, monkeypatch
) -> None:
    monkeypatch.setattr(unique_insert, "WRITER_LEASE_TTL_S", 1.5)
    fills = make_fills(random.Random(25), make_markets(random.Random(25), 3), groups=20)
    await publish_trades(redis_client, fills)
    await redis_client.set(keys.writer_lease_key("events"), "dead-writer", px=1500)  # died without releasing it
    started = time.monotonic()
    service = await writer("writer-c", redis_settings, ch_settings, asyncio.Event(), once=True)
    assert time.monotonic() - started >= 1.0 and service.counters["rows_written"] == len(fills)

    running = writer("writer-c", redis_settings, ch_settings, asyncio.Event())
    await wait_until(lambda: has(lease_holder(redis_client), "writer-c"))
    # what a failover that lost the lease, then another writer taking it, leaves on the new primary
    await redis_client.set(keys.writer_lease_key("trades"), "intruder", px=60_000)
    service = await asyncio.wait_for(running, timeout=10)  # stops by itself
    assert "writer lease lock:insert:trades:writer taken by intruder; stopping" in service.last_error


async def test_a_writer_that_cannot_extend_its_lease_for_its_time_to_live_stops(
    redis_client, redis_settings, ch_settings, monkeypatch
) -> None:
    monkeypatch.setattr(unique_insert, "WRITER_LEASE_TTL_S", 1.5)
    running = writer("writer-d", redis_settings, ch_settings, asyncio.Event())
    await wait_until(lambda: has(lease_holder(redis_client), "writer-d"))
    saved = await redis_client.config_get("maxmemory")
    await redis_client.config_set("maxmemory", 1)  # every write refused (noeviction, the server's default)
    try:  # as on a primary cut off from the others: the lease may be gone, another writer may hold it elsewhere
        service = await asyncio.wait_for(running, timeout=10)  # stops by itself
    finally:
        await redis_client.config_set("maxmemory", saved["maxmemory"])
    assert "writer lease lock:insert:events:writer not extended for 1.5 s" in service.last_error


async def has(value, expected) -> bool:
    return await value == expected


async def stored(ch_settings, rows: int) -> bool:
    return await asyncio.to_thread(counts, ch_settings, "trades") == (rows, rows)


# --- WAIT after taking a lock, where replicas exist ----------------------------------------------------------------


async def test_a_lock_is_held_only_once_the_replicas_have_it(redis_server, redis_client, tmp_path, monkeypatch):
    replica = await asyncio.to_thread(start_replica, redis_server, tmp_path)
    replica_client = make_redis(replica.settings)
    try:
        await wait_until(lambda: replicas_up(redis_client), timeout_s=15)
        async with insert_lock(redis_client, "trades", owner="writer-a", ttl_s=30):
            assert await replica_client.get(keys.insert_lock_key("trades")) == b"writer-a"  # WAIT: it has it

        assert replica.process is not None
        replica.process.send_signal(signal.SIGSTOP)  # still connected, acks nothing
        monkeypatch.setattr(unique_insert, "WAIT_REPLICAS_MS", 300)
        try:
            with pytest.raises(TransientSinkError, match=r"0 of 1 replicas have it after 300 ms \(WAIT\)"):
                async with insert_lock(redis_client, "trades", owner="writer-a", ttl_s=30):
                    raise AssertionError("held without the replica")
            assert await redis_client.exists(keys.insert_lock_key("trades")) == 0  # given back
        finally:
            replica.process.send_signal(signal.SIGCONT)
    finally:
        await replica_client.aclose()
        replica.stop()


async def replicas_up(redis) -> bool:
    return await connected_replicas(redis) == 1
