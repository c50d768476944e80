"""Redis Streams delivery, written once for every service (docs/CONTRACT.md §3 rules 1, 2, 3 and 5).

Every entry is a page of items (common/pages.py). Producers: `append_with_cursor()` writes a source page (as one
or more entries, bounded in items and bytes), its malformed items (to `stream:dlq`) and the cursor that follows
the page in one Lua script, compare-and-set on the cursor, so a crash or a retried call can neither advance the
cursor without the data nor write the page twice.

Consumers: `StreamConsumer` reads with a stable consumer name; on start (and after a failed batch) it re-reads
its own pending entries from `0`, then new ones with `>`, and every `claim_interval_s` takes over entries of
dead consumers with XAUTOCLAIM. An entry delivered more than `max_deliveries` times goes to `stream:dlq` with
its last error, if one was recorded, or, when it holds several items, is split into entries of one item each
(`split_entry`), so that the rules find the one item that fails. One without was interrupted (its consumer killed
or restarted before finishing it), not proven poison: it is handled again in its batch, marked "died in a batch";
if the consumer dies again, alone, marked with a count of deaths; it is settled only once the consumer has died
`DEATHS_ALONE_LIMIT` times while handling it alone (`StreamConsumer._settle_exhausted`). `finish()` acks a batch
and writes what each entry produced (`Finish`: outputs, dead letters of its poison items, items appended again) in
one script (see lua/finish_batch.lua for why nothing is ever written twice). `run_consumer()` is the loop around
them.

Trimming lives in `common.trimming`; the scripts' plumbing in `common.lua_scripts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from itertools import chain
from typing import Any, NamedTuple

import redis.asyncio as aioredis
import structlog
from redis import exceptions as redis_errors

from common import keys
from common.backoff import Backoff, retry_while_down, sleep_unless_stopped
from common.config import StreamSettings, load
from common.errors import CursorMoved, PoisonMessage, TransientSinkError
from common.lua_scripts import join_lines, run_script
from common.pages import is_page, items_of, pack, page
from common.payloads import encode_dead_letter
from common.redis_client import is_cluster, map_redis_errors

log = structlog.get_logger()

# failures hash entries outlive a crash but not forever
FAILURES_TTL_S = 7 * 24 * 3600
# An entry is dead-lettered for killing its consumer only after this many deaths while it was the one entry in hand:
# one can be a chance (a SIGKILL or OOM of the whole host landing during it), two in a row are the entry.
DEATHS_ALONE_LIMIT = 2
# Failures hash values of entries past max_deliveries being handled again: in their batch, then alone, the count
# surviving the deaths it counts.
DIED_IN_BATCH = "the consumer died while handling this entry in a batch"
_DIED_ALONE = re.compile(rb"the consumer died (\d+) times? while handling this entry alone")
# An error recorded for several entries at once (`record_failure`): not yet any one entry's own.
_IN_A_BATCH = re.compile(rb"in a batch of \d+: ")


# --- producers ---------------------------------------------------------------------------------------------


async def read_cursor(redis: aioredis.Redis, cursor_keys: Sequence[str]) -> dict[str, str | None]:
    async with map_redis_errors("read cursor"):
        values = await redis.mget(cursor_keys)
    return {
        key: (value.decode() if value is not None else None) for key, value in zip(cursor_keys, values, strict=False)
    }


@functools.cache
def page_limits() -> tuple[int, int]:
    """STREAM_PAGE_MAX_ITEMS and STREAM_PAGE_MAX_BYTES, read once per process."""
    settings = load(StreamSettings)
    return settings.page_max_items, settings.page_max_bytes


async def append_with_cursor(
    redis: aioredis.Redis,
    stream: str,
    items: Sequence[bytes],
    cursor: Mapping[str, tuple[str | None, str]],
    *,
    dead_letters: Sequence[bytes] = (),
    hash_items: Mapping[str, Mapping[str, bytes | str]] | None = None,
) -> int:
    """Append `items` to `stream` as pages (`common.pages.pack`) and move each cursor key from its expected to its
    new value, atomically.

    `cursor` maps key -> (expected current value or None for absent, new value). `hash_items` maps a hash key
    to fields written with the page (e.g. token -> market). Raises CursorMoved, writing nothing, when a cursor
    no longer holds its expected value: another instance moved it, or this is the retry of a call whose reply
    was lost. The caller then re-reads the cursor and goes on from there. Returns the entries appended.
    """
    max_items, max_bytes = page_limits()
    cursor_keys = list(cursor)
    hashes = hash_items or {}
    args: list[Any] = [len(cursor_keys)]
    args += [cursor[key][0] or "" for key in cursor_keys]
    args += [cursor[key][1] for key in cursor_keys]
    args += [join_lines(pack(items, max_items=max_items, max_bytes=max_bytes)), len(items), join_lines(dead_letters)]
    args += [join_lines(part for pair in hashes[key].items() for part in pair) for key in hashes]
    script_keys = [stream, keys.STREAM_DLQ, keys.STREAM_ITEMS, *cursor_keys, *hashes]
    async with map_redis_errors(f"append to {stream}"):
        appended = await run_script(redis, "append_page", script_keys, args)
    if appended == -1:
        raise CursorMoved(f"cursor {', '.join(cursor_keys)} moved; re-read it and continue from there")
    return int(appended)


# --- consumers ---------------------------------------------------------------------------------------------


def pages_for(items: int, settings: StreamSettings) -> int:
    """How many entries a consumer reads for a batch of at most `items` items: entries are pages of up to
    STREAM_PAGE_MAX_ITEMS (at least one entry), so a batch of pages cannot grow a thousandfold in memory."""
    return max(1, items // settings.page_max_items)


class Entry(NamedTuple):
    """One stream entry as a consumer got it; a NamedTuple, which builds several times faster than a frozen
    dataclass."""

    id: str
    data: bytes  # a page (common/pages.py); an entry written before pages holds one item
    deliveries: int  # how many times the group has handed this entry out, this time included
    since_ms: int = 0  # of a re-appended entry: when its items first arrived (unix ms); 0: when the entry was added

    @property
    def arrived_ms(self) -> int:
        """When the entry's items first reached the stream, unix ms (an entry id starts with its own)."""
        return self.since_ms or int(self.id.partition("-")[0])


