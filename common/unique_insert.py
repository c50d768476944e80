"""Insert only what a table does not hold yet: every table unique by its natural key at insert time
(docs/CONTRACT.md §4).

For each batch of one table:
1. duplicates inside the batch are dropped (trades keep the first row of an id; markets and events
   keep an id's newest `updated_at`);
2. the table's insert lock is taken in Redis (`lock:insert:<table>`), so two writers, or a writer and `replay`,
   never both find an id absent and both insert it;
3. ClickHouse is asked which of the batch's ids it already holds, on a key it can prune. Trades:
   `SELECT id ... WHERE timestamp BETWEEN a AND b OR ...` over the batch's time ranges (answered from the
   projection `by_time`, ordered by (timestamp, id)), intersected with the batch in
   Python: exact, no hashes, no ids in the SQL text. Markets and events: the stored `updated_at` of the batch's
   ids (both tables are ordered by id); a row whose id is stored with the same or a newer version is skipped, an
   older stored version is deleted and replaced;
4. the rest is inserted with a dedup token derived from the stream entries it holds and the rows' keys (`row_keys`);
   then the lock is released.
On a replicated deployment the check must see every acknowledged insert whichever replica answers it: it is sent
with the profile's `check_settings` (`select_sequential_consistency=1` on `cluster` and `cloud`,
common/deployment.py), and a replica that cannot answer consistently raises, which is a TransientSinkError like
any failed check: the batch is retried, never taken as absent.
The caller acks after this returns. If it dies after the insert and before the ack, the replay (the whole batch,
or one entry at a time after `rewind()`) finds every id stored and inserts nothing.

Why ask ClickHouse rather than keep the ids seen in Redis: it is exact at any table size with nothing in Redis but
the lock (a bounded window of recent ids is not exact at 1B rows), and unlike giving each source a disjoint range
it also covers re-runs, replays and bisection. Its cost is in docs/guarantees.md ("Counted once: the unique
insert") and `bench/bench_dedup.py`.

The lock is SET PX with the owner's name, extended every third of its time to live while held, released by
compare-and-delete (lua/acquire_lock.lua, lua/release_lock.lua). Where the server has replicas, each lock taken is
followed by WAIT for all of them (`wait_for_replicas`), so a failover to any one keeps it; Redis replication stays
asynchronous all the same (docs/operations.md, "One writer per table"). Its time to live is the insert's client
timeout (`send_receive_timeout_s`) plus LOCK_MARGIN_S, so a lock expires (its holder dead or frozen) only after the
holder's client has given up its insert. A writer restarted under the same consumer name takes its own lock back at
once: its dead incarnation's insert may still be running on the server, but the restart re-reads the same pending
entries, computes the same rows and so sends the same dedup token, and ClickHouse keeps one of the two.

One writer per table is the supported deployment: `writer_leases` holds `lock:insert:<table>:writer` of each of its
tables for the writer's life. A second writer (another consumer name) waits as a standby until the lease is free:
released by a writer that stops, or expired WRITER_LEASE_TTL_S after one that died. The per-batch insert lock still
serializes a writer and `pipeline replay`, and two writers in the moment a lease changes hands.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
import structlog
from clickhouse_connect.driver.client import Client

from common import deployment, keys
from common.backoff import sleep_unless_stopped
from common.clickhouse import ColumnData, batch_token, insert_columns_isolating_rejects, map_clickhouse_errors
from common.config import ClickHouseSettings
from common.errors import TransientSinkError
from common.lua_scripts import run_script
from common.redis_client import map_redis_errors
from common.redis_probe import connected_replicas

log = structlog.get_logger()

LOCK_MARGIN_S = 30.0
LOCK_POLL_S = 0.02
LOCK_WAIT_LOG_S = 10.0
# A writer's lease on its tables: extended every third of this; a standby takes over this long after its holder died
# without releasing it (one that stalls that long finds the lease gone and stops).
WRITER_LEASE_TTL_S = 30.0
LEASE_POLL_S = 1.0
# How long a lock just taken may wait for the replicas to have it (WAIT); past that, the batch is retried later.
WAIT_REPLICAS_MS = 2000
# Timestamps further apart than this start a new range of the check; at most MAX_RANGES ranges per query (the
# closest ones are merged), so a batch of interleaved backfill ranges still reads only its own seconds.
RANGE_GAP_S = 60
MAX_RANGES = 32
IDS_PER_QUERY = 1000  # markets/events look ids up by `id IN`: bounded SQL size per query
STORED_IDS_BLOCK_ROWS = 8192  # the fills' check reads the stored ids of its ranges in blocks of this many rows
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class UniqueKey:
    """What a table is unique by: `id`, checked on the time ranges of `time_column` (immutable rows: fills,
    trades) or, for rows that change (markets, events), kept at the newest `version_column`."""

    time_column: str | None = None
    version_column: str | None = None
    id_column: str = "id"

    def __post_init__(self) -> None:
        if (self.time_column is None) == (self.version_column is None):
            raise ValueError("a UniqueKey has either a time column or a version column")


@dataclass
class UniqueInsert:
    """What became of a batch's rows."""

    inserted: int = 0
    stored_before: int = 0  # skipped: the table already held the id (at the same or a newer version)
    batch_duplicates: int = 0  # skipped: an earlier (or newer) row of the same batch had the id
    replaced: int = 0  # markets/events: older stored versions deleted, the new row inserted
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (index of the caller's row, reason)


def time_ranges(
    timestamps: Iterable[int], *, gap_s: int = RANGE_GAP_S, max_ranges: int = MAX_RANGES
) -> list[tuple[int, int]]:
    """The sorted distinct `timestamps` as inclusive ranges, split where they are more than `gap_s` apart, at
    most `max_ranges` of them (the widest gaps are the ones kept)."""
    stamps = sorted(set(timestamps))
    if not stamps:
        return []
    gaps = sorted(range(1, len(stamps)), key=lambda i: stamps[i] - stamps[i - 1], reverse=True)
    cuts = sorted(i for i in gaps[: max_ranges - 1] if stamps[i] - stamps[i - 1] > gap_s)
    bounds = [0, *cuts, len(stamps)]
    return [(stamps[start], stamps[end - 1]) for start, end in itertools.pairwise(bounds)]


def version_micros(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


def first_of_each_id(columns: ColumnData, names: Sequence[str], unique: UniqueKey) -> list[int]:
    """Indexes of the rows to keep, in order: one per id (the first, or the newest version; ties: the first)."""
    ids = columns[names.index(unique.id_column)]
    chosen: dict[str, int] = {}
    if unique.version_column is None:
        if len(set(ids)) == len(ids):  # the usual batch: one C pass instead of a Python loop
            return list(range(len(ids)))
        for index, row_id in enumerate(ids):
            chosen.setdefault(row_id, index)
    else:
        versions = columns[names.index(unique.version_column)]
        for index, row_id in enumerate(ids):
            kept = chosen.setdefault(row_id, index)
            if versions[index] > versions[kept]:
                chosen[row_id] = index
    return sorted(chosen.values())


def pick(column: Sequence[Any], indexes: Sequence[int]) -> Sequence[Any]:
    """The values at `indexes` (ascending, distinct) of `column`; all of them: `column` itself, not a copy."""
    return column if len(indexes) == len(column) else [column[index] for index in indexes]


def take(columns: ColumnData, indexes: Sequence[int]) -> ColumnData:
    """The rows at `indexes` (ascending, distinct) of `columns`, as columns."""
    return [pick(column, indexes) for column in columns]


def row_keys(columns: ColumnData, names: Sequence[str], unique: UniqueKey, indexes: Sequence[int]) -> Sequence[str]:
    """What the rows at `indexes` are, for their dedup token (`batch_token`): their ids, each with its version
    where rows change (a market's newer version under an id is another row)."""
    ids = pick(columns[names.index(unique.id_column)], indexes)
    if unique.version_column is None:
        return ids
    versions = pick(columns[names.index(unique.version_column)], indexes)
    return [f"{row_id}@{version_micros(version)}" for row_id, version in zip(ids, versions, strict=True)]


def fetch_stored_ids(
    client: Client,
    table: str,
    time_column: str,
    ranges: Sequence[tuple[int, int]],
    consistency: Mapping[str, Any],
    wanted: set[str],
) -> set[str]:
    """Those of `wanted` that `table` holds in the time ranges (the ranges are our own integers, so they go in the
    SQL as text), read with the `consistency` settings (module docstring).

    The ranges' ids arrive STORED_IDS_BLOCK_ROWS at a time and only the wanted ones are kept: a batch whose times
    scatter over more than MAX_RANGES clusters gets merged ranges spanning rows stored long before (one batch of the
    bench's 10,000 matched 88,000 stored ids over 18 hours), and holding them all at once, as rows, columns and a
    set, was the writer's peak memory."""
    where = " OR ".join(f"({time_column} BETWEEN toDateTime({start}) AND toDateTime({end}))" for start, end in ranges)
    stored: set[str] = set()
    settings = dict(consistency) | {"max_block_size": STORED_IDS_BLOCK_ROWS}
    with (
        map_clickhouse_errors(f"check {table}"),
        client.query_column_block_stream(f"SELECT id FROM {table} WHERE {where}", settings=settings) as blocks,
    ):
        for (ids,) in blocks:
            stored |= wanted.intersection(ids)
    return stored


def fetch_stored_versions(
    client: Client, table: str, version_column: str, ids: Sequence[str], consistency: Mapping[str, Any]
) -> dict[str, int]:
    """id -> newest stored version (unix microseconds) of those of `ids` that `table` holds, read with the
    `consistency` settings."""
    stored: dict[str, int] = {}
    for start in range(0, len(ids), IDS_PER_QUERY):
        with map_clickhouse_errors(f"check {table}"):
            rows = client.query(
                f"SELECT id, toUnixTimestamp64Micro(max({version_column})) FROM {table} "
                "WHERE id IN {ids:Array(String)} GROUP BY id",
                parameters={"ids": list(ids[start : start + IDS_PER_QUERY])},
                settings=dict(consistency),
            ).result_rows
        stored.update((row[0], int(row[1])) for row in rows)
    return stored


def delete_ids(client: Client, table: str, ids: Sequence[str]) -> None:
    """Lightweight DELETE (count() reflects it at once); it needs the background pool, so merges must be on. It
    waits for the replica that runs it only (deployment.DELETE_SETTINGS): a replica down must not stall markets."""
    for start in range(0, len(ids), IDS_PER_QUERY):
        with map_clickhouse_errors(f"delete replaced rows of {table}"):
            client.command(f"DELETE FROM {table} WHERE id IN {{ids:Array(String)}}",
                           parameters={"ids": list(ids[start : start + IDS_PER_QUERY])},
                           settings=dict(deployment.DELETE_SETTINGS))  # fmt: skip


def select_new(
    client: Client,
    table: str,
    names: Sequence[str],
    columns: ColumnData,
    candidates: list[int],
    unique: UniqueKey,
    consistency: Mapping[str, Any],
) -> tuple[list[int], list[str]]:
    """The candidates (row indexes) `table` does not hold yet, and the ids whose stored (older) version they
    replace; every query of the check carries `consistency`."""
    ids = pick(columns[names.index(unique.id_column)], candidates)  # ids[n]: candidate n's
    if unique.time_column is not None:
        times = pick(columns[names.index(unique.time_column)], candidates)
        stored_ids = fetch_stored_ids(client, table, unique.time_column, time_ranges(times), consistency, set(ids))
        if not stored_ids:  # the live case: nothing of the batch stored yet
            return candidates, []
        return [index for index, row_id in zip(candidates, ids, strict=True) if row_id not in stored_ids], []
    assert unique.version_column is not None
    versions = pick(columns[names.index(unique.version_column)], candidates)
    stored = fetch_stored_versions(client, table, unique.version_column, ids, consistency)
    fresh = [(index, row_id) for index, row_id, version in zip(candidates, ids, versions, strict=True)
             if stored.get(row_id, -1) < version_micros(version)]  # fmt: skip
    return [index for index, _ in fresh], [row_id for _, row_id in fresh if row_id in stored]


@contextlib.asynccontextmanager
async def insert_lock(
    redis: aioredis.Redis, table: str, *, owner: str, ttl_s: float, stop: asyncio.Event | None = None
) -> AsyncIterator[None]:
    """Hold `lock:insert:<table>` for the block; raises TransientSinkError if `stop` is set while waiting."""
    key, ttl_ms = keys.insert_lock_key(table), str(int(ttl_s * 1000))
    waiting_since = next_log_at = time.monotonic()
    async with map_redis_errors(f"take the insert lock of {table}"):
        while not await run_script(redis, "acquire_lock", [key], [owner, ttl_ms]):
            if stop is not None and stop.is_set():
                raise TransientSinkError(f"stopped while waiting for the insert lock of {table}", sink="redis")
            if time.monotonic() >= next_log_at:
                holder = await redis.get(key)
                log.info("waiting for the insert lock", table=table, holder=holder.decode() if holder else None,
                         waited_s=round(time.monotonic() - waiting_since, 1))  # fmt: skip
                next_log_at = time.monotonic() + LOCK_WAIT_LOG_S
            await asyncio.sleep(LOCK_POLL_S)
        try:
            await wait_for_replicas(redis, f"the insert lock of {table}")
        except TransientSinkError:
            await run_script(redis, "release_lock", [key], [owner])
            raise
    # dies in the block: the lock stays until it expires, or until this owner (restarted) takes it back
    async with _kept(_keep_lock(redis, key, owner, ttl_ms, ttl_s / 3), _release(redis, [key], owner)):
        yield


@contextlib.asynccontextmanager
async def _kept(keeper: Coroutine[Any, Any, None], release: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `keeper` (extending what is held) during the block, then stop it and run `release`."""
    task = asyncio.create_task(keeper)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.shield(release)


async def _release(redis: aioredis.Redis, lock_keys: Sequence[str], owner: str, *, down_ok: bool = False) -> None:
    """Compare-and-delete each of `lock_keys` held by `owner`; TransientSinkError when Redis cannot answer, unless
    `down_ok` (what is not released expires by itself)."""
    try:
        async with map_redis_errors(f"release {', '.join(lock_keys)}"):
            for key in lock_keys:
                await run_script(redis, "release_lock", [key], [owner])
    except TransientSinkError:
        if not down_ok:
            raise
        log.warning("could not release; the locks expire by themselves", keys=list(lock_keys))


async def wait_for_replicas(redis: aioredis.Redis, what: str) -> None:
    """Where replicas are connected (INFO replication), WAIT until every one has our writes so far (the lock just
    taken); TransientSinkError if they do not within WAIT_REPLICAS_MS. Nothing to wait for without replicas, or
    where INFO is refused (managed services: `connected_replicas` says 0)."""
    replicas = await connected_replicas(redis)
    if replicas:
        acked = int(await redis.wait(replicas, WAIT_REPLICAS_MS))
        if acked < replicas:
            raise TransientSinkError(f"redis {what}: {acked} of {replicas} replicas have it after {WAIT_REPLICAS_MS} "
                                     "ms (WAIT); retrying", sink="redis")  # fmt: skip


@contextlib.asynccontextmanager
async def writer_leases(
    redis: aioredis.Redis,
    tables: Sequence[str],
    *,
    owner: str,
    stop: asyncio.Event,
    on_standby: Callable[[str, str], None],
    on_lost: Callable[[str], None],
    on_error: Callable[[TransientSinkError], None],
) -> AsyncIterator[None]:
    """Hold every table's writer lease for the block (module docstring). While another owner holds one, wait as a
    standby, calling `on_standby(table, holder)` (`on_error` while Redis cannot answer); when `stop` is set first,
    the block is skipped. A lease found taken by another owner later (this process stalled past its time to live,
    or a failover lost it) calls `on_lost(message)`: the caller stops writing."""
    ordered = sorted(tables)  # one order for every writer: no two standbys each hold a lease the other waits for
    lease_keys = [keys.writer_lease_key(table) for table in ordered]
    ttl_ms = str(int(WRITER_LEASE_TTL_S * 1000))
    held = await _take_leases(redis, ordered, owner, ttl_ms, stop, on_standby, on_error)
    if not held:
        yield
        return
    async with _kept(_keep_leases(redis, lease_keys, owner, ttl_ms, on_lost), _release(redis, lease_keys, owner,
                                                                                      down_ok=True)):  # fmt: skip
        yield


async def _take_leases(
    redis: aioredis.Redis, tables: Sequence[str], owner: str, ttl_ms: str, stop: asyncio.Event,
    on_standby: Callable[[str, str], None], on_error: Callable[[TransientSinkError], None],
) -> bool:  # fmt: skip
    """Take the tables' leases in order, waiting on each held by another owner; False if `stop` is set first."""
    next_log_at = 0.0
    for table in tables:
        key = keys.writer_lease_key(table)
        while not stop.is_set():
            try:
                async with map_redis_errors("take a writer lease"):
                    if await run_script(redis, "acquire_lock", [key], [owner, ttl_ms]):
                        await wait_for_replicas(redis, f"the writer lease {key}")
                        break
                    holder = await redis.get(key)
            except TransientSinkError as exc:
                on_error(exc)
                log.warning("cannot take the writer lease yet; retrying", key=key, error=str(exc))
                await sleep_unless_stopped(stop, LEASE_POLL_S)
                continue
            on_standby(table, holder.decode() if holder else "")
            if time.monotonic() >= next_log_at:
                log.info("standby: another writer writes this table", table=table,
                         holder=holder.decode() if holder else None)  # fmt: skip
                next_log_at = time.monotonic() + LOCK_WAIT_LOG_S
            await sleep_unless_stopped(stop, LEASE_POLL_S)
    return not stop.is_set()


async def _keep_leases(
    redis: aioredis.Redis, lease_keys: Sequence[str], owner: str, ttl_ms: str, on_lost: Callable[[str], None]
) -> None:
    """Extend the leases every third of their time to live; `on_lost` once one is another owner's, or could not be
    extended for a whole time to live (it may have expired: on a primary cut off from the others, another writer
    may hold it on the new one)."""
    extended_at = dict.fromkeys(lease_keys, time.monotonic())
    while True:
        await asyncio.sleep(WRITER_LEASE_TTL_S / 3)
        for key in lease_keys:
            try:
                async with map_redis_errors("extend a writer lease"):
                    if await run_script(redis, "acquire_lock", [key], [owner, ttl_ms]):
                        extended_at[key] = time.monotonic()
                        continue
                    holder = await redis.get(key)
            except TransientSinkError as exc:
                log.warning("could not extend a writer lease", key=key, error=str(exc))
                if time.monotonic() - extended_at[key] < WRITER_LEASE_TTL_S:
                    continue
                on_lost(f"writer lease {key} not extended for {WRITER_LEASE_TTL_S:g} s ({exc}); stopping")
                return
            on_lost(f"writer lease {key} taken by {holder.decode() if holder else 'another writer'}; stopping")
            return


async def _keep_lock(redis: aioredis.Redis, key: str, owner: str, ttl_ms: str, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            async with map_redis_errors("extend the insert lock"):
                held = await run_script(redis, "acquire_lock", [key], [owner, ttl_ms])
        except TransientSinkError as exc:
            log.warning("could not extend the insert lock", key=key, error=str(exc))
            continue
        if not held:
            log.error("insert lock taken by another owner while held", key=key, owner=owner)


@dataclass(frozen=True)
class UniqueTarget:
    """Where and how a batch goes: the table, its columns (and types), its key, and who inserts."""

    table: str
    columns: Sequence[str]
    unique: UniqueKey
    owner: str  # the lock's owner: a stable name (the writer's consumer name)
    token_source: str  # the dedup token's namespace (the stream, for the writer)
    column_types: Sequence[str] | None = None


async def insert_unique(
    client: Client,
    redis: aioredis.Redis,
    target: UniqueTarget,
    columns: ColumnData,
    entry_ids: Sequence[str],
    settings: ClickHouseSettings,
    *,
    stop: asyncio.Event | None = None,
) -> UniqueInsert:
    """Insert those rows of `columns` (one list per column, in `target.columns` order) whose key `target.table`
    does not hold yet (module docstring); `entry_ids[i]` is the stream entry (or, for `replay`, the trade id) row
    i came from: the dedup token is derived from those of the rows actually sent, and from the rows' keys.
    `settings.unique_keys = False` (a bench knob) sends every row, with no check."""
    outcome = UniqueInsert()
    row_count = len(entry_ids)
    if not settings.unique_keys:
        candidates = list(range(row_count))
    else:
        candidates = first_of_each_id(columns, target.columns, target.unique)
    outcome.batch_duplicates = row_count - len(candidates)
    if not candidates:
        return outcome
    lock = (
        insert_lock(redis, target.table, owner=target.owner, ttl_s=lock_ttl_s(settings), stop=stop)
        if settings.unique_keys
        else contextlib.nullcontext()
    )
    async with lock:
        fresh, replaced = candidates, list[str]()
        if settings.unique_keys:
            consistency = deployment.PROFILES[settings.deployment].check_settings
            fresh, replaced = await asyncio.to_thread(select_new, client, target.table, target.columns, columns,
                                                      candidates, target.unique, consistency)  # fmt: skip
        if replaced:
            await asyncio.to_thread(delete_ids, client, target.table, replaced)
        # dies here (after a delete): the old versions are gone and the new ones not in yet, but their entries are
        # still pending, so the replay finds those ids absent and inserts them
        if fresh:
            token = batch_token(target.token_source, [entry_ids[index] for index in fresh],
                                row_keys(columns, target.columns, target.unique, fresh))  # fmt: skip
            refused = await insert_columns_isolating_rejects(
                client, target.table, target.columns, take(columns, fresh), token,
                column_types=target.column_types, max_attempts=settings.insert_max_attempts,
            )  # fmt: skip
            outcome.rejected = [(fresh[index], reason) for index, reason in refused]
    outcome.stored_before = len(candidates) - len(fresh)
    outcome.replaced = len(replaced)
    outcome.inserted = len(fresh) - len(outcome.rejected)
    return outcome


def lock_ttl_s(settings: ClickHouseSettings) -> float:
    """The lock's time to live in seconds: longer than one insert's client timeout (module docstring)."""
    return settings.send_receive_timeout_s + LOCK_MARGIN_S
