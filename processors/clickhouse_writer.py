"""ClickHouse writer: three streams into three tables, with exactly-once effect (docs/CONTRACT.md §3 rules 4 and 5).

Reads `stream:markets`, `stream:events` and `stream:trades`, each in consumer group `clickhouse-writer`, into
`markets`, `events` and `trades`. `order_filled_events` is a view over `trades` (migration 007) that gives each
fill back exactly from its trade (`processors.rows`), so the writer does not read `stream:order_events` and
stores each fill once. A fill the processor holds while waiting for its market appears in `order_filled_events`
when its trade is written.

A batch is exactly one XREADGROUP reply (up to CLICKHOUSE_BATCH_SIZE rows' worth of entries: an entry is a page of
up to STREAM_PAGE_MAX_ITEMS items, common/pages.py; read at most every CLICKHOUSE_FLUSH_INTERVAL_S unless the
stream is backed up), and a consumer has at most one batch pending. A batch goes through
`common.unique_insert.insert_unique`: under the table's insert lock (`lock:insert:<table>`) only the rows whose `id`
the table does not hold yet are inserted, so a fill served by both sources, a backfill re-run, a replay after a
crash (whole, or entry by entry after a failure) or a second writer never stores a row twice; the rows sent carry an
`insert_deduplication_token` derived from their stream ids and their own ids (in the stream's namespace,
`StreamSpec`), which covers an insert retried while its first attempt may still be landing. Entries are acked only
after ClickHouse accepted their rows (or held them already). ClickHouse down: the batch is kept and retried with
backoff, and the backlog waits in Redis. An item that cannot be converted is dead-lettered alone with the reason; a
row ClickHouse refuses is found by bisection and its item dead-lettered with the reason (its page- and batch-mates
go in).

One writer per table: at start the writer takes its tables' leases (`common.unique_insert.writer_leases`); a second
writer, under another consumer name, waits as a standby (heartbeat state `standby`) and takes over when the first
stops or dies. One that loses a lease stops, and supervisord restarts it as a standby.

Also trims the four streams continuously, below what every group has acked (MINID), so memory stays bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import NamedTuple

import structlog
from clickhouse_connect.driver.client import Client
from pydantic import Field

from common import keys
from common.backoff import retry_while_down, sleep_unless_stopped
from common.clickhouse import apply_migrations, describe_columns, make_client
from common.config import ClickHouseSettings, PipelineSettings, RedisSettings, StreamSettings, load
from common.errors import SinkError, TransientSinkError
from common.pages import items_of
from common.service import Service, run_worker, service_main, tune_gc
from common.streams import NOTHING, Entry, Finish, StreamConsumer, dead_item, pages_for, run_consumer
from common.trimming import trim_acked
from common.unique_insert import UniqueTarget, insert_unique, writer_leases
from processors.rows import STREAMS, StreamSpec

log = structlog.get_logger()
STANDBY = "standby: "  # the heartbeat's last_error while another writer holds a table's lease


class WriterSettings(PipelineSettings):
    clickhouse_writer_consumer: str = Field("clickhouse_writer", min_length=1)


class BatchCounts(NamedTuple):
    inserted: int  # rows
    skipped: int  # rows a table held already, or repeated in the batch
    dead: int  # dead letters: items, or entries that were no page of items


class StreamWriter:
    """One stream into its tables: each batch converted once, into the columns of each table."""

    def __init__(
        self,
        service: Service,
        spec: StreamSpec,
        consumer: StreamConsumer,
        ch: ClickHouseSettings,
        converting: asyncio.Lock,
        owner: str,
    ) -> None:
        self.service = service
        self.spec = spec
        self.consumer = consumer
        self.ch = ch
        # Shared by the streams: one batch at a time is turned into columns and inserted, so the process holds one
        # batch of Python values, not three (the bench measured 488 MB RSS without it). The work is CPU-bound in
        # one interpreter either way, so little overlap is lost.
        self.converting = converting
        self.owner = owner  # of the tables' insert locks: the consumer name, stable across restarts
        self.client: Client | None = None
        self.target: UniqueTarget | None = None
        self.last_read_at = 0.0

    def connect(self) -> tuple[Client, UniqueTarget]:
        if self.client is None or self.target is None:
            client, table = make_client(self.ch), self.spec.table
            types = describe_columns(client, table.table)
            self.target = UniqueTarget(table.table, table.columns, table.unique, owner=self.owner,
                                       token_source=self.spec.stream, column_types=[types[c] for c in table.columns])
            self.client = client
        return self.client, self.target

    async def handle(self, batch: list[Entry]) -> None:
        async with self.converting:
            await self.insert_and_finish(batch)
        await self.pace(len(batch))

    async def insert_and_finish(self, batch: list[Entry]) -> BatchCounts:
        started = time.perf_counter()
        client, target = await asyncio.to_thread(self.connect)
        converted = self.spec.convert([entry.data for entry in batch], datetime.now(UTC))
        dead: dict[int, list[bytes]] = {}  # index into the batch -> dead letters of its items (or of itself)
        for index, item, data, reason in converted.poison:  # item None: the whole entry, `data` its data
            dead.setdefault(index, []).append(dead_item(self.consumer, batch[index], item, data, reason))
        # the dedup token covers the entry each row came from (and the rows' own keys)
        row_ids = converted.row_ids([entry.id for entry in batch])
        outcome = await insert_unique(client, self.service.redis, target, converted.columns, row_ids, self.ch,
                                      stop=self.service.stop)  # fmt: skip
        inserted, skipped = outcome.inserted, outcome.stored_before + outcome.batch_duplicates
        self.service.count(f"rows_{target.table}", inserted)
        self.service.count("insert_ms", round((time.perf_counter() - started) * 1000))  # batch start to insert done
        log.info("batch", stream=self.spec.stream, table=target.table, entries=len(batch), rows=inserted,
                 skipped=skipped, replaced=outcome.replaced, rejected=len(outcome.rejected),
                 duration_s=round(time.perf_counter() - started, 4))  # fmt: skip
        for row, reason in outcome.rejected:  # a refused row's item is dead-lettered; its page-mates are in
            index, item = converted.origin(row)
            letter = dead_item(self.consumer, batch[index], item, items_of(batch[index].data)[item],
                               f"rejected by clickhouse ({target.table}): {reason}")  # fmt: skip
            dead.setdefault(index, []).append(letter)
        # dies here: the rows are in and the entries pending; the replay finds every id stored and inserts nothing.
        # Entries whose rows were stored already (or repeated in the batch) are acked with the rest.
        finished = await self.consumer.finish(
            {entry.id: Finish(dead=dead[index]) if index in dead else NOTHING for index, entry in enumerate(batch)}
        )
        self.service.count("rows_written", inserted)
        self.service.count("duplicates_skipped", skipped)
        self.service.count("dead_lettered", finished.dead)
        return BatchCounts(inserted, skipped, finished.dead)

    async def pace(self, batch_size: int) -> None:
        """Below a full batch, wait out the flush interval so the next read gathers a bigger batch."""
        if batch_size < self.consumer.batch_max:
            wait_s = self.ch.flush_interval_s - (time.monotonic() - self.last_read_at)
            if wait_s > 0:
                await sleep_unless_stopped(self.service.stop, wait_s)
        self.last_read_at = time.monotonic()

    def on_error(self, exc: BaseException) -> None:
        if isinstance(exc, SinkError) and exc.sink == "clickhouse":
            self.client = None  # reconnect: the server may have restarted (a migration may have run meanwhile)
        self.service.degraded(exc)


async def migrate_when_reachable(service: Service, ch: ClickHouseSettings) -> None:
    migrated = await retry_while_down(lambda: asyncio.to_thread(apply_migrations, ch), stop=service.stop,
                                      event="clickhouse not ready; retrying", on_error=service.degraded,
                                      base_s=0.5, max_s=15.0)  # fmt: skip
    if migrated is not None:
        service.healthy()


async def trim_forever(service: Service, interval_s: float) -> None:
    while not service.stop.is_set():
        for stream in keys.STREAM_GROUPS:
            try:
                removed = await trim_acked(service.redis, stream, keys.STREAM_GROUPS[stream])
                service.count("trimmed", removed)
            except TransientSinkError as exc:
                log.warning("trim failed", stream=stream, error=str(exc))
        await sleep_unless_stopped(service.stop, interval_s)


def standby(service: Service, table: str, holder: str) -> None:
    """Another writer holds `table`'s lease: wait, saying so in the heartbeat (one writer per table)."""
    service.state = "standby"
    service.last_error = f"{STANDBY}{table} is written by {holder or 'another writer'}"