class Finish(NamedTuple):
    """What finishing one entry writes with its ack (`StreamConsumer.finish`), all of it only if the entry was still
    this consumer's."""

    outputs: Sequence[tuple[bytes, int]] = ()  # (page, its items) for the output stream
    dead: Sequence[bytes] = ()  # dead letters: one item each (`dead_item`), or the whole entry (`dead_entry`)
    # (page, its items) appended again to the input stream: fills that wait for their market, or an entry split
    # into its items; each keeps `since_ms`, the arrival time of the entry they came from (`Entry.arrived_ms`)
    requeue: Sequence[tuple[bytes, int]] = ()
    since_ms: int = 0


class Finished(NamedTuple):
    acked: int  # entries
    emitted: int  # items appended to the output stream
    dead: int  # dead letters written
    requeued: int  # items appended again to the input stream


NOTHING = Finish()


def _entry(entry_id: bytes, fields: list[bytes], deliveries: int) -> Entry:
    """An entry from its raw field list [name, value, ...] (`data`, and `since` when it was re-appended)."""
    if len(fields) == 2 and fields[0] == b"data":
        return Entry(entry_id.decode(), fields[1], deliveries)
    named = dict(zip(fields[::2], fields[1::2], strict=True))
    return Entry(entry_id.decode(), named.get(b"data") or b"", deliveries, int(named.get(b"since") or 0))


