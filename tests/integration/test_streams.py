"""Delivery primitives against a real redis-server (docs/CONTRACT.md §3 rules 1, 2, 5)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from common import keys
from common.config import StreamSettings
from common.errors import CursorMoved
from common.streams import (
    DEATHS_ALONE_LIMIT,
    BatchHandler,
    Entry,
    Finish,
    StreamConsumer,
    append_with_cursor,
    dead_entry,
    read_cursor,
    run_consumer,
)
from common.trimming import trim_acked

STREAM = "stream:test"
CURSOR = "state:test_cursor"


def fast_settings(**overrides: object) -> StreamSettings:
    values: dict[str, object] = {
        "block_ms": 20,
        "claim_min_idle_ms": 100,
        "claim_interval_s": 0.05,
        "max_deliveries": 3,
    }
    values.update(overrides)
    return StreamSettings(**values)


def consumer(redis: aioredis.Redis, name: str, **overrides: object) -> StreamConsumer:
    return StreamConsumer(
        redis, stream=STREAM, group="g", consumer=name, settings=fast_settings(**overrides), batch_max=100
    )


async def stream_payloads(redis: aioredis.Redis, stream: str = STREAM) -> list[bytes]:
    return [fields[b"data"] for _, fields in await redis.xrange(stream)]


def out(*payloads: bytes) -> Finish:
    """An entry's outputs, one item each."""
    return Finish(outputs=[(payload, 1) for payload in payloads])


async def test_append_writes_page_and_cursor_together(redis_client: aioredis.Redis) -> None:
    # Given an empty stream, when a page is appended with its cursor
    appended = await append_with_cursor(
        redis_client, STREAM, [b'"a"', b'"b"'], {CURSOR: (None, "2")}, dead_letters=[b'{"error":"bad"}']
    )
    # Then the page, its dead letters and the cursor are all there, and the items are counted
    assert appended == 1
    assert await stream_payloads(redis_client) == [b'["a","b"]']
    assert await stream_payloads(redis_client, keys.STREAM_DLQ) == [b'{"error":"bad"}']
    assert await read_cursor(redis_client, [CURSOR]) == {CURSOR: "2"}
    assert await redis_client.hgetall(keys.STREAM_ITEMS) == {STREAM.encode(): b"2", keys.STREAM_DLQ.encode(): b"1"}


async def test_append_splits_a_source_page_into_bounded_entries(redis_client: aioredis.Redis) -> None:
    # Given items more than a page holds (1,000 by default), and one bigger than a page's bytes (512 KB)
    items = [b'{"n":%d}' % i for i in range(2500)]
    big = b'"' + b"x" * (600 * 1024) + b'"'
    # When they are appended with their cursor
    appended = await append_with_cursor(redis_client, STREAM, [*items, big, b"1"], {CURSOR: (None, "1")})
    # Then they are pages of at most 1,000 items, in order, the big one alone
    pages = [orjson.loads(data) for data in await stream_payloads(redis_client)]
    assert appended == 5 and [len(p) for p in pages] == [1000, 1000, 500, 1, 1]
    assert [item for p in pages[:3] for item in p] == [{"n": i} for i in range(2500)]
    assert pages[3:] == [[big[1:-1].decode()], [1]]
    assert await redis_client.hget(keys.STREAM_ITEMS, STREAM) == b"2502"


async def test_retried_append_with_stale_cursor_writes_nothing(redis_client: aioredis.Redis) -> None:
    # Given a page already appended (the reply to the first call was "lost")
    await append_with_cursor(redis_client, STREAM, [b"a"], {CURSOR: (None, "1")})
    # When the same call is retried, it is refused and nothing is written twice
    with pytest.raises(CursorMoved):
        await append_with_cursor(redis_client, STREAM, [b"a"], {CURSOR: (None, "1")})
    assert await stream_payloads(redis_client) == [b"[a]"]
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0


