"""`python -m pipeline replay --from T --to T`: re-derive the trades of a time range that are missing from ClickHouse.

Fills come from the fills table the upgrade to migration 007 kept, `order_filled_events_before_view`, where present
(`--source clickhouse`, default: `order_filled_events` itself is a view over `trades` since then, so it holds no
fill without a trade; a gap in newer history is refilled from the sources, by a backfill of the range) or from what is
left of `stream:order_events` (`--source stream`; the writer trims acked entries, so this is recent history only). Each
fill whose id is not in `trades` for that range goes through the trade processor's own derivation
(`processors.trades.derive_trade`, markets from `markets:by_token`) and the writer's own row conversion, and is
inserted in batches of consecutive timestamps through the writer's own `common.unique_insert.insert_unique`: under
the `trades` insert lock, only ids `trades` does not hold yet, checked over each batch's (narrow) time ranges.

Idempotent: replaying a complete range inserts nothing and leaves `count()` of `trades` unchanged, and so does a
second run, or a retry after a lost reply. A crashed replay can leave `lock:insert:trades` held until it expires
(CLICKHOUSE_SEND_RECEIVE_TIMEOUT_S + 30 s), and the writer's trades wait that long. It refuses to run while trades
are in flight (the processor or the writer has lag or pending entries): those trades are on their way, and the
lock would only make the two take turns (`--force` to run anyway). `--dry-run` only counts.

`--unresolved [--from T --to T]` repairs instead: the stored trades without a market whose market is now known get
it, in place (`pipeline/ops/repair_unresolved.py`); without a range, every stored trade.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from clickhouse_connect.driver.client import Client

from common import keys, tables
from common.clickhouse import describe_columns, make_client, map_clickhouse_errors
from common.config import ClickHouseSettings
from common.errors import PoisonMessage
from common.pages import decode_page
from common.payloads import MarketRef, OrderEvent, decode_market_ref, decode_order_event, decode_order_events
from common.redis_client import make_redis, map_redis_errors
from common.status.snapshot import read_streams
from common.unique_insert import UniqueTarget, insert_unique
from pipeline.ops import repair_unresolved
from pipeline.ops.command import (
    add_time_range,
    chunks,
    console,
    fail,
    has_kept_fills,
    make_parser,
    parse_range,
    run_command,
    settings,
)
from processors.rows import IMMUTABLE, TRADE_COLUMNS, check_trade, trade_columns
from processors.trades import derive_trade, token_of

FILL_COLUMNS = tuple(OrderEvent.__struct_fields__)
BATCH_ROWS = 10_000
STREAM_READ_ENTRIES = 100  # pages of up to STREAM_PAGE_MAX_ITEMS fills
REPLAY_SOURCE = "replay:trades"  # the tokens' namespace: trade ids, where the writer's tokens hold stream ids
IN_FLIGHT = ((keys.STREAM_ORDER_EVENTS, keys.GROUP_TRADE_PROCESSOR), (keys.STREAM_TRADES, keys.GROUP_CLICKHOUSE_WRITER))


def fills_from_rows(rows: Sequence[Sequence[Any]]) -> list[OrderEvent]:
    events = []
    for row in rows:
        values = dict(zip(FILL_COLUMNS, row, strict=True))
        values["timestamp"] = int(values["timestamp"].timestamp())
        events.append(OrderEvent(**values))
    return events


def missing_fills_in_clickhouse(client: Client, start_ts: int, end_ts: int) -> list[OrderEvent]:
    """Fills of the kept fills table in [start, end] whose id is not in `trades` (each id once); none without it."""
    if not has_kept_fills(client):
        return []
    with map_clickhouse_errors("read missing fills"):
        rows = client.query(
            f"SELECT {', '.join(FILL_COLUMNS)} FROM {tables.FILLS_BEFORE_VIEW} "
            "WHERE timestamp BETWEEN toDateTime({a:UInt32}) AND toDateTime({b:UInt32}) AND id NOT IN "
            f"(SELECT id FROM {tables.TRADES} "
            "WHERE timestamp BETWEEN toDateTime({a:UInt32}) AND toDateTime({b:UInt32})) "
            "ORDER BY id LIMIT 1 BY id",
            parameters={"a": start_ts, "b": end_ts},
        ).result_rows
    return fills_from_rows(rows)


def ids_in_trades(client: Client, ids: Sequence[str]) -> set[str]:
    present: set[str] = set()
    for batch in chunks(list(ids), BATCH_ROWS):
        with map_clickhouse_errors("read trade ids"):
            rows = client.query(f"SELECT DISTINCT id FROM {tables.TRADES} WHERE id IN {{ids:Array(String)}}",
                                parameters={"ids": list(batch)}).result_rows  # fmt: skip
        present.update(row[0] for row in rows)
    return present


async def fills_in_stream(redis: aioredis.Redis, start_ts: int, end_ts: int) -> list[OrderEvent]:
    """Decodable fills left in `stream:order_events` with a timestamp in [start, end] (each id once)."""
    found: dict[str, OrderEvent] = {}
    after = "-"
    while True:
        entries = await redis.xrange(keys.STREAM_ORDER_EVENTS, min=after, count=STREAM_READ_ENTRIES)
        for _, fields in entries:
            for event in decode_page(fields.get(b"data", b""), decode_order_events, decode_order_event).values:
                if start_ts <= event.timestamp <= end_ts:
                    found.setdefault(event.id, event)
        if len(entries) < STREAM_READ_ENTRIES:
            return sorted(found.values(), key=lambda e: e.id)
        after = "(" + entries[-1][0].decode()


async def markets_for(redis: aioredis.Redis, fills: list[OrderEvent]) -> dict[str, MarketRef]:
    tokens = sorted({token_of(event) for event in fills})
    markets: dict[str, MarketRef] = {}
    for batch in chunks(tokens, 5000):
        for token, ref in zip(batch, await redis.hmget(keys.MARKETS_BY_TOKEN, list(batch)), strict=True):
            if ref is not None:
                markets[token] = decode_market_ref(ref)
    return markets


async def insert_trades(
    client: Client, redis: aioredis.Redis, ch: ClickHouseSettings, fills: list[OrderEvent],
    markets: dict[str, MarketRef],
) -> tuple[int, int]:  # fmt: skip
    """Insert the trades of `fills` that `trades` lacks, in batches sorted by time; returns (inserted, rejected).

    Sorted by timestamp, so each batch's check reads only a few seconds of `trades`. A batch's dedup token is
    derived from its trade ids alone (not from the time of the run).
    """
    types = await asyncio.to_thread(describe_columns, client, tables.TRADES)
    owner = f"replay@{socket.gethostname()}:{os.getpid()}"
    column_types = [types[column] for column in TRADE_COLUMNS]
    target = UniqueTarget(tables.TRADES, TRADE_COLUMNS, IMMUTABLE, owner, REPLAY_SOURCE, column_types)
    ingested_at = datetime.now(UTC)
    ordered = sorted(fills, key=lambda e: (e.timestamp, e.id))
    inserted = rejected = 0
    for start in range(0, len(ordered), BATCH_ROWS):
        batch = ordered[start : start + BATCH_ROWS]
        trades, kept, refused = [], [], []
        for event in batch:
            try:
                trades.append(check_trade(derive_trade(event, markets.get(token_of(event)))))
            except PoisonMessage as exc:
                refused.append((event, str(exc)))
                continue
            kept.append(event)
        outcome = await insert_unique(client, redis, target, trade_columns(trades, ingested_at), [e.id for e in kept],
                                      ch)  # fmt: skip
        refused += [(kept[index], reason) for index, reason in outcome.rejected]
        for event, reason in refused:
            console.print(f"rejected {event.id}: {reason}", markup=False)
        inserted, rejected = inserted + outcome.inserted, rejected + len(refused)
    return inserted, rejected


async def trades_in_flight(redis: aioredis.Redis) -> list[str]:
    busy = []
    for stream in await read_streams(redis):
        for group in stream.groups:
            # lag None: not known (Redis 6.2 reports none), so maybe not delivered yet
            if (stream.name, group.name) in IN_FLIGHT and (group.lag is None or group.lag + group.pending > 0):
                busy.append(f"{stream.name}/{group.name}: lag {group.lag}, pending {group.pending}")
    return busy


async def find_missing(client: Client, redis: aioredis.Redis, args: argparse.Namespace) -> list[OrderEvent]:
    if args.source == "clickhouse":
        return await asyncio.to_thread(missing_fills_in_clickhouse, client, args.start, args.end)
    candidates = await fills_in_stream(redis, args.start, args.end)
    present = await asyncio.to_thread(ids_in_trades, client, [e.id for e in candidates])
    return [event for event in candidates if event.id not in present]


async def replay(args: argparse.Namespace) -> int:
    redis_settings, ch = settings()
    client = await asyncio.to_thread(make_client, ch)
    redis = make_redis(redis_settings)
    started = time.monotonic()
    try:
        async with map_redis_errors("replay"):
            busy = await trades_in_flight(redis)
            if busy and not args.force and not args.dry_run:
                return fail("replay: trades are in flight (" + "; ".join(busy) + "); wait or use --force")
            missing = await find_missing(client, redis, args)
            markets = await markets_for(redis, missing)
        console.print(f"replay: {len(missing):,} fill(s) in range without a trade; "
                      f"{len(markets):,} market(s) known", markup=False)  # fmt: skip
        if args.dry_run or not missing:
            return 0
        async with map_redis_errors("replay insert"):
            inserted, rejected = await insert_trades(client, redis, ch, missing, markets)
    finally:
        await redis.aclose()
        client.close()
    console.print(f"replay: inserted {inserted:,} trade(s), {rejected} rejected, "
                  f"in {time.monotonic() - started:.1f} s", markup=False)  # fmt: skip
    return 0 if not rejected else 1


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("replay", __doc__)
    add_time_range(parser, required=False)
    parser.add_argument("--source", choices=("clickhouse", "stream"), default="clickhouse")
    parser.add_argument("--dry-run", action="store_true", help="count what is missing, insert nothing")
    parser.add_argument("--force", action="store_true", help="run even while trades are in flight")
    parser.add_argument("--unresolved", action="store_true",
                        help="give stored trades without a market the market now known (range optional)")  # fmt: skip
    args = parse_range(parser, argv)
    if args.unresolved:
        return run_command("replay", lambda: repair_unresolved.repair(args))
    if args.start is None or args.end is None:
        parser.error("--from and --to are required (optional only with --unresolved)")
    return run_command("replay", lambda: replay(args))