def _flat_fields(fields: dict[bytes, bytes] | None) -> list[bytes] | None:
    """redis-py's parsed fields of an entry as the raw list [name, value, ...]; None: deleted while pending."""
    return list(chain.from_iterable(fields.items())) if fields else None


def _unparsed(entries: list[Any]) -> list[Any]:
    """redis-py's parsed XREADGROUP entries, (id, {field: value}) (in one more list under RESP3), as the raw
    [id, [field, value, ...]] pairs the consumer reads."""
    if len(entries) == 1 and isinstance(entries[0], list) and (not entries[0] or isinstance(entries[0][0], tuple)):
        entries = entries[0]
    return [(entry_id, _flat_fields(fields)) for entry_id, fields in entries]


class StreamConsumer:
    """One consumer (stable name) of one group on one stream."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        settings: StreamSettings,
        batch_max: int,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.settings = settings
        self.batch_max = batch_max
        self.failures_key = keys.failures_key(stream, group)
        # The same connections, without redis-py's per-entry dict building for XREADGROUP replies: at tens of
        # thousands of entries a second that parsing was a large share of a consumer's time. A cluster client has
        # no one pool to share (its nodes share one reply-parsing table): there the parsed reply is flattened back.
        self._parsed_reads = is_cluster(redis)
        self._raw = redis if self._parsed_reads else aioredis.Redis(connection_pool=redis.connection_pool)
        if not self._parsed_reads:
            self._raw.response_callbacks.pop("XREADGROUP", None)
        self._pending_start: str | None = "0"  # None once our own pending list has been re-read
        self._isolate = False  # after a failed batch, re-read pending one entry at a time to isolate poison
        self.read_alone = False  # the batch read() returned last is one entry to handle with nothing else in hand
        self._claim_start = "0-0"
        self._next_claim_at = 0.0
        self.dead_lettered = 0

    def __repr__(self) -> str:
        return f"StreamConsumer(stream={self.stream!r}, group={self.group!r}, consumer={self.consumer!r})"

    async def ensure_group(self) -> None:
        """Create the group at the start of the stream (id 0), so entries written before it are consumed too."""
        async with map_redis_errors("create group"):
            try:
                await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def rewind(self) -> None:
        """Re-read our own pending entries next, one at a time, so poison stands alone."""
        self._pending_start = "0"
        self._isolate = True

    async def read(self) -> list[Entry]:
        """The next batch: own pending entries first, then dead consumers' entries when due, then new ones."""
        self.read_alone = False
        async with map_redis_errors(f"read {self.stream}"):
            if self._pending_start is not None:
                alone = self._isolate
                batch = await self._read_own_pending()
                if batch is not None:
                    self.read_alone = alone and bool(batch)
                    return batch
            if time.monotonic() >= self._next_claim_at:
                claimed = await self._claim_idle()
                if claimed:
                    return claimed
            entries = await self._xreadgroup_raw(">", self.batch_max, block_ms=self.settings.block_ms)
        # new entries are delivered for the first time and always have their fields: no screening, one pass
        return [_entry(entry_id, fields, 1) for entry_id, fields in entries]

    async def _xreadgroup_raw(self, start: str, count: int, *, block_ms: int | None = None) -> list[Any]:
        """The reply's [entry id, [field, value, ...] or None] pairs, as hiredis parsed them."""
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        reply = await self._raw.execute_command(*args, "STREAMS", self.stream, start)
        if not reply:
            return []
        # RESP3 (redis-py's default) replies with a map {stream: entries}, RESP2 with [[stream, entries]]
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        if self._parsed_reads:
            return _unparsed(entries)
        return entries

    async def _read_own_pending(self) -> list[Entry] | None:
        assert self._pending_start is not None
        raw = await self._xreadgroup_raw(self._pending_start, 1 if self._isolate else self.batch_max)
        if not raw:
            self._pending_start, self._isolate = None, False
            return None
        self._pending_start = raw[-1][0].decode()
        return await self._screen(raw)

    async def _claim_idle(self) -> list[Entry]:
        self._next_claim_at = time.monotonic() + self.settings.claim_interval_s
        reply = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self.settings.claim_min_idle_ms,
            start_id=self._claim_start,
            count=self.batch_max,
        )
        # Redis 7 adds the ids of pending entries deleted meanwhile; 6.2 returns those among the claimed, with no
        # fields (`_screen` acks them)
        next_start, claimed, deleted = reply[0], reply[1], reply[2] if len(reply) > 2 else []
        self._claim_start = next_start.decode() if isinstance(next_start, bytes) else str(next_start)
        if self._claim_start != "0-0":
            self._next_claim_at = 0.0  # more of the pending list to scan: continue on the next read
        if deleted:
            log.error("pending entries were deleted before being acked", stream=self.stream, ids=len(deleted))
        raw = [(entry_id, _flat_fields(fields)) for entry_id, fields in claimed]
        if raw:
            log.info("claimed idle entries", stream=self.stream, group=self.group, entries=len(raw))
        return await self._screen(raw)

    async def _screen(self, raw: list[tuple[bytes, list[bytes] | None]]) -> list[Entry]:
        """Attach delivery counts; settle entries past `max_deliveries` (`_settle_exhausted`); ack deleted ones."""
        if not raw:
            return []
        pending = await self.redis.xpending_range(
            self.stream, self.group, raw[0][0], raw[-1][0], len(raw) * 2, consumername=self.consumer
        )
        counts = {item["message_id"]: int(item["times_delivered"]) for item in pending}
        entries, exhausted = [], []
        for entry_id, fields in raw:
            if not fields:  # trimmed while pending: nothing left to process
                log.error("pending entry no longer exists", stream=self.stream, id=entry_id.decode())
                await self.redis.xack(self.stream, self.group, entry_id)
                continue
            entry = _entry(entry_id, fields, counts.get(entry_id, 1))
            entries.append(entry)
            if entry.deliveries > self.settings.max_deliveries:
                exhausted.append(entry)
        if exhausted:
            held_back = await self._settle_exhausted(exhausted)
            entries = [entry for entry in entries if entry.id not in held_back]
        return entries

    async def _settle_exhausted(self, exhausted: list[Entry]) -> set[str]:
        """Settle the entries past `max_deliveries` that failed: an error, or `DEATHS_ALONE_LIMIT` deaths of the
        consumer while handling them alone. A page of one item is dead-lettered; a page of several is split, each
        item appended again as an entry of its own (`split_entry`), so the failure is found on the item that has it
        and its page-mates go on. Return their ids and those of the entries to handle alone first.

        Redelivery alone is no failure: a consumer killed or restarted mid-batch re-reads its batch on start. Such
        an entry (nothing recorded) stays in this batch, marked DIED_IN_BATCH (one HSET: a crash loop's batch
        usually goes through at once); one with a reason that is not its own failure (`_is_own_failure`: that mark,
        a batch's error, too few deaths alone) is held back and the pending list re-read one at a time. An
        isolated read's one entry is handled alone whatever its mark.
        """
        reasons = await self.redis.hmget(self.failures_key, [entry.id for entry in exhausted])
        dead, unmarked, interrupted = [], [], []
        for entry, reason in zip(exhausted, reasons, strict=True):
            if reason is None:
                unmarked.append(entry)
            elif _is_own_failure(reason):
                dead.append((entry, f"failed {entry.deliveries - 1} deliveries; last error: {reason.decode()}"))
            else:
                interrupted.append(entry)
        if dead:
            await self.finish({entry.id: split_entry(self, entry, error) for entry, error in dead})
        held_back = {entry.id for entry, _ in dead}
        if self._isolate:
            return held_back
        if unmarked:
            log.warning("entries past max_deliveries without a recorded failure; handling them in their batch",
                        stream=self.stream, group=self.group, entries=len(unmarked))  # fmt: skip
            await self._record_failures(dict.fromkeys((entry.id for entry in unmarked), DIED_IN_BATCH))
        if interrupted:
            log.warning("entries past max_deliveries whose consumer died handling them; handling them alone",
                        stream=self.stream, group=self.group, entries=len(interrupted))  # fmt: skip
            held_back.update(entry.id for entry in interrupted)
            self.rewind()
        return held_back

    async def keep(self, ids: Sequence[str]) -> None:
        """Reset the idle time of entries we hold on purpose (e.g. waiting for their market), so other
        consumers' XAUTOCLAIM does not take them; JUSTID leaves their delivery counters alone."""
        if not ids:
            return
        async with map_redis_errors("keep pending entries"):
            await self.redis.xclaim(self.stream, self.group, self.consumer, 0, list(ids), justid=True)

    async def mark_handling_alone(self, entry: Entry) -> None:
        """Record, before handling `entry` alone, that the consumer died doing it: true if this process dies
        before `clear_handling_alone` (or `record_failure`) replaces it, and counted from one death to the next."""
        async with map_redis_errors("mark entry handled alone"):
            deaths = _deaths_alone(await self.redis.hget(self.failures_key, entry.id)) + 1
        times = f"{deaths} time{'s' if deaths > 1 else ''}"
        await self._record_failures({entry.id: f"the consumer died {times} while handling this entry alone"})

    async def clear_handling_alone(self, entry: Entry) -> None:
        """The entry was handled alone and the consumer lived (it may still be pending: held on purpose)."""
        async with map_redis_errors("clear entry handled alone"):
            await self.redis.hdel(self.failures_key, entry.id)

    async def record_failure(self, entries: Sequence[Entry], error: str) -> None:
        """Remember why these entries failed, so their dead letter can say so even after a crash. An error of
        several entries at once is recorded as such ("in a batch of N: ..."): it dead-letters none of them, since
        they are handled alone next, where an error is the entry's own."""
        if not entries:
            return
        reason = error[:2000] if len(entries) == 1 else f"in a batch of {len(entries)}: {error[:2000]}"
        await self._record_failures(dict.fromkeys((entry.id for entry in entries), reason))

    async def _record_failures(self, reasons: Mapping[str, str]) -> None:
        async with map_redis_errors("record failure"), self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.failures_key, mapping=reasons)
            pipe.expire(self.failures_key, FAILURES_TTL_S)
            await pipe.execute()

    async def finish(self, done: Mapping[str, Finish] | Sequence[str], output_stream: str | None = None) -> Finished:
        """Ack entries and write what each produced (`Finish`: outputs to `output_stream`, dead letters, entries
        appended again to this stream): one atomic script. `done` maps entry ids to their Finish, or lists ids that
        produced nothing.

        If the process dies before this line, the whole batch stays pending and is redone; after it, none of it is.
        """
        results = done if isinstance(done, Mapping) else dict.fromkeys(done, NOTHING)
        counts: list[bytes] = []
        outputs: list[bytes] = []
        output_items: list[bytes] = []
        dead: list[bytes] = []
        requeued: list[bytes] = []
        requeued_items: list[bytes] = []
        since: list[bytes] = []
        writes = False
        for finish in results.values():
            if finish is NOTHING:
                counts.append(b"0,0,0")
                continue
            writes = True
            counts.append(b"%d,%d,%d" % (len(finish.outputs), len(finish.dead), len(finish.requeue)))
            for payload, items in finish.outputs:
                outputs.append(payload)
                output_items.append(b"%d" % items)
            dead += finish.dead
            for payload, items in finish.requeue:
                requeued.append(payload)
                requeued_items.append(b"%d" % items)
                since.append(b"%d" % finish.since_ms)
        args = [
            self.group,
            self.consumer,
            join_lines(results),
            join_lines(counts) if writes else b"",
            join_lines(outputs),
            join_lines(output_items),
            join_lines(dead),
            join_lines(requeued),
            join_lines(requeued_items),
            join_lines(since),
        ]
        script_keys = [self.stream, output_stream or f"{self.stream}:unused", keys.STREAM_DLQ, self.failures_key,
                       keys.STREAM_ITEMS]  # fmt: skip
        async with map_redis_errors(f"finish batch on {self.stream}"):
            reply = await asyncio.shield(run_script(self.redis, "finish_batch", script_keys, args))
        finished = Finished(*map(int, reply))
        self.dead_lettered += finished.dead
        if finished.dead:
            log.warning("dead-lettered", stream=self.stream, group=self.group, items=finished.dead)
        return finished