async def test_append_moves_several_cursor_keys_and_hash_atomically(redis_client: aioredis.Redis) -> None:
    cursor = {"state:ts": (None, "100"), "state:id": (None, "0xabc")}
    await append_with_cursor(redis_client, STREAM, [b"x"], cursor, hash_items={"h": {"t1": b"m1"}, "h2": {"m1": "abc"}})
    # A second writer expecting a different timestamp is refused even though the id matches
    with pytest.raises(CursorMoved):
        await append_with_cursor(redis_client, STREAM, [b"y"], {"state:ts": ("99", "101"), "state:id": ("0xabc", "z")})
    assert await read_cursor(redis_client, ["state:ts", "state:id"]) == {"state:ts": "100", "state:id": "0xabc"}
    assert await redis_client.hget("h", "t1") == b"m1"
    assert await redis_client.hget("h2", "m1") == b"abc"
    assert await stream_payloads(redis_client) == [b"[x]"]


async def test_append_writes_a_hash_of_more_pairs_than_one_hset_call_takes(redis_client: aioredis.Redis) -> None:
    # The script writes 500 pairs a call: 1,201 pairs make three calls, the last one short
    tokens = {f"token-{i}": f"market-{i // 2}".encode() for i in range(1201)}
    await append_with_cursor(redis_client, STREAM, [b"x"], {CURSOR: (None, "1")}, hash_items={"h": tokens})
    assert await redis_client.hgetall("h") == {token.encode(): market for token, market in tokens.items()}


async def test_trim_never_removes_entries_a_group_has_not_acked(redis_client: aioredis.Redis) -> None:
    ids = [(await redis_client.xadd(STREAM, {"data": str(i)})).decode() for i in range(10)]
    await redis_client.xgroup_create(STREAM, "fast", id="0")
    await redis_client.xgroup_create(STREAM, "slow", id="0")
    # fast: everything read and acked
    await redis_client.xreadgroup("fast", "c", {STREAM: ">"}, count=10)
    await redis_client.xack(STREAM, "fast", *ids)
    # slow: 6 delivered, of which 0..2 acked and 3..5 pending; 6..9 never delivered
    await redis_client.xreadgroup("slow", "c", {STREAM: ">"}, count=6)
    await redis_client.xack(STREAM, "slow", *ids[:3])

    removed = await trim_acked(redis_client, STREAM)

    assert removed == 3
    remaining = [entry_id.decode() for entry_id, _ in await redis_client.xrange(STREAM)]
    assert remaining == ids[3:]
    pending = await redis_client.xpending_range(STREAM, "slow", "-", "+", 10)
    assert [item["message_id"].decode() for item in pending] == ids[3:6]


async def test_trim_keeps_undelivered_entries_and_skips_streams_without_groups(redis_client: aioredis.Redis) -> None:
    for i in range(5):
        await redis_client.xadd(STREAM, {"data": str(i)})
    assert await trim_acked(redis_client, STREAM) == 0  # no group: nothing is known to be safe
    await redis_client.xgroup_create(STREAM, "g", id="0")
    assert await trim_acked(redis_client, STREAM) == 0  # group exists but nothing delivered
    assert await redis_client.xlen(STREAM) == 5


async def test_trim_waits_until_every_required_group_exists(redis_client: aioredis.Redis) -> None:
    ids = [(await redis_client.xadd(STREAM, {"data": str(i)})).decode() for i in range(5)]
    await redis_client.xgroup_create(STREAM, "writer", id="0")
    await redis_client.xreadgroup("writer", "c", {STREAM: ">"}, count=10)
    await redis_client.xack(STREAM, "writer", *ids)
    # the processor's group does not exist yet: when it starts it must still find every entry
    assert await trim_acked(redis_client, STREAM, ("writer", "processor")) == 0
    await redis_client.xgroup_create(STREAM, "processor", id="0")
    assert await trim_acked(redis_client, STREAM, ("writer", "processor")) == 0
    assert await redis_client.xlen(STREAM) == 5


async def test_restarted_consumer_rereads_its_own_pending_entries_first(redis_client: aioredis.Redis) -> None:
    for i in range(3):
        await redis_client.xadd(STREAM, {"data": str(i)})
    first = consumer(redis_client, "worker-1")
    await first.ensure_group()
    batch = await first.read()
    assert [e.data for e in batch] == [b"0", b"1", b"2"]
    await redis_client.xadd(STREAM, {"data": "3"})
    # the process dies without acking; the same stable name starts again
    again = consumer(redis_client, "worker-1")
    redelivered = await again.read()
    assert [(e.data, e.deliveries) for e in redelivered] == [(b"0", 2), (b"1", 2), (b"2", 2)]
    await again.finish([e.id for e in redelivered])
    assert [e.data for e in await again.read()] == [b"3"]


