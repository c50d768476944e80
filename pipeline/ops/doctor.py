"""`python -m pipeline doctor`: probe the configured sources before trusting a live setup; exit 1 on a failing check.

One line per check, with its verdict (ok, warn, FAIL) and why:
  gamma      GAMMA_API_URL: `/markets/keyset` answers (a full sync needs it: offset listings stop at 2000), and the
             share of `version: "v2"` markets on its first `--pages` pages (their fills carry position ids)
  goldsky    GOLDSKY_URL: reachable, and the time of its newest fill (frozen since the 2026-04-28 cutover, as
             expected: live fills come from the chain)
  finality   POLYGON_RPC_URL: the `finalized` tag, and how far it lags behind head (blocks and seconds)
  getLogs    the largest eth_getLogs span the provider accepts, halving from 10,000 blocks
  <exchange> for each exchange of `common.exchanges`: its OrderFilled logs in the last `--blocks` blocks below the
             safe head (the v1 exchanges retired at the cutover, so none is expected there)
  cursors    the cursors stored in Redis (REDIS_*) against the sources: `state:chain_last_block` past the node's head
             by more than CHAIN_CURSOR_AHEAD_TOLERANCE_BLOCKS, or `state:goldsky_last_timestamp` past the subgraph's
             newest fill by more than GOLDSKY_CURSOR_AHEAD_TOLERANCE_S, fails: the ingester would wait for a source
             that may never catch up (ingesters/cursor_ahead.py); Redis unreachable is a warning
The RPC URL usually embeds an API key: it is shown masked. Requests use the HTTP_* timeouts, capped at
`--timeout-s`, and at most two attempts each. `--json` prints the checks as one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from rich.text import Text

from common import keys
from common.config import HttpSettings, RedisSettings, SourceSettings, load
from common.errors import SinkError, SourceError
from common.exchanges import EXCHANGES
from common.http import RateLimiter, make_client, request_json
from common.redis_client import make_redis
from common.streams import read_cursor
from ingesters import chain_ingester, goldsky_ingester
from ingesters.chain_logs import ChainLog, RangeTooLarge, get_logs_filter, hex_quantity
from ingesters.cursor_ahead import chain_cursor_ahead, goldsky_cursor_ahead
from pipeline.ops.common import console, iso, make_parser, run_command

Verdict = Literal["ok", "warn", "fail"]
CUTOVER_TS = 1_777_334_400  # 2026-04-28T00:00:00Z: the v1 exchanges stopped, and the public subgraph with them
FIRST_SPAN_BLOCKS = 10_000
FINALITY_WARN_S = 60.0  # Polygon finalizes in 2-5 s (reference §7.3); minutes mean a stall
FINALITY_FAIL_S = 600.0
STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@dataclass
class Check:
    name: str
    verdict: Verdict
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


def mask_url(url: str) -> str:
    """Scheme, host and port only: keys live in paths, queries and user info."""
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return f"{parts.scheme}://{host}/***" if parts.path.strip("/") or parts.query else f"{parts.scheme}://{host}"


def failed(name: str, exc: SourceError, why: str = "") -> Check:
    return Check(name, "fail", f"{exc}{f': {why}' if why else ''}")


# --- gamma and goldsky ---------------------------------------------------------------------------------------


async def check_gamma(client: httpx.AsyncClient, http: HttpSettings, url: str, pages: int) -> Check:
    markets: list[Any] = []
    params: dict[str, Any] = {"limit": 100, "closed": "false"}
    try:
        for _ in range(pages):
            body = await request_json(client, "GET", f"{url}/markets/keyset", settings=http, what="gamma keyset",
                                      params=params)  # fmt: skip
            if not isinstance(body, dict) or not isinstance(body.get("markets"), list):
                return Check("gamma", "fail", "gamma /markets/keyset: the reply has no 'markets' list")
            markets += body["markets"]
            if not body.get("next_cursor"):
                break
            params["after_cursor"] = body["next_cursor"]
    except SourceError as exc:
        return failed("gamma", exc, "keyset listing unavailable; a full sync cannot go past offset 2000 without it")
    v2 = sum(1 for m in markets if isinstance(m, dict) and m.get("version") == "v2")
    share = v2 / len(markets) if markets else 0.0
    detail = f"keyset reachable; {len(markets):,} open markets on the first pages, {share:.0%} version v2"
    return Check("gamma", "ok" if markets else "warn", detail, {"markets": len(markets), "v2_share": round(share, 4)})


async def check_goldsky(client: httpx.AsyncClient, config: goldsky_ingester.GoldskyConfig) -> Check:
    subgraph = goldsky_ingester.Subgraph(client, RateLimiter(config.goldsky.rate_limit_per_s), config)
    try:
        newest = await subgraph.newest_fill_timestamp()
    except SourceError as exc:
        return failed("goldsky", exc)
    if newest is None:
        return Check("goldsky", "warn", "reachable, but it has no fills", {"newest_fill_at": None})
    if newest < CUTOVER_TS + 86_400:
        detail = f"reachable; newest fill {iso(newest)}: stale since the 2026-04-28 cutover, as expected (history only)"
    else:
        detail = f"reachable; newest fill {iso(newest)} ({time.time() - newest:,.0f} s ago)"
    return Check("goldsky", "ok", detail, {"newest_fill_at": newest})


# --- polygon rpc ---------------------------------------------------------------------------------------------


async def check_finality(node: chain_ingester.Node) -> tuple[Check, int]:
    """The finality check, and the block below which logs are probed (finalized, else head)."""
    head = hex_quantity(await node.call("eth_blockNumber", []), "eth_blockNumber")
    try:
        block = await node.call("eth_getBlockByNumber", ["finalized", False])
        finalized = hex_quantity(block.get("number") if isinstance(block, dict) else None, "finalized number")
    except SourceError as exc:
        why = "set CHAIN_USE_FINALIZED=false to read up to head minus CHAIN_CONFIRMATIONS"
        return failed("finality", exc, f"the node has no finalized tag; {why}"), head
    times = await node.block_timestamps({head, finalized})
    lag_blocks, lag_s = head - finalized, float(times[head] - times[finalized])
    verdict: Verdict = "fail" if lag_s > FINALITY_FAIL_S else "warn" if lag_s > FINALITY_WARN_S else "ok"
    detail = f"finalized {finalized:,} is {lag_blocks:,} blocks ({lag_s:,.0f} s) behind head {head:,}"
    if verdict != "ok":
        detail += ": finality is stalling (Polygon finalizes in 2-5 s)"
    return Check("finality", verdict, detail, {"head": head, "finalized": finalized, "lag_s": lag_s}), finalized


async def largest_span(node: chain_ingester.Node, top: int) -> tuple[int, str]:
    """The largest span, halving from FIRST_SPAN_BLOCKS, that eth_getLogs answers below `top` (0: none); and the
    provider's refusal of the next larger one."""
    span, refusal = FIRST_SPAN_BLOCKS, ""
    while span >= 1:
        try:
            await node.call("eth_getLogs", [get_logs_filter(max(0, top - span + 1), top)])
            return span, refusal
        except RangeTooLarge as exc:
            refusal = f"{span:,} refused: {exc.error.get('message')}"
            span //= 2
    return 0, refusal


