"""`verify --against data-api`: taker-side trade counts and volumes per market (and per hour) against Polymarket's
own numbers, the Data API v2 `GET /v2/trades` at DATA_API_URL (a cross-check, never a source).

Here: the `trades` rows of [FROM, TO] with `is_taker_side = 1` (each match once, on its taker order's row), per
market and hour (UTC), read with FINAL. There: `/v2/trades?condition=<≤20 ids>&taker_only=true&filter_type=TOKENS
&filter_amount=0.01&limit=1000`, every page followed by `cursor=<next_cursor>` with the same filters (the API is
cursor-only and newest first: the walk stops at the first row older than FROM), at most 20 requests a second (its
limit on /trades is 200 per 10 s; a 429 is retried after its Retry-After). The API's default `filter_amount` is
0.01 (and 0 may mean the same), so both sides count only trades of at least 0.01 shares; trades without a market
here (`market_id = ''`) cannot be matched to a condition and are counted apart. Compared: the number of trades
exactly, the shares (`size`, here `token_amount`) and the USD volume (`size * price`, here `usd_amount`) within
max(--tolerance-abs, --tolerance × the larger value): the API's sizes and prices are floats. The markets asked for
are those with a taker-side trade here in the range, and `--market` (a market id or condition id) even without
one. Only what differs is printed; `--all` prints every market's total and every hour ("same" or "DIFF").
What the real endpoint does beyond its documentation (whether `start`/`end` work with `condition`, how a
cursor ages, exact rounding) is unverified: docs/chain-watch.md.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgspec
from clickhouse_connect.driver.client import Client

from common import tables
from common.clickhouse import make_client, map_clickhouse_errors
from common.config import HttpSettings, SourceSettings, load
from common.errors import ConfigError
from common.http import RateLimiter, request_json
from common.http import make_client as make_http_client
from pipeline.ops.command import chunks, console, errors, iso, settings

MAX_CONDITIONS = 20  # per call
PAGE = 1_000
REQUESTS_PER_S = 20.0  # the Data API allows 200 requests per 10 s on /trades
MIN_SHARES = 0.01  # the Data API's default filter_amount
HOUR = 3600


@dataclass
class Totals:
    trades: int = 0
    shares: float = 0.0
    usd: float = 0.0

    def add(self, trades: int, shares: float, usd: float) -> None:
        self.trades += trades
        self.shares += shares
        self.usd += usd


Key = tuple[str, int]  # (condition id, hour start)


@dataclass
class Side:
    """One side's taker-side trades per (condition, hour)."""

    by_hour: dict[Key, Totals] = field(default_factory=lambda: defaultdict(Totals))

    def per_market(self) -> dict[str, Totals]:
        markets: dict[str, Totals] = defaultdict(Totals)
        for (condition, _), totals in self.by_hour.items():
            markets[condition].add(totals.trades, totals.shares, totals.usd)
        return markets


@dataclass
class Ours:
    side: Side
    market_of: dict[str, str]  # condition id -> market id
    without_market: int = 0
    below_filter: int = 0


class DataApiTrade(msgspec.Struct):
    """The fields of a `/v2/trades` row the comparison reads (others are ignored)."""

    condition_id: str
    size: float
    price: float
    timestamp: int
    title: str = ""


class TradesPage(msgspec.Struct):
    data: list[DataApiTrade] | None = None
    pagination: dict[str, Any] = {}


_page_decoder = msgspec.json.Decoder(TradesPage)


def read_ours(client: Client, start: int, end: int, market: str | None) -> Ours:
    where = ("timestamp BETWEEN toDateTime({a:UInt32}) AND toDateTime({b:UInt32}) AND is_taker_side = 1"
             + (" AND (market_id = {m:String} OR condition_id = {m:String})" if market else ""))  # fmt: skip
    params = {"a": start, "b": end, "m": market or "", "min": MIN_SHARES}
    with map_clickhouse_errors("read taker-side trades"):
        rows = client.query(
            "SELECT market_id, condition_id, toUInt32(toStartOfHour(timestamp)) AS hour, count(), "
            f"toFloat64(sum(token_amount)), toFloat64(sum(usd_amount)) FROM {tables.TRADES} FINAL "
            f"WHERE {where} AND market_id != '' AND token_amount >= {{min:Float64}} "
            "GROUP BY market_id, condition_id, hour",
            parameters=params,
        ).result_rows
        apart = client.query(
            f"SELECT countIf(market_id = ''), countIf(market_id != '' AND token_amount < {{min:Float64}}) "
            f"FROM {tables.TRADES} FINAL WHERE {where}",
            parameters=params,
        ).result_rows[0]
    side, market_of = Side(), {}
    for market_id, condition, hour, count, shares, usd in rows:
        side.by_hour[(condition.lower(), int(hour))].add(int(count), float(shares), float(usd))
        market_of[condition.lower()] = market_id
    return Ours(side, market_of, int(apart[0]), int(apart[1]))


def named_market(client: Client, market: str) -> tuple[str, str] | None:
    """(market id, condition id) of `--market`, a market id or a condition id, from the `markets` table."""
    with map_clickhouse_errors("read markets"):
        rows = client.query(
            f"SELECT id, condition_id FROM {tables.MARKETS} FINAL "
            "WHERE id = {m:String} OR condition_id = {m:String} LIMIT 1",
            parameters={"m": market},
        ).result_rows
    return (rows[0][0], rows[0][1].lower()) if rows else None