async def test_dead_consumers_entries_are_taken_over(redis_client: aioredis.Redis) -> None:
    for i in range(4):
        await redis_client.xadd(STREAM, {"data": str(i)})
    dead = consumer(redis_client, "worker-dead")
    await dead.ensure_group()
    assert len(await dead.read()) == 4  # read, never acked: this consumer is gone

    survivor = consumer(redis_client, "worker-live")
    survivor._pending_start = None  # it has nothing of its own pending
    await asyncio.sleep(0.15)  # longer than claim_min_idle_ms
    claimed = await survivor.read()

    assert [e.data for e in claimed] == [b"0", b"1", b"2", b"3"]
    assert all(e.deliveries == 2 for e in claimed)
    await survivor.finish([e.id for e in claimed])
    summary = await redis_client.xpending(STREAM, "g")
    assert summary["pending"] == 0


async def test_failing_message_goes_to_dlq_while_later_messages_flow(redis_client: aioredis.Redis) -> None:
    for i in range(20):
        await redis_client.xadd(STREAM, {"data": "poison" if i == 5 else str(i)})
    worker = consumer(redis_client, "worker-1", max_deliveries=3)
    processed: list[bytes] = []

    async def handle(batch: list[Entry]) -> None:
        if any(e.data == b"poison" for e in batch):
            raise ValueError("cannot handle poison")
        processed.extend(e.data for e in batch)
        await worker.finish([e.id for e in batch])

    await asyncio.wait_for(run_consumer(worker, handle, stop=asyncio.Event(), once=True), timeout=30)

    assert sorted(processed, key=int) == [str(i).encode() for i in range(20) if i != 5]
    dead = [orjson.loads(p) for p in await stream_payloads(redis_client, keys.STREAM_DLQ)]
    assert len(dead) == 1
    assert dead[0]["payload"] == "poison"
    assert dead[0]["stream"] == STREAM and dead[0]["group"] == "g"
    assert "ValueError: cannot handle poison" in dead[0]["error"]
    assert dead[0]["deliveries"] == 4
    assert (await redis_client.xpending(STREAM, "g"))["pending"] == 0


async def restart_without_finishing(redis: aioredis.Redis, name: str, starts: int) -> None:
    """`starts` starts of consumer `name` that each read their batch (pending first) and are killed before
    finishing it: every re-read adds one to the entries' delivery counters, and no failure is recorded."""
    for _ in range(starts):
        doomed = consumer(redis, name)
        await doomed.ensure_group()
        assert await doomed.read()


