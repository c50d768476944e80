"""`python -m pipeline dedupe --from T --to T [--yes] [--dry-run]`: remove rows stored twice, without downtime.

For tables filled before the writer kept them unique (common/unique_insert.py), or by hand. Counts, per table,
`count()` and `uniqExact(id)` of the range; for `trades` when it holds duplicates there (`order_filled_events`, a
view over `trades` since migration 007, holds the same rows and loses the same duplicates), runs
`OPTIMIZE TABLE ... PARTITION ID '<YYYYMM>' FINAL` for each month the range overlaps (ReplacingMergeTree then keeps
one row per sort key: both sources' copies of a fill share (token_id, timestamp, id)); for `markets` and `events`
(not partitioned, one row per id kept at its newest `updated_at`), `OPTIMIZE TABLE ... FINAL` when they hold
duplicates anywhere. Then counts again and reports what was removed.
Services keep running meanwhile: a merge only replaces the parts that exist when it starts, and rows written
meanwhile are unique already. A whole month of a large table is rewritten: that takes time and disk (about the
partition's size). Asks first unless `--yes`; `--dry-run` only counts. Needs merges to be running (a table whose
merges were stopped with SYSTEM STOP MERGES cannot be optimized).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from common import tables
from common.clickhouse import make_client, map_clickhouse_errors
from pipeline.ops.command import add_time_range, confirm, console, fail, make_parser, parse_range, run_command, settings


def months(start_ts: int, end_ts: int) -> list[str]:
    """The `toYYYYMM` partition ids that [start, end] overlaps."""
    first, last = datetime.fromtimestamp(start_ts, UTC), datetime.fromtimestamp(end_ts, UTC)
    found, year, month = [], first.year, first.month
    while (year, month) <= (last.year, last.month):
        found.append(f"{year}{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def count_rows(client: Client, table: str, start_ts: int, end_ts: int) -> tuple[int, int]:
    """(count(), uniqExact(id)) of the range for a fill table, of the whole table otherwise."""
    where = ""
    if table in tables.FILL_TABLES:
        where = f" WHERE timestamp BETWEEN toDateTime({start_ts}) AND toDateTime({end_ts})"
    with map_clickhouse_errors(f"count {table}"):
        count, unique = client.query(f"SELECT count(), uniqExact(id) FROM {table}{where}").result_rows[0]
    return int(count), int(unique)


def optimize(client: Client, table: str, start_ts: int, end_ts: int) -> None:
    if table not in tables.FILL_TABLES:
        console.print(f"  {table}: OPTIMIZE TABLE {table} FINAL", markup=False)
        with map_clickhouse_errors(f"optimize {table}"):
            client.command(f"OPTIMIZE TABLE {table} FINAL")
        return
    for partition in months(start_ts, end_ts):
        started = time.monotonic()
        with map_clickhouse_errors(f"optimize {table} partition {partition}"):
            client.command(f"OPTIMIZE TABLE {table} PARTITION ID '{partition}' FINAL")
        console.print(f"  {table}: partition {partition} merged in {time.monotonic() - started:.1f} s", markup=False)


async def dedupe(args: argparse.Namespace) -> int:
    client = await asyncio.to_thread(make_client, settings()[1])
    with contextlib.closing(client):
        before = {t: await asyncio.to_thread(count_rows, client, t, args.start, args.end) for t in
                  (tables.TRADES, *tables.VERSIONED_TABLES)}  # fmt: skip
        to_fix = [table for table, (count, unique) in before.items() if count > unique]
        for table, (count, unique) in before.items():
            console.print(f"dedupe {table}: {count:,} row(s), {unique:,} id(s): {count - unique:,} duplicate(s)",
                          markup=False)  # fmt: skip
        if not to_fix or args.dry_run:
            return 0
        if not confirm(f"Merge away the duplicates of {', '.join(to_fix)}?", yes=args.yes):
            return fail("dedupe: not confirmed; nothing changed")
        for table in to_fix:
            await asyncio.to_thread(optimize, client, table, args.start, args.end)
        left = 0
        for table in to_fix:
            count, unique = await asyncio.to_thread(count_rows, client, table, args.start, args.end)
            removed, left = before[table][0] - count, left + count - unique
            console.print(f"dedupe {table}: removed {removed:,} duplicate row(s); {count:,} row(s), "
                          f"{count - unique:,} duplicate(s) left", markup=False)  # fmt: skip
    return 1 if left else 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("dedupe", __doc__)
    add_time_range(parser)
    parser.add_argument("--yes", action="store_true", help="do not ask")
    parser.add_argument("--dry-run", action="store_true", help="count the duplicates, change nothing")
    args = parse_range(parser, argv)
    return run_command("dedupe", lambda: dedupe(args))
