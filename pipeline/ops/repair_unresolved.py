"""`python -m pipeline replay --unresolved [--from T --to T]`: give stored trades without a market the market now known.

A deployment that ran before the pipeline asked Gamma for both versions stored the trades of every Protocol V2
market with `market_id = ''`, and any run stores the trades of a market listed only after the wait so. Once the
market is known (the token map `markets:by_token` in Redis, else the `markets` table: its `clob_token_ids`, or its
`position_ids` for a "v2" market), each such trade gets its `market_id`, `condition_id`, `outcome` and
`outcome_index` (`question` is not a column of `trades`).

How: one `ALTER TABLE trades UPDATE ... WHERE market_id = '' AND token_id IN (...)` mutation per
TOKENS_PER_MUTATION tokens, the values given as `transform(token_id, [tokens], [values], old)` literals, run with
`mutations_sync = 2` (it returns once applied). A mutation rewrites, in the parts holding matching rows, only the four
columns it sets (the others are hard-linked): no row is added or removed, so `count()` is unchanged, and no second
copy of the table is ever made. It is idempotent: a second run finds nothing with `market_id = ''` it can resolve.
Why not re-insert corrected rows: the table's id check (`common.unique_insert`) would refuse them as stored, and
deleting first would make a window where the trades are missing. Why literals, not a Join table with `joinGet`:
the mutation then depends on nothing else; a mutation naming a table dropped by an interrupted run would fail
forever and hold the mutations queued behind it. Cost: bench/repair_unresolved.py (docs/upstream-gamma.md).
`--dry-run` only counts.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis
from clickhouse_connect.driver.binding import format_query_value
from clickhouse_connect.driver.client import Client

from common import keys, tables
from common.clickhouse import make_client, map_clickhouse_errors
from common.gamma_fields import outcome_refs
from common.payloads import MarketRef, decode_market_ref
from common.redis_client import make_redis, map_redis_errors
from pipeline.ops.command import chunks, console, settings

TOKENS_PER_MUTATION = 2_000  # ~0.8 MB of literals a mutation: parsed once per part it touches
MUTATION_SETTINGS = {"max_query_size": 8 * 2**20}  # the literals exceed the default 256 KiB
LOOKUP_BATCH = 5_000
LAST_TIMESTAMP = 2**32 - 1  # DateTime's last second: the default --to


def unresolved_tokens(client: Client, start: int, end: int) -> dict[str, int]:
    """Token id -> how many trades in [start, end] carry it with `market_id = ''`."""
    with map_clickhouse_errors("read unresolved trades"):
        rows = client.query(
            f"SELECT token_id, count() FROM {tables.TRADES} WHERE market_id = '' "
            "AND timestamp BETWEEN toDateTime({a:UInt32}) AND toDateTime({b:UInt32}) GROUP BY token_id",
            parameters={"a": start, "b": end},
        ).result_rows
    return {token: int(n) for token, n in rows}


async def markets_in_redis(redis: aioredis.Redis, tokens: Sequence[str]) -> dict[str, MarketRef]:
    found: dict[str, MarketRef] = {}
    for batch in chunks(list(tokens), LOOKUP_BATCH):
        async with map_redis_errors("read markets:by_token"):
            values = await redis.hmget(keys.MARKETS_BY_TOKEN, list(batch))
        found.update((token, decode_market_ref(v)) for token, v in zip(batch, values, strict=True) if v is not None)
    return found


def markets_in_clickhouse(client: Client, tokens: Sequence[str]) -> dict[str, MarketRef]:
    """The stored markets owning `tokens`, by the ids their version names (the newest row of each market)."""
    wanted, found = set(tokens), {}
    for batch in chunks(list(tokens), LOOKUP_BATCH):
        with map_clickhouse_errors("read markets"):
            rows = client.query(
                "SELECT id, condition_id, question, outcomes, if(version = 'v2', position_ids, clob_token_ids) "
                f"FROM {tables.MARKETS} FINAL WHERE hasAny(clob_token_ids, {{t:Array(String)}}) "
                "OR hasAny(position_ids, {t:Array(String)})",
                parameters={"t": list(batch)},
            ).result_rows
        for market_id, condition_id, question, outcomes, ids in rows:
            refs = outcome_refs(market_id, condition_id, question, outcomes, ids)
            found.update((token, ref) for token, ref in refs.items() if token in wanted)
    return found


def mutation(refs: dict[str, MarketRef], start: int, end: int) -> str:
    """The UPDATE giving the trades of `refs`' tokens in [start, end] their market (literal values, see above)."""
    tokens = format_query_value(list(refs))

    def assign(column: str, values: Iterable[object], array_type: str = "Array(String)") -> str:
        literal = format_query_value(list(values))
        return f"{column} = transform(token_id, {tokens}, CAST({literal}, '{array_type}'), {column})"

    assignments = (
        assign("market_id", (r.market_id for r in refs.values())),
        assign("condition_id", (r.condition_id for r in refs.values())),
        assign("outcome", (r.outcome for r in refs.values())),
        assign("outcome_index", (r.outcome_index for r in refs.values()), "Array(Int16)"),
    )
    return (
        f"ALTER TABLE {tables.TRADES} UPDATE {', '.join(assignments)} WHERE market_id = '' "
        f"AND token_id IN {format_query_value(tuple(refs))} "
        f"AND timestamp BETWEEN toDateTime({int(start)}) AND toDateTime({int(end)}) SETTINGS mutations_sync = 2"
    )