def dead_item(consumer: StreamConsumer, entry: Entry, index: int | None, item: bytes, error: str) -> bytes:
    """The dead letter of item `index` of `entry`'s page (`dlq retry` appends it again as a page of one); with
    `index` None, of the whole entry, `item` being its data."""
    return encode_dead_letter(stream=consumer.stream, entry_id=entry.id, item=index, payload=item, error=error,
                              deliveries=entry.deliveries, group=consumer.group)  # fmt: skip


def dead_entry(consumer: StreamConsumer, entry: Entry, error: str) -> bytes:
    """The dead letter of a whole entry (its page could not be read as items, or it is an item alone)."""
    return dead_item(consumer, entry, None, entry.data, error)


def split_entry(consumer: StreamConsumer, entry: Entry, error: str) -> Finish:
    """An entry that failed on its own: dead-lettered when it holds one item (or cannot be read as items), else
    each of its items appended again as an entry of its own, keeping its arrival time."""
    try:
        items = items_of(entry.data)
    except PoisonMessage:
        items = []
    if len(items) == 1 and is_page(entry.data):  # a page of one: the item's own dead letter, as a poison item's
        return Finish(dead=[dead_item(consumer, entry, 0, items[0], error)])
    if len(items) <= 1:
        return Finish(dead=[dead_entry(consumer, entry, error)])
    log.warning("splitting an entry that failed into its items", stream=consumer.stream, id=entry.id,
                items=len(items), error=error)  # fmt: skip
    return Finish(requeue=[(page([item]), 1) for item in items], since_ms=entry.arrived_ms)