def lost_lease(service: Service, message: str) -> None:
    """Another writer took a lease this one held: stop writing (supervisord restarts the process, as a standby)."""
    log.error("lost a writer lease", error=message)
    service.degraded(message)
    service.stop.set()


async def run(
    settings: WriterSettings,
    *,
    redis: RedisSettings,
    clickhouse: ClickHouseSettings,
    streams: StreamSettings,
    once: bool = False,
    stop: asyncio.Event | None = None,
) -> Service:
    async def body(service: Service) -> None:
        await migrate_when_reachable(service, clickhouse)
        converting = asyncio.Lock()

        def writer(spec: StreamSpec, stream_settings: StreamSettings) -> StreamWriter:
            consumer = StreamConsumer(service.redis, stream=spec.stream, group=keys.GROUP_CLICKHOUSE_WRITER,
                                      consumer=settings.clickhouse_writer_consumer, settings=stream_settings,
                                      batch_max=pages_for(clickhouse.batch_size, stream_settings))  # fmt: skip
            return StreamWriter(service, spec, consumer, clickhouse, converting, settings.clickhouse_writer_consumer)

        writers = [writer(spec, streams) for spec in STREAMS]
        tables = {w.spec.table.table for w in writers}
        async with writer_leases(service.redis, sorted(tables), owner=settings.clickhouse_writer_consumer,
                                 stop=service.stop, on_standby=lambda table, holder: standby(service, table, holder),
                                 on_lost=lambda message: lost_lease(service, message),
                                 on_error=service.degraded):  # fmt: skip
            if service.stop.is_set():
                return
            service.healthy()
            if service.last_error.startswith(STANDBY):
                service.last_error = ""
            trimmer = asyncio.create_task(trim_forever(service, streams.trim_interval_s))
            try:
                await asyncio.gather(*(
                    run_consumer(w.consumer, w.handle, stop=service.stop, on_error=w.on_error,
                                 on_success=service.healthy, once=once)
                    for w in writers
                ))  # fmt: skip
            finally:
                service.stop.set()
                await trimmer
                for writer in writers:
                    if writer.client is not None:
                        writer.client.close()

    return await run_worker("clickhouse_writer", redis, body, stop=stop)


async def start(args: argparse.Namespace) -> None:
    await run(
        load(WriterSettings),
        redis=load(RedisSettings),
        clickhouse=load(ClickHouseSettings),
        streams=load(StreamSettings),
        once=args.once,
    )


def main(argv: list[str] | None = None) -> int:
    tune_gc()  # a consumer's batches are short-lived garbage with no cycles (common/service.py)
    return service_main("clickhouse_writer", start, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
