"""ClickHouse writer: the four streams into their tables, with exactly-once effect (DESIGN §3 rules 4 and 5).

Reads `stream:markets`, `stream:events`, `stream:order_events` and `stream:trades`, each in consumer group
`clickhouse-writer`, into `markets`, `events`, `order_filled_events` and `trades`.

A batch is exactly one XREADGROUP reply (up to CLICKHOUSE_BATCH_SIZE entries, read at most every
CLICKHOUSE_FLUSH_INTERVAL_S unless the stream is backed up), and a consumer has at most one batch pending. Each
batch goes through `common.unique_insert.insert_unique`: under the table's insert lock (`lock:insert:<table>`) only
the rows whose `id` the table does not hold yet are inserted, so a fill served by both sources, a backfill
re-run, a replay after a crash (whole, or entry by entry after a failure) or a second writer never stores a row
twice; the rows sent carry an `insert_deduplication_token` derived from their stream ids, which covers an insert
retried while its first attempt may still be landing. Entries are acked only after ClickHouse accepted their
rows (or held them already). ClickHouse down: the batch is kept and retried with backoff, and the backlog waits
in Redis. A row ClickHouse refuses is found by bisection and dead-lettered; its batch-mates go in.

Also trims the four streams continuously, below what every group has acked (MINID), so memory stays bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import structlog
from clickhouse_connect.driver.client import Client
from pydantic import Field

from common import keys
from common.backoff import Backoff, sleep_unless_stopped
from common.clickhouse import apply_migrations, describe_columns, make_client
from common.config import ClickHouseSettings, PipelineSettings, RedisSettings, StreamSettings, load
from common.errors import PoisonMessage, SinkError, TransientSinkError
from common.service import Service, run_worker, service_main, tune_gc
from common.streams import Entry, StreamConsumer, run_consumer
from common.trimming import trim_acked
from common.unique_insert import UniqueTarget, insert_unique
from processors.rows import TABLES, Row, TableSpec

log = structlog.get_logger()


class WriterSettings(PipelineSettings):
    clickhouse_writer_consumer: str = Field("clickhouse_writer", min_length=1)


class TableWriter:
    """One stream into one table."""

    def __init__(
        self,
        service: Service,
        spec: TableSpec,
        consumer: StreamConsumer,
        ch: ClickHouseSettings,
        converting: asyncio.Lock,
        owner: str,
    ) -> None:
        self.service = service
        self.spec = spec
        self.consumer = consumer
        self.ch = ch
        # Shared by the four tables: one batch at a time is turned into rows and inserted, so the process holds
        # one batch of Python rows, not four (the bench measured 488 MB RSS without it). The work is CPU-bound
        # in one interpreter either way, so little overlap is lost.
        self.converting = converting
        self.owner = owner  # of the table's insert lock: the consumer name, stable across restarts
        self.client: Client | None = None
        self.target: UniqueTarget | None = None
        self.last_read_at = 0.0

    def connect(self) -> tuple[Client, UniqueTarget]:
        if self.client is None or self.target is None:
            client = make_client(self.ch)
            types = describe_columns(client, self.spec.table)
            self.target = UniqueTarget(
                self.spec.table, self.spec.columns, self.spec.unique, owner=self.owner,
                token_source=self.spec.stream, column_types=[types[column] for column in self.spec.columns],
            )  # fmt: skip
            self.client = client
        return self.client, self.target

    async def handle(self, batch: list[Entry]) -> None:
        async with self.converting:
            await self.insert_and_finish(batch)
        await self.pace(len(batch))

    async def insert_and_finish(self, batch: list[Entry]) -> None:
        started = time.perf_counter()
        client, target = await asyncio.to_thread(self.connect)
        ingested_at = datetime.now(UTC)
        rows: list[Row] = []
        row_entries: list[Entry] = []
        dead: list[tuple[Entry, str]] = []
        for entry in batch:
            try:
                rows.append(self.spec.to_row(entry.data, ingested_at))
                row_entries.append(entry)
            except PoisonMessage as exc:
                dead.append((entry, str(exc)))
        outcome = await insert_unique(client, self.service.redis, target, rows, [entry.id for entry in row_entries],
                                      self.ch, stop=self.service.stop)  # fmt: skip
        self.service.count("insert_ms", round((time.perf_counter() - started) * 1000))  # batch start to insert done
        rejected_ids = {row_entries[index].id for index, _ in outcome.rejected}
        dead += [(row_entries[index], f"rejected by clickhouse: {reason}") for index, reason in outcome.rejected]
        # dies here: the rows are in and the entries pending; the replay finds every id stored and inserts nothing.
        # Entries whose id was stored already (or repeated in the batch) are acked with the rest.
        await self.consumer.finish(ack=[entry.id for entry in row_entries if entry.id not in rejected_ids], dead=dead)
        skipped = outcome.stored_before + outcome.batch_duplicates
        self.service.count(f"rows_{self.spec.table}", outcome.inserted)
        self.service.count("rows_written", outcome.inserted)
        self.service.count("duplicates_skipped", skipped)
        self.service.count("dead_lettered", len(dead))
        log.info("batch", table=self.spec.table, rows=outcome.inserted, skipped=skipped, replaced=outcome.replaced,
                 dead=len(dead), duration_s=round(time.perf_counter() - started, 4))  # fmt: skip

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
    backoff = Backoff(base_s=0.5, max_s=15.0)
    while not service.stop.is_set():
        try:
            await asyncio.to_thread(apply_migrations, ch)
            service.healthy()
            return
        except TransientSinkError as exc:
            service.degraded(exc)
            log.warning("clickhouse not ready; retrying", error=str(exc))
            await sleep_unless_stopped(service.stop, backoff.next_delay_s())


async def trim_forever(service: Service, interval_s: float) -> None:
    while not service.stop.is_set():
        for stream in (spec.stream for spec in TABLES):
            try:
                removed = await trim_acked(service.redis, stream, keys.STREAM_GROUPS[stream])
                service.count("trimmed", removed)
            except TransientSinkError as exc:
                log.warning("trim failed", stream=stream, error=str(exc))
        await sleep_unless_stopped(service.stop, interval_s)


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
        writers = [
            TableWriter(service, spec, StreamConsumer(
                service.redis, stream=spec.stream, group=keys.GROUP_CLICKHOUSE_WRITER,
                consumer=settings.clickhouse_writer_consumer, settings=streams, batch_max=clickhouse.batch_size,
            ), clickhouse, converting, settings.clickhouse_writer_consumer)
            for spec in TABLES
        ]  # fmt: skip
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