def _is_own_failure(reason: bytes) -> bool:
    """Whether a recorded reason proves the entry poison: an error it raised alone, or `DEATHS_ALONE_LIMIT` deaths
    alone; not fewer deaths alone, nor a death or an error of a batch it was in (`DIED_IN_BATCH`, "in a batch of
    N: ...")."""
    deaths = _deaths_alone(reason)
    if deaths:
        return deaths >= DEATHS_ALONE_LIMIT
    return reason != DIED_IN_BATCH.encode() and not _IN_A_BATCH.match(reason)


def _deaths_alone(reason: bytes | None) -> int:
    """How many times the consumer died handling the entry alone, from its failures hash value (0: other value)."""
    died = _DIED_ALONE.fullmatch(reason) if reason is not None else None
    return int(died[1]) if died else 0


BatchHandler = Callable[[list[Entry]], Awaitable[None]]


async def run_consumer(
    consumer: StreamConsumer,
    handle: BatchHandler,
    *,
    stop: asyncio.Event,
    on_error: Callable[[BaseException], None] | None = None,
    on_success: Callable[[], None] | None = None,
    once: bool = False,
    max_in_flight: int = 1,
) -> None:
    """Read batches and hand them to `handle` (which must call `consumer.finish`) until `stop` is set.

    - TransientSinkError (Redis or ClickHouse unreachable): retry the same batch in memory with backoff, so the
      entries' delivery counters don't grow while a sink is down; stop leaves them pending.
    - Any other exception: log it with the traceback, record it as the entries' last error and re-read them one
      at a time; an entry that keeps failing reaches `max_deliveries` and goes to the dead-letter stream while
      the others go through.
    - An entry read alone (isolation) is handled with nothing else in flight, and marked first
      (`mark_handling_alone`), so that if the process dies meanwhile the next start knows whom to blame.
    `max_in_flight > 1` reads and handles the next batch while earlier ones are finishing in Redis (the processor
    does; `finish` writes each output once whatever the overlap). Keep 1 where a batch must be the consumer's
    only pending one (the ClickHouse writer). On stop, the batches in hand are finished before returning.
    `once=True` returns when there is nothing left to read (tests and burst runs).
    """
    # Redis may not be up yet when a service starts: wait for it, don't crash
    await retry_while_down(consumer.ensure_group, stop=stop, event="cannot create consumer group yet; retrying",
                           on_error=on_error, stream=consumer.stream)  # fmt: skip
    read_backoff = Backoff(base_s=0.2, max_s=10.0)
    in_flight: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            if len(in_flight) >= max_in_flight:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                batch = await consumer.read()
                read_backoff.reset()
            except TransientSinkError as exc:
                _report(on_error, exc)
                log.warning("read failed; retrying", stream=consumer.stream, error=str(exc))
                await sleep_unless_stopped(stop, read_backoff.next_delay_s())
                continue
            if not batch:
                if in_flight:
                    await asyncio.wait(in_flight)
                elif once and consumer._pending_start is None:
                    return
                continue
            alone = consumer.read_alone
            if alone and in_flight:
                await asyncio.wait(in_flight)  # nothing else in hand while it runs: a death is this entry's
            handling = _handle_batch(consumer, handle, batch, alone=alone, stop=stop, on_error=on_error,
                                     on_success=on_success)  # fmt: skip
            if alone:
                await handling
                continue
            task = asyncio.create_task(handling)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
    finally:
        if in_flight:
            await asyncio.gather(*in_flight)