async def check_span(node: chain_ingester.Node, top: int) -> tuple[Check, int]:
    span, refusal = await largest_span(node, top)
    if span == 0:
        return Check("getLogs", "fail", f"eth_getLogs refuses even one block ({refusal})"), 1
    detail = f"eth_getLogs accepts {span:,} blocks" + (f" ({refusal})" if refusal else "")
    verdict: Verdict = "warn" if span < 100 else "ok"  # a crawl: 100 blocks is ~3 minutes of chain per call
    return Check("getLogs", verdict, detail, {"largest_span_blocks": span}), span


async def count_logs(node: chain_ingester.Node, first: int, last: int, span: int) -> Counter[str]:
    """OrderFilled logs per exchange address in [first, last], `span` blocks per call (halved when refused)."""
    counts: Counter[str] = Counter()
    block = first
    while block <= last:
        to_block = min(last, block + span - 1)
        try:
            logs = await node.call("eth_getLogs", [get_logs_filter(block, to_block)])
        except RangeTooLarge:
            span = max(1, span // 2)  # dense blocks fail by result count, not span
            continue
        counts.update(map(log_address, logs))
        block = to_block + 1
    return counts


def log_address(raw: Any) -> str:
    """The emitting contract of an eth_getLogs item: typed (`ChainLog`) when the reply is all standard logs,
    plain JSON otherwise ("" when it has none)."""
    if isinstance(raw, ChainLog):
        return raw.address.lower()
    return str(raw.get("address", "")).lower() if isinstance(raw, dict) else ""


def exchange_checks(counts: Counter[str], blocks: int) -> list[Check]:
    checks = []
    for exchange in EXCHANGES:
        n = counts[exchange.address]
        data = {"address": exchange.address, "family": exchange.family, "fills": n}
        if n:
            checks.append(Check(exchange.name, "ok", f"{n:,} fills in the last {blocks:,} blocks", data))
        elif exchange.family == "v1":  # retired at the cutover: silence is the expected state
            checks.append(Check(exchange.name, "ok", "no fills (retired at the 2026-04-28 cutover)", data))
        else:
            why = "the provider leaves its logs out, or the window is too short (--blocks)"
            checks.append(Check(exchange.name, "fail", f"no fills in the last {blocks:,} blocks: {why}", data))
    return checks


async def check_rpc(client: httpx.AsyncClient, config: chain_ingester.ChainConfig, blocks: int) -> list[Check]:
    node = chain_ingester.make_node(client, config)
    try:
        finality, top = await check_finality(node)
        span_check, span = await check_span(node, top)
        if span_check.verdict == "fail":
            return [finality, span_check]
        counts = await count_logs(node, max(0, top - blocks + 1), top, span)
    except SourceError as exc:
        return [failed("rpc", exc)]
    return [finality, span_check, *exchange_checks(counts, blocks)]


# --- stored cursors -------------------------------------------------------------------------------------------


async def check_cursors(
    redis_settings: RedisSettings, chain: chain_ingester.ChainConfig, goldsky: goldsky_ingester.GoldskyConfig,
    checks: list[Check],
) -> Check:  # fmt: skip
    """The stored cursors against the head and the newest fill the probes above found."""
    found = {check.name: check.data for check in checks}
    redis = make_redis(redis_settings)
    try:
        stored = await read_cursor(redis, [keys.STATE_CHAIN_LAST_BLOCK, keys.STATE_GOLDSKY_LAST_TIMESTAMP])
    except SinkError as exc:
        where = f"{redis_settings.host}:{redis_settings.port}"
        return Check("cursors", "warn", f"Redis at {where} does not answer ({exc}): stored cursors not checked")
    finally:
        await redis.aclose()
    chain_cursor, goldsky_cursor = stored[keys.STATE_CHAIN_LAST_BLOCK], stored[keys.STATE_GOLDSKY_LAST_TIMESTAMP]
    problems, seen = [], []
    if chain_cursor is not None and "head" in found.get("finality", {}):
        tolerance = chain.chain.cursor_ahead_tolerance_blocks
        problems.append(chain_cursor_ahead(int(chain_cursor), found["finality"]["head"], tolerance))
        seen.append(f"chain {int(chain_cursor):,}")
    if goldsky_cursor is not None and "newest_fill_at" in found.get("goldsky", {}):
        tolerance_s = goldsky.goldsky.cursor_ahead_tolerance_s
        problems.append(goldsky_cursor_ahead(int(goldsky_cursor), found["goldsky"]["newest_fill_at"], tolerance_s))
        seen.append(f"goldsky {iso(int(goldsky_cursor))}")
    data = {"chain_last_block": chain_cursor, "goldsky_last_timestamp": goldsky_cursor}
    if why := [p for p in problems if p is not None]:
        return Check("cursors", "fail", "; ".join(why), data)
    detail = f"not past their sources ({', '.join(seen)})" if seen else "none stored, or their sources did not answer"
    return Check("cursors", "ok", detail, data)


# --- the command ---------------------------------------------------------------------------------------------


def capped_http(timeout_s: float) -> HttpSettings:
    http = load(HttpSettings)
    timeouts = {name: min(getattr(http, name), timeout_s) for name in
                ("connect_timeout_s", "read_timeout_s", "write_timeout_s", "pool_timeout_s")}  # fmt: skip
    return http.model_copy(update={**timeouts, "max_attempts": min(http.max_attempts, 2)})


async def run_checks(args: argparse.Namespace) -> tuple[dict[str, str], list[Check]]:
    http = capped_http(args.timeout_s)
    source = load(SourceSettings)
    chain = chain_ingester.load_config()
    chain = chain_ingester.ChainConfig(chain.chain, chain.source, http, chain.redis)
    goldsky = goldsky_ingester.load_config()
    goldsky = goldsky_ingester.GoldskyConfig(goldsky.goldsky, goldsky.source, http, goldsky.redis)
    sources = {"gamma": source.gamma_api_url, "goldsky": source.goldsky_url,
               "rpc": mask_url(source.polygon_rpc_url.get_secret_value())}  # fmt: skip
    async with make_client(http) as client:
        probes: list[Awaitable[Check | list[Check]]] = [
            check_gamma(client, http, source.gamma_api_url.rstrip("/"), args.pages),
            check_goldsky(client, goldsky),
            check_rpc(client, chain, args.blocks),
        ]
        results = await asyncio.gather(*probes)
    checks = [check for result in results for check in ([result] if isinstance(result, Check) else result)]
    return sources, [*checks, await check_cursors(load(RedisSettings), chain, goldsky, checks)]


def print_checks(sources: dict[str, str], checks: list[Check]) -> None:
    for name, url in sources.items():
        console.print(f"source {name}: {url}", markup=False, soft_wrap=True)
    width = max(len(check.name) for check in checks)
    for check in checks:
        line = Text(f"{check.verdict.upper():<5} ", style=STYLE[check.verdict])
        line.append(f"{check.name:<{width}}  {check.detail}")
        console.print(line, soft_wrap=True)


def print_json(sources: dict[str, str], checks: list[Check]) -> None:
    ok = not any(check.verdict == "fail" for check in checks)
    document = {"ok": ok, "checked_at": datetime.now(UTC).isoformat(), "sources": sources,
                "checks": [asdict(check) for check in checks]}  # fmt: skip
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("doctor", __doc__)
    parser.add_argument("--blocks", type=int, default=1_000, help="window below the safe head for exchange logs")
    parser.add_argument("--pages", type=int, default=3, help="Gamma keyset pages to sample for version v2")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="cap on every HTTP timeout phase")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args(argv)
    show: Callable[[dict[str, str], list[Check]], None] = print_json if args.json else print_checks

    async def body() -> int:
        sources, checks = await run_checks(args)
        show(sources, checks)
        return 1 if any(check.verdict == "fail" for check in checks) else 0

    return run_command("doctor", body)
