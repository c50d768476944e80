"""`python -m pipeline verify --from T --to T [--source clickhouse|goldsky|chain] [--bucket-s 3600]`: are all fills
of a range trades, each once?  `verify --against data-api --from T --to T [--market ID] [--all] [--tolerance R]
[--tolerance-abs A]`: do the taker-side trade counts and volumes per market and hour agree with Polymarket's Data API
(pipeline/ops/verify_data_api.py)?

Reads the fill ids of the time range [FROM, TO] at a source and the `trades` rows of that range, and reports:
  missing     fills at the source without a row in `trades` (a gap: `replay` refills those of the kept fills
              table below, a backfill of the range those found at goldsky or chain)
  extra       rows in `trades` that the source does not have (for goldsky/chain: only rows with that `source`,
              since the other source serves fills of its own)
  duplicates  rows of `trades` in the range beyond one per id (count() - uniqExact(id), without FINAL), then
              per bucket of `--bucket-s` seconds each bucket that holds any (`python -m pipeline dedupe` removes
              them; `order_filled_events`, a view over `trades`, holds the same)
Sources: `clickhouse` (default): the fills ClickHouse holds: `order_filled_events` (a view over `trades` since
migration 007, so its ids are trades by construction) and the fills table the upgrade kept
(`order_filled_events_before_view`, where present: a fill stored there before the upgrade whose trade is missing
is reported); `goldsky`: the subgraph at GOLDSKY_URL, paged like the ingester; `chain`: eth_getLogs at
POLYGON_RPC_URL over the blocks whose time is in the range (found by binary search, from CHAIN_START_BLOCK to the
safe head). Uses the ingesters' own request, paging and normalization code. Exit 1 when anything is missing, extra
or duplicated (with `--against`: when any market or hour differs beyond the tolerance).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from common import tables
from common.clickhouse import make_client, map_clickhouse_errors
from common.errors import PoisonMessage
from common.http import RateLimiter
from common.http import make_client as make_http_client
from common.payloads import decode_order_event
from ingesters import chain_ingester, goldsky_ingester
from ingesters.chain_logs import blocks_needing_timestamps, get_logs_filter, normalize_logs
from ingesters.goldsky_pages import build_request, is_second_complete, normalize_fill, plan_page, start_cursor
from ingesters.json_rpc import RangeTooLarge, SpanSizer
from pipeline.ops.command import (
    add_time_range,
    console,
    fail,
    has_kept_fills,
    iso,
    make_parser,
    parse_range,
    run_command,
    settings,
)
from pipeline.ops.verify_data_api import verify_against_data_api

SHOW = 20


@dataclass(frozen=True)
class SourceFills:
    ids: set[str]
    malformed: int = 0


def clickhouse_fills(client: Client, start_ts: int, end_ts: int) -> SourceFills:
    ids: set[str] = set()
    kept = [tables.FILLS_BEFORE_VIEW] if has_kept_fills(client) else []
    for table in (tables.ORDER_FILLED_EVENTS, *kept):
        with map_clickhouse_errors("read fills"):
            rows = client.query(
                f"SELECT DISTINCT id FROM {table} "
                "WHERE timestamp BETWEEN toDateTime({a:UInt32}) AND toDateTime({b:UInt32})",
                parameters={"a": start_ts, "b": end_ts},
            ).result_rows
        ids.update(row[0] for row in rows)
    return SourceFills(ids)


def trades_in_range(client: Client, start_ts: int, end_ts: int, source: str | None) -> tuple[set[str], int]:
    """Ids of `trades` in the range (only `source`'s when given), and the rows beyond one per id."""
    where = "timestamp BETWEEN toDateTime({a:UInt32}) AND toDateTime({b:UInt32})"
    params = {"a": start_ts, "b": end_ts}
    by_source = " AND source = {s:String}" if source else ""
    with map_clickhouse_errors("read trades"):
        sql = f"SELECT count() - uniqExact(id) FROM {tables.TRADES} WHERE {where}"
        duplicates = client.query(sql, parameters=params)
        rows = client.query(f"SELECT DISTINCT id FROM {tables.TRADES} WHERE {where}{by_source}",
                            parameters={**params, "s": source or ""}).result_rows  # fmt: skip
    return {row[0] for row in rows}, int(duplicates.result_rows[0][0])


def duplicates_by_bucket(
    client: Client, table: str, start_ts: int, end_ts: int, bucket_s: int
) -> list[tuple[int, int]]:
    """(bucket start, rows beyond one per id) of each bucket of [start, end] that holds duplicates, in time order."""
    with map_clickhouse_errors(f"count duplicates in {table}"):
        rows = client.query(
            "SELECT toUInt32(toStartOfInterval(timestamp, toIntervalSecond({s:UInt32}))) AS bucket, "
            f"count() - uniqExact(id) AS extra FROM {table} "
            "WHERE timestamp BETWEEN toDateTime({a:UInt32}) AND toDateTime({b:UInt32}) "
            "GROUP BY bucket HAVING extra > 0 ORDER BY bucket",
            parameters={"a": start_ts, "b": end_ts, "s": bucket_s},
        ).result_rows
    return [(int(bucket), int(extra)) for bucket, extra in rows]


def report_duplicates(client: Client, start_ts: int, end_ts: int, bucket_s: int) -> int:
    """Print the buckets of `trades` with duplicates; returns how many rows are duplicates in all."""
    table = tables.TRADES
    buckets = duplicates_by_bucket(client, table, start_ts, end_ts, bucket_s)
    for bucket, extra in buckets[:SHOW]:
        console.print(f"    {table:<20} {iso(bucket)}  {extra:>9,} duplicate row(s)", markup=False)
    if len(buckets) > SHOW:
        console.print(f"    {table:<20} … {len(buckets) - SHOW} more bucket(s)", markup=False)
    return sum(extra for _, extra in buckets)


async def goldsky_fills(start_ts: int, end_ts: int) -> SourceFills:
    """Every fill the subgraph has in [start, end], paged exactly as the ingester pages (sticky on bursts)."""
    config = goldsky_ingester.load_config()
    size = config.goldsky.page_size
    ids: set[str] = set()
    malformed = 0
    async with make_http_client(config.http) as http:
        subgraph = goldsky_ingester.Subgraph(http, RateLimiter(config.goldsky.rate_limit_per_s), config)
        cursor, known_complete = start_cursor(start_ts), None
        while True:
            complete = is_second_complete(cursor, start_ts, known_complete)
            rows = await subgraph.fetch_page(build_request(cursor, second_complete=complete, last_ts=end_ts,
                                                           page_size=size))  # fmt: skip
            page = plan_page(rows, cursor=cursor, second_complete=complete, page_size=size)
            for raw in page.rows:
                try:
                    event = normalize_fill(raw)
                except PoisonMessage:
                    malformed += 1
                    continue
                if start_ts <= event.timestamp <= end_ts:
                    ids.add(event.id)
            known_complete = page.cursor if page.second_complete else None
            if page.exhausted:
                return SourceFills(ids, malformed)
            cursor = page.cursor


async def first_block_at_or_after(node: chain_ingester.Node, ts: int, low: int, high: int) -> int:
    """The first block in [low, high] whose time is >= ts (high + 1 when none): block times never decrease."""
    while low <= high:
        middle = (low + high) // 2
        if (await node.block_timestamps({middle}))[middle] >= ts:
            high = middle - 1
        else:
            low = middle + 1
    return low


async def chain_fills(start_ts: int, end_ts: int) -> SourceFills:
    """Every OrderFilled log of the exchanges in the blocks of [start, end], up to the safe head."""
    config = chain_ingester.load_config()
    ids: set[str] = set()
    malformed = 0
    async with make_http_client(config.http) as http:
        node = chain_ingester.make_node(http, config)
        _, safe = await node.heads()
        first = await first_block_at_or_after(node, start_ts, config.chain.start_block, safe)
        last = await first_block_at_or_after(node, end_ts + 1, first, safe) - 1
        sizer = SpanSizer(config.chain.initial_span_blocks, config.chain.max_span_blocks)
        block = first
        while block <= last:
            to_block = min(last, block + sizer.span - 1)
            try:
                logs = await node.call("eth_getLogs", [get_logs_filter(block, to_block)])
            except RangeTooLarge as exc:
                sizer.too_large(exc.error, block, to_block - block + 1)
                continue
            sizer.succeeded()
            entries, dead = normalize_logs(logs, await node.block_timestamps(blocks_needing_timestamps(logs)))
            ids.update(decode_order_event(entry).id for entry in entries)
            malformed += len(dead)
            block = to_block + 1
    return SourceFills(ids, malformed)


def report(label: str, ids: set[str]) -> None:
    shown = ", ".join(sorted(ids)[:SHOW]) + (" …" if len(ids) > SHOW else "")
    console.print(f"  {label:<11} {len(ids):>9,}" + (f"  {shown}" if ids else ""), markup=False, soft_wrap=True)


async def verify(args: argparse.Namespace) -> int:
    ch = settings()[1]
    client = await asyncio.to_thread(make_client, ch)
    try:
        fetch: dict[str, Callable[[], Awaitable[SourceFills]]] = {
            "clickhouse": lambda: asyncio.to_thread(clickhouse_fills, client, args.start, args.end),
            "goldsky": lambda: goldsky_fills(args.start, args.end),
            "chain": lambda: chain_fills(args.start, args.end),
        }
        source = await fetch[args.source]()
        only = None if args.source == "clickhouse" else args.source
        trades, duplicates = await asyncio.to_thread(trades_in_range, client, args.start, args.end, only)
        every_trade = trades if only is None else (await asyncio.to_thread(trades_in_range, client, args.start,
                                                                           args.end, None))[0]  # fmt: skip
        missing, extra = source.ids - every_trade, trades - source.ids
        console.print(f"verify {args.source} [{args.start}, {args.end}]: {len(source.ids):,} fill(s) at the source, "
                      f"{len(every_trade):,} trade id(s)", markup=False)  # fmt: skip
        report("missing", missing)
        report("extra", extra)
        console.print(f"  {'duplicates':<11} {duplicates:>9,}", markup=False)
        duplicated = await asyncio.to_thread(report_duplicates, client, args.start, args.end, args.bucket_s)
    finally:
        client.close()
    if source.malformed:
        console.print(f"  {'malformed':<11} {source.malformed:>9,}  (at the source; dead-lettered by the ingester)")
    return 1 if missing or extra or duplicates or duplicated else 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("verify", __doc__)
    add_time_range(parser)
    parser.add_argument("--source", choices=("clickhouse", "goldsky", "chain"), default="clickhouse")
    parser.add_argument("--bucket-s", type=int, default=3600, help="duplicates per bucket of this many seconds")
    parser.add_argument("--against", choices=("data-api",), help="compare taker-side volume per market and hour "
                        "with Polymarket's Data API (DATA_API_URL) instead")  # fmt: skip
    parser.add_argument("--market", help="with --against: only this market (its id or condition id)")
    parser.add_argument("--all", action="store_true", help="with --against: print every market and hour, not only "
                        "those that differ")  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=1e-6, help="with --against: relative, for volumes")
    parser.add_argument("--tolerance-abs", type=float, default=0.01, help="with --against: absolute, shares or USD")
    args = parse_range(parser, argv)
    if args.bucket_s < 1:
        return fail("verify: --bucket-s must be at least 1", 2)
    if args.tolerance < 0 or args.tolerance_abs < 0:
        return fail("verify: --tolerance and --tolerance-abs must not be negative", 2)
    if (args.market or args.all) and not args.against:
        return fail("verify: --market and --all go with --against data-api", 2)
    if args.against:
        return run_command("verify", lambda: verify_against_data_api(args))
    return run_command("verify", lambda: verify(args))