async def _handle_batch(
    consumer: StreamConsumer,
    handle: BatchHandler,
    batch: list[Entry],
    *,
    alone: bool,
    stop: asyncio.Event,
    on_error: Callable[[BaseException], None] | None,
    on_success: Callable[[], None] | None,
) -> None:
    """Handle `batch` until it is done, failed (recorded) or left pending for a stop; `alone`: it is one entry
    with nothing else in flight, marked while in hand (see `StreamConsumer.mark_handling_alone`)."""
    marked = not alone

    async def attempt() -> bool:
        nonlocal marked
        if not marked:  # once: each mark counts one more death
            await consumer.mark_handling_alone(batch[0])
            marked = True
        await handle(batch)
        return True

    try:
        # a sink down: the batch is kept in memory and retried; a stop leaves it pending for the next start
        done = await retry_while_down(attempt, stop=stop, event="sink unavailable; batch kept",
                                      on_error=on_error,
                                      stream=consumer.stream, entries=len(batch))  # fmt: skip
    except Exception as exc:
        _report(on_error, exc)
        log.exception("batch failed", stream=consumer.stream, group=consumer.group, entries=len(batch))
        # the entries stay pending either way; if Redis is down only the reason is lost
        with contextlib.suppress(TransientSinkError):
            await consumer.record_failure(batch, f"{type(exc).__name__}: {exc}")
        consumer.rewind()
        await sleep_unless_stopped(stop, Backoff(base_s=0.2, max_s=10.0).next_delay_s())
        return
    if done and on_success is not None:
        on_success()
    if alone and marked:  # the consumer lived: no death to count (if Redis is down, one stays: one is a chance)
        with contextlib.suppress(TransientSinkError):
            await consumer.clear_handling_alone(batch[0])


def _report(on_error: Callable[[BaseException], None] | None, exc: BaseException) -> None:
    if on_error is not None:
        on_error(exc)