async def read_theirs(
    url: str, http: HttpSettings, conditions: list[str], start: int, end: int
) -> tuple[Side, dict[str, str]]:
    """The Data API's taker-side trades of `conditions` in [start, end], and a title per condition."""
    side, titles = Side(), dict[str, str]()
    limiter = RateLimiter(REQUESTS_PER_S)
    groups = chunks(sorted(conditions), MAX_CONDITIONS)
    async with make_http_client(http) as client:
        for number, group in enumerate(groups, 1):
            filters = {"condition": ",".join(group), "taker_only": "true", "filter_type": "TOKENS",
                       "filter_amount": str(MIN_SHARES)}  # fmt: skip
            params: dict[str, Any] = {**filters, "limit": PAGE}
            pages = rows = 0
            while True:
                page = await request_json(client, "GET", f"{url}/v2/trades", settings=http, what="data-api trades",
                                          limiter=limiter, decode=_page_decoder.decode, params=params)  # fmt: skip
                pages += 1
                for trade in page.data or []:
                    if start <= trade.timestamp <= end:
                        key = (trade.condition_id.lower(), trade.timestamp // HOUR * HOUR)
                        side.by_hour[key].add(1, trade.size, trade.size * trade.price)
                        titles.setdefault(key[0], trade.title)
                        rows += 1
                cursor = page.pagination.get("next_cursor")
                oldest = page.data[-1].timestamp if page.data else None
                if not cursor or not page.pagination.get("has_more", True) or (oldest is not None and oldest < start):
                    break
                params = {**filters, "cursor": cursor}  # the same filters on every page; the cursor holds the size
            errors.print(f"data-api: {number}/{len(groups)} group(s) of conditions, {pages} page(s), {rows:,} "
                         "trade(s) in range", markup=False)  # fmt: skip
    return side, titles


@dataclass(frozen=True)
class Tolerance:
    absolute: float
    relative: float

    def differs(self, ours: Totals, theirs: Totals) -> bool:
        return ours.trades != theirs.trades or any(
            abs(a - b) > max(self.absolute, self.relative * max(abs(a), abs(b)))
            for a, b in ((ours.shares, theirs.shares), (ours.usd, theirs.usd))
        )


@dataclass(frozen=True)
class Comparison:
    condition: str
    hour: int | None  # None: the market's total over the range
    ours: Totals
    theirs: Totals
    differs: bool


def compare(ours: Side, theirs: Side, tolerance: Tolerance) -> list[Comparison]:
    """Per market totals first, then per (market, hour): every pair either side has, and whether it differs
    beyond the tolerance."""
    mine, other = ours.per_market(), theirs.per_market()
    pairs: list[tuple[str, int | None, Totals, Totals]] = [
        (condition, None, mine.get(condition, Totals()), other.get(condition, Totals()))
        for condition in sorted(set(mine) | set(other))
    ]
    pairs += [(key[0], key[1], ours.by_hour.get(key, Totals()), theirs.by_hour.get(key, Totals()))
              for key in sorted(set(ours.by_hour) | set(theirs.by_hour))]  # fmt: skip
    return [Comparison(condition, hour, a, b, tolerance.differs(a, b)) for condition, hour, a, b in pairs]


def describe(row: Comparison, market_of: dict[str, str], titles: dict[str, str]) -> str:
    a, b = row.ours, row.theirs
    where = f"hour {iso(row.hour)}" if row.hour is not None else "total"
    market = market_of.get(row.condition, "?")
    title = f" {titles[row.condition]!r}" if row.hour is None and titles.get(row.condition) else ""
    return (f"  {'DIFF' if row.differs else 'same'} market {market} ({row.condition}) {where}{title}: trades "
            f"{a.trades:,} here / {b.trades:,} at the Data API; shares {a.shares:,.6f} / {b.shares:,.6f}; usd "
            f"{a.usd:,.6f} / {b.usd:,.6f}")  # fmt: skip


async def verify_against_data_api(args: argparse.Namespace) -> int:
    url = load(SourceSettings).data_api_url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"DATA_API_URL: must be an http(s) URL (got {url!r})")
    client = await asyncio.to_thread(make_client, settings()[1])
    try:
        ours = await asyncio.to_thread(read_ours, client, args.start, args.end, args.market)
        named = await asyncio.to_thread(named_market, client, args.market) if args.market else None
    finally:
        client.close()
    if args.market and named is None and not ours.market_of:
        errors.print(f"verify: no market {args.market!r} in the markets table or the trades of the range")
        return 2
    if named is not None:
        ours.market_of.setdefault(named[1], named[0])
    conditions = sorted(ours.market_of)
    theirs, titles = await read_theirs(url, load(HttpSettings), conditions, args.start, args.end)
    tolerance = Tolerance(args.tolerance_abs, args.tolerance)
    rows = compare(ours.side, theirs, tolerance)
    differences = [row for row in rows if row.differs]
    here = sum(t.trades for t in ours.side.by_hour.values())
    there = sum(t.trades for t in theirs.by_hour.values())
    console.print(f"verify data-api [{iso(args.start)}, {iso(args.end)}] at {url}: {len(conditions):,} market(s), "
                  f"{here:,} taker-side trade(s) here, {there:,} at the Data API; counts exact, volumes within "
                  f"max({tolerance.absolute:g}, {tolerance.relative:g} × value)",
                  markup=False, soft_wrap=True)  # fmt: skip
    console.print(f"  not compared: {ours.without_market:,} taker-side trade(s) without a market, "
                  f"{ours.below_filter:,} below the Data API's {MIN_SHARES} shares", markup=False)  # fmt: skip
    for row in rows if args.all else differences:
        console.print(describe(row, ours.market_of, titles), markup=False, soft_wrap=True)
    markets = sum(1 for d in differences if d.hour is None)
    console.print(f"differences: {markets} market(s), {len(differences) - markets} hour(s)", markup=False)
    return 1 if differences else 0