async def run_until_killed(worker: StreamConsumer, handle: BatchHandler, died: asyncio.Event, **options: int) -> bool:
    """Run `worker` until its stream is drained (False) or its handler sets `died` and hangs: then kill it (True),
    as a SIGKILL would: its handling is cancelled where it stands, nothing more of it runs."""
    run = asyncio.create_task(run_consumer(worker, handle, stop=asyncio.Event(), once=True, **options))
    death = asyncio.create_task(died.wait())
    await asyncio.wait({run, death}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    death.cancel()
    if run.done():
        run.result()
        return False
    while not run.done():  # a second cancel reaches the in-flight handlers the first one's `finally` waits for
        run.cancel()
        await asyncio.sleep(0.01)
    return True


async def the_one_dead_letter(redis: aioredis.Redis) -> tuple[str, str]:
    """(payload, error) of the only dead letter, once the group has nothing left pending."""
    assert (await redis.xpending(STREAM, "g"))["pending"] == 0
    [dead] = [orjson.loads(p) for p in await stream_payloads(redis, keys.STREAM_DLQ)]
    return dead["payload"], dead["error"]


def acking_handler(worker: StreamConsumer, handled: list[list[bytes]], died: asyncio.Event, *, kill_on: bytes = b"",
                   kills_once: list[list[bytes]] | None = None) -> BatchHandler:  # fmt: skip
    """Acks its batches and records them in `handled`, except that a batch holding `kill_on`, or one of `kills_once`
    (taken off that list as it kills), kills the process: sets `died` and hangs, like a process past its last line."""
    kills = kills_once if kills_once is not None else []

    async def handle(batch: list[Entry]) -> None:
        datas = [e.data for e in batch]
        if kill_on in datas or datas in kills:
            if datas in kills:
                kills.remove(datas)
            died.set()
            await asyncio.Event().wait()
        handled.append(datas)
        await worker.finish([e.id for e in batch])

    return handle


async def test_entries_redelivered_past_max_deliveries_only_by_restarts_are_processed_not_dead_lettered(
    redis_client: aioredis.Redis,
) -> None:
    # Given 5 entries whose consumer was killed more than max_deliveries (3) times before finishing its batch
    for i in range(5):
        await redis_client.xadd(STREAM, {"data": str(i)})
    await restart_without_finishing(redis_client, "worker-1", starts=3)
    # When it starts once more (their 4th delivery, past the limit) and lives
    worker, handled = consumer(redis_client, "worker-1"), []
    assert not await run_until_killed(worker, acking_handler(worker, handled, asyncio.Event()), asyncio.Event())
    # Then none is dead-lettered (no failure is recorded against them): their batch is handled whole and acked
    assert handled == [[str(i).encode() for i in range(5)]]
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0
    assert (await redis_client.xpending(STREAM, "g"))["pending"] == 0
    assert await redis_client.exists(worker.failures_key) == 0


async def test_an_entry_that_kills_its_consumer_alone_is_dead_lettered_and_its_batch_mates_go_through(
    redis_client: aioredis.Redis,
) -> None:
    # Given 5 entries, the third of which kills the process whenever it is handled (os._exit, OOM, segfault)
    for i in range(5):
        await redis_client.xadd(STREAM, {"data": "kill" if i == 2 else str(i)})
    handled: list[list[bytes]] = []
    deaths = 0
    # When the consumer is restarted after each death (as supervisord does)
    while deaths < 10:
        worker, died = consumer(redis_client, "worker-1"), asyncio.Event()
        if not await run_until_killed(worker, acking_handler(worker, handled, died, kill_on=b"kill"), died):
            break
        deaths += 1
    # Then it died max_deliveries times on the batch, once more on the batch past the limit, then DEATHS_ALONE_LIMIT
    # times on the entry alone, and no more: the entry is dead-lettered with that reason, the others handled alone
    assert deaths == 3 + 1 + DEATHS_ALONE_LIMIT
    assert await the_one_dead_letter(redis_client) == (
        "kill", "failed 8 deliveries; last error: the consumer died 2 times while handling this entry alone"
    )  # fmt: skip
    assert handled == [[b"0"], [b"1"], [b"3"], [b"4"]]
    assert await redis_client.exists(worker.failures_key) == 0


async def test_a_raising_entry_past_max_deliveries_by_restarts_is_dead_lettered_with_its_own_error(
    redis_client: aioredis.Redis,
) -> None:
    # Given 3 entries past max_deliveries by restarts, the second of which raises when handled
    for i in range(3):
        await redis_client.xadd(STREAM, {"data": "poison" if i == 1 else str(i)})
    await restart_without_finishing(redis_client, "worker-1", starts=3)
    worker, handled = consumer(redis_client, "worker-1"), []

    async def handle(batch: list[Entry]) -> None:
        if any(e.data == b"poison" for e in batch):
            raise ValueError("cannot handle poison")
        handled.extend(e.data for e in batch)
        await worker.finish([e.id for e in batch])

    # When the consumer starts: the batch raises, so its entries are handled alone
    await asyncio.wait_for(run_consumer(worker, handle, stop=asyncio.Event(), once=True), timeout=30)
    # Then the batch's error dead-letters none of them; the entry's own error, raised alone, does
    assert await the_one_dead_letter(redis_client) == (
        "poison", "failed 5 deliveries; last error: ValueError: cannot handle poison"
    )  # fmt: skip
    assert handled == [b"0", b"2"]


async def test_one_death_in_a_batch_and_one_alone_do_not_dead_letter_an_entry(redis_client: aioredis.Redis) -> None:
    # Given 3 entries past max_deliveries by restarts, and kills that land by chance: once while their batch is
    # handled, once while the second is handled alone
    for i in range(3):
        await redis_client.xadd(STREAM, {"data": str(i)})
    await restart_without_finishing(redis_client, "worker-1", starts=3)
    handled: list[list[bytes]] = []
    kills = [[b"0", b"1", b"2"], [b"1"]]
    for _ in kills[:]:
        worker, died = consumer(redis_client, "worker-1"), asyncio.Event()
        assert await run_until_killed(worker, acking_handler(worker, handled, died, kills_once=kills), died)
    # When the consumer starts again and lives
    worker = consumer(redis_client, "worker-1")
    assert not await run_until_killed(worker, acking_handler(worker, handled, asyncio.Event()), asyncio.Event())
    # Then every entry is handled (alone, after the death in their batch), nothing is dead-lettered
    assert kills == []
    assert handled == [[b"0"], [b"1"], [b"2"]]
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0
    assert await redis_client.exists(worker.failures_key) == 0


async def test_an_entry_held_pending_after_its_handling_is_never_blamed_for_later_restarts(
    redis_client: aioredis.Redis,
) -> None:
    # Given an entry past max_deliveries by restarts that the consumer holds on purpose when handling it (the
    # processor's fill waiting for its market): handled, not acked
    await redis_client.xadd(STREAM, {"data": "held"})
    await restart_without_finishing(redis_client, "worker-1", starts=3)
    seen: list[bytes] = []

    async def hold(batch: list[Entry]) -> None:
        seen.extend(e.data for e in batch)

    # When the consumer lives through each handling, and is restarted again and again
    for _ in range(6):
        worker = consumer(redis_client, "worker-1")
        await asyncio.wait_for(run_consumer(worker, hold, stop=asyncio.Event(), once=True), timeout=30)
    # Then no death is counted against it: handled on each start (in its batch, then alone, in turn), it stays pending
    assert seen == [b"held"] * 6
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0
    assert (await redis_client.xpending(STREAM, "g"))["pending"] == 1


async def test_an_entry_handled_alone_waits_for_the_batches_in_flight(redis_client: aioredis.Redis) -> None:
    # Given 3 entries past max_deliveries whose consumer died in their batch too, and 3 more read once, all pending
    # for one consumer that handles 2 batches at a time (the processor)
    for i in range(3):
        await redis_client.xadd(STREAM, {"data": str(i)})
    await restart_without_finishing(redis_client, "worker-1", starts=3)
    worker, died = consumer(redis_client, "worker-1"), asyncio.Event()
    assert await run_until_killed(worker, acking_handler(worker, [], died, kill_on=b"0"), died)
    for i in range(3, 6):
        await redis_client.xadd(STREAM, {"data": str(i)})
    await redis_client.xreadgroup("g", "worker-1", {STREAM: ">"})
    worker, in_hand, log = consumer(redis_client, "worker-1"), [0], []

    async def handle(batch: list[Entry]) -> None:
        log.append(([e.data for e in batch], in_hand[0]))
        in_hand[0] += 1
        await asyncio.sleep(0.05)
        in_hand[0] -= 1
        await worker.finish([e.id for e in batch])

    # When it starts: the 3 not yet past the limit go as a batch, the 3 past it alone
    await asyncio.wait_for(run_consumer(worker, handle, stop=asyncio.Event(), once=True, max_in_flight=2), timeout=30)
    # Then each entry handled alone started with no other batch in hand, so a death then would be its own
    assert log == [([b"3", b"4", b"5"], 0), ([b"0"], 0), ([b"1"], 0), ([b"2"], 0)]
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0


async def test_finish_emits_outputs_only_once_even_when_retried(redis_client: aioredis.Redis) -> None:
    await redis_client.xadd(STREAM, {"data": "fill"})
    worker = consumer(redis_client, "worker-1")
    await worker.ensure_group()
    [entry] = await worker.read()
    first = await worker.finish({entry.id: out(b"trade")}, output_stream="stream:out")
    # a retry after a lost reply, or a second worker that processed the same claimed entry
    second = await worker.finish({entry.id: out(b"trade")}, output_stream="stream:out")
    assert first == (1, 1, 0, 0)
    assert second == (0, 0, 0, 0)
    assert await stream_payloads(redis_client, "stream:out") == [b"trade"]


async def test_finish_of_a_batch_partly_finished_elsewhere_writes_only_what_it_acked(
    redis_client: aioredis.Redis,
) -> None:
    # Given 2,500 fills (more than one script chunk) read by one worker, some also finished by another worker
    for i in range(2500):
        await redis_client.xadd(STREAM, {"data": f"fill-{i}"})
    worker = StreamConsumer(redis_client, stream=STREAM, group="g", consumer="worker-1", settings=fast_settings(),
                            batch_max=5000)  # fmt: skip
    await worker.ensure_group()
    batch = await worker.read()
    done_elsewhere = {entry.id for entry in batch[1200:1300]} | {batch[-1].id, batch[7].id}
    await worker.finish(sorted(done_elsewhere))
    # When the worker finishes the whole batch: two outputs per fill, none for the 5th, the 3rd dead-lettered
    outputs = {entry.id: out(entry.data + b":a", entry.data + b":b") for entry in batch}
    outputs[batch[4].id] = out()
    outputs[batch[2].id] = Finish(dead=[dead_entry(worker, batch[2], "poison")])
    result = await worker.finish(outputs, output_stream="stream:out")
    # Then only the fills this call acked have their outputs, in order, and the poison its dead letter
    acked = [entry for entry in batch if entry.id not in done_elsewhere]
    emitted = [entry.data + suffix for entry in acked for suffix in (b":a", b":b") if entry not in batch[2:5:2]]
    assert result == (len(acked), len(emitted), 1, 0)
    assert await stream_payloads(redis_client, "stream:out") == emitted
    assert [orjson.loads(p)["payload"] for p in await stream_payloads(redis_client, keys.STREAM_DLQ)] == ["fill-2"]
    assert (await redis_client.xpending(STREAM, "g"))["pending"] == 0


async def test_finish_of_an_entry_claimed_away_leaves_it_to_the_new_owner(redis_client: aioredis.Redis) -> None:
    # Given two fills read by worker-1, the second claimed by worker-2 (worker-1 looked dead) before worker-1 finished
    for i in range(2):
        await redis_client.xadd(STREAM, {"data": f"fill-{i}"})
    slow, survivor = consumer(redis_client, "worker-1"), consumer(redis_client, "worker-2")
    await slow.ensure_group()
    batch = await slow.read()
    await redis_client.xclaim(STREAM, "g", "worker-2", 0, [batch[1].id])
    # When worker-1 finishes both, only its own is acked and emitted; the claimed one stays worker-2's
    assert await slow.finish({e.id: out(e.data + b":trade") for e in batch}, output_stream="stream:out") == (1, 1, 0, 0)
    pending = await redis_client.xpending_range(STREAM, "g", "-", "+", 10)
    assert [(item["message_id"].decode(), item["consumer"]) for item in pending] == [(batch[1].id, b"worker-2")]
    # Then worker-2's finish emits it, once
    assert await survivor.finish({batch[1].id: out(b"fill-1:trade")}, output_stream="stream:out") == (1, 1, 0, 0)
    assert await stream_payloads(redis_client, "stream:out") == [b"fill-0:trade", b"fill-1:trade"]


async def test_finish_of_ids_out_of_order_among_other_pending_entries(redis_client: aioredis.Redis) -> None:
    # Given 30 pending fills of one worker (more than a page of the script's XPENDING), finished in an order of its
    # own (held fills are released so), with other pending entries of this worker between them
    for i in range(30):
        await redis_client.xadd(STREAM, {"data": f"fill-{i}"})
    worker = consumer(redis_client, "worker-1")
    await worker.ensure_group()
    batch = await worker.read()
    chosen = [batch[i] for i in (17, 3, 29, 0, 11)]
    # When it finishes them
    result = await worker.finish({e.id: out(e.data + b":trade") for e in chosen}, output_stream="stream:out")
    # Then each of them is acked and emitted once, in the order given, and the others stay pending
    assert result == (5, 5, 0, 0)
    assert await stream_payloads(redis_client, "stream:out") == [f"fill-{i}:trade".encode() for i in (17, 3, 29, 0, 11)]
    assert (await redis_client.xpending(STREAM, "g"))["pending"] == 25


async def test_finish_of_one_output_each_writes_those_of_the_fills_it_acked(redis_client: aioredis.Redis) -> None:
    # Given five fills of one worker, the second claimed away by another worker, the fourth poison
    for i in range(5):
        await redis_client.xadd(STREAM, {"data": f"fill-{i}"})
    worker = consumer(redis_client, "worker-1")
    await worker.ensure_group()
    batch = await worker.read()
    await redis_client.xclaim(STREAM, "g", "worker-2", 0, [batch[1].id])
    # When it finishes the others with one trade each
    ready = {e.id: out(e.data + b":trade") for i, e in enumerate(batch) if i != 3}
    ready[batch[3].id] = Finish(dead=[dead_entry(worker, batch[3], "poison")])
    result = await worker.finish(ready, output_stream="stream:out")
    # Then each trade of a fill it acked is written once, in order; the claimed fill's is left to its owner
    assert result == (4, 3, 1, 0)
    assert await stream_payloads(redis_client, "stream:out") == [b"fill-0:trade", b"fill-2:trade", b"fill-4:trade"]
    assert [orjson.loads(p)["payload"] for p in await stream_payloads(redis_client, keys.STREAM_DLQ)] == ["fill-3"]


async def test_finish_of_fills_with_one_output_or_none_keeps_each_output_with_its_fill(
    redis_client: aioredis.Redis,
) -> None:
    # Given three fills, the second claimed away; the first and the third have a trade, the second none
    for i in range(3):
        await redis_client.xadd(STREAM, {"data": f"fill-{i}"})
    worker = consumer(redis_client, "worker-1")
    await worker.ensure_group()
    batch = await worker.read()
    await redis_client.xclaim(STREAM, "g", "worker-2", 0, [batch[1].id])
    # When it finishes all three
    result = await worker.finish({batch[0].id: out(b"t0"), batch[1].id: out(), batch[2].id: out(b"t2")},
                                 output_stream="stream:out")  # fmt: skip
    # Then both trades are written: the counts went with the outputs, so the claimed fill took none of them
    assert result == (2, 2, 0, 0)
    assert await stream_payloads(redis_client, "stream:out") == [b"t0", b"t2"]


async def test_finish_clears_the_recorded_failures_of_every_entry_it_acks(redis_client: aioredis.Redis) -> None:
    # Given 2,500 entries (more than one script chunk) with a failure recorded, and one that stays pending
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(2501):
            pipe.xadd(STREAM, {"data": f"fill-{i}"})
        await pipe.execute()
    worker = StreamConsumer(redis_client, stream=STREAM, group="g", consumer="worker-1", settings=fast_settings(),
                            batch_max=5000)  # fmt: skip
    await worker.ensure_group()
    batch = await worker.read()
    await worker.record_failure(batch, "boom")
    # When all but the last are finished
    assert await worker.finish([entry.id for entry in batch[:-1]]) == (2500, 0, 0, 0)
    # Then only the last one's failure is left
    assert await redis_client.hkeys(worker.failures_key) == [batch[-1].id.encode()]


async def test_redis_kill_9_keeps_streams_groups_and_cursors(redis_server, redis_client: aioredis.Redis) -> None:
    for page in (b'["a"]', b'["b"]', b'["c"]'):
        await append_with_cursor(redis_client, STREAM, [page[1:-1]], {})
    await redis_client.set(CURSOR, "3")
    worker = consumer(redis_client, "worker-1")
    await worker.ensure_group()
    batch = await worker.read()
    await worker.finish([batch[0].id])  # a acked, b and c pending

    redis_server.kill()
    redis_server.start()

    await redis_client.connection_pool.disconnect()
    assert await read_cursor(redis_client, [CURSOR]) == {CURSOR: "3"}
    assert await stream_payloads(redis_client) == [b'["a"]', b'["b"]', b'["c"]']
    assert await redis_client.hget(keys.STREAM_ITEMS, STREAM) == b"3"
    pending = await redis_client.xpending_range(STREAM, "g", "-", "+", 10)
    assert [item["message_id"].decode() for item in pending] == [batch[1].id, batch[2].id]
    assert all(item["consumer"] == b"worker-1" for item in pending)