def count_trades(client: Client, start: int, end: int) -> tuple[int, int]:
    """(count() of trades, of those in [start, end] without a market)."""
    with map_clickhouse_errors("count trades"):
        total = int(client.command(f"SELECT count() FROM {tables.TRADES}"))
        unresolved = int(client.command(
            f"SELECT count() FROM {tables.TRADES} WHERE market_id = '' "
            "AND timestamp BETWEEN toDateTime({a:UInt32}) AND toDateTime({b:UInt32})",
            parameters={"a": start, "b": end},
        ))  # fmt: skip
    return total, unresolved


async def repair(args: argparse.Namespace) -> int:
    start = args.start if args.start is not None else 0
    end = args.end if args.end is not None else LAST_TIMESTAMP
    redis_settings, ch = settings()
    client = await asyncio.to_thread(make_client, ch)
    redis = make_redis(redis_settings)
    started = time.monotonic()
    try:
        tokens = await asyncio.to_thread(unresolved_tokens, client, start, end)
        refs = await markets_in_redis(redis, sorted(tokens))
        refs |= await asyncio.to_thread(markets_in_clickhouse, client, sorted(set(tokens) - set(refs)))
        rows = sum(tokens[token] for token in refs)
        console.print(f"replay --unresolved: {sum(tokens.values()):,} trade(s) without a market over {len(tokens):,} "
                      f"token(s); {len(refs):,} token(s) now have a market: {rows:,} trade(s) to repair",
                      markup=False)  # fmt: skip
        if args.dry_run or not refs:
            return 0
        total_before, unresolved_before = await asyncio.to_thread(count_trades, client, start, end)
        batches = chunks(sorted(refs), TOKENS_PER_MUTATION)
        for number, batch in enumerate(batches, 1):
            sql = mutation({token: refs[token] for token in batch}, start, end)
            with map_clickhouse_errors("repair mutation"):
                await asyncio.to_thread(client.command, sql, settings=MUTATION_SETTINGS)
            console.print(f"  mutation {number}/{len(batches)}: {len(batch):,} token(s) done", markup=False)
        total_after, unresolved_after = await asyncio.to_thread(count_trades, client, start, end)
    finally:
        await redis.aclose()
        client.close()
    console.print(f"replay --unresolved: {unresolved_before - unresolved_after:,} trade(s) got their market; "
                  f"{unresolved_after:,} still without one; count() {total_before:,} -> {total_after:,}; "
                  f"in {time.monotonic() - started:.1f} s", markup=False)  # fmt: skip
    return 0 if total_after == total_before else 1
