"""`python -m pipeline doctor`: probe the configured sources before trusting a live setup; exit 1 on a failing check.

One line per check, with its verdict (ok, warn, FAIL) and why:
  redis      REDIS_*: the server's version (6.2 or later, every command the pipeline needs) and the durability of
             an acknowledged write there (`appendfsync` by CONFIG GET, else `aof_enabled` by INFO persistence,
             else unknown (managed)); warn when weaker than `appendonly yes` + `appendfsync always`
  gamma      GAMMA_API_URL: `/markets/keyset` answers (a full sync needs it: offset listings stop at 2000), and for
             each listing (markets and events, keyset and offset), asked for GAMMA_VERSIONS, the share of
             `version: "v2"` items on its first pages (keyset: `--pages`): a listing that returns none while v2 is
             asked for may not honour `version`. With v2 left out by GAMMA_VERSIONS it warns, and says how many
             trades the trade processor wrote without a market as excluded (its counters in Redis)
  goldsky    GOLDSKY_URL: reachable, and the time of its newest fill (frozen since the 2026-04-28 cutover, as
             expected: live fills come from the chain)
  finality   POLYGON_RPC_URL: the `finalized` tag, and how far it lags behind head (blocks and seconds)
  getLogs    the largest eth_getLogs span the provider accepts, halving from 10,000 blocks
  <exchange> for each exchange of `common.exchanges`: its OrderFilled logs in the last `--blocks` blocks below the
             safe head (the v1 exchanges retired at the cutover, so none is expected there)
  implementation  ExchangeV3's implementation address, read with eth_getStorageAt from its ERC-1967 slot (it is
             an upgradeable proxy; the chain ingester reports each `Upgraded` log, `python -m pipeline ack-upgrade`)
  topics     every log of the exchanges in the same window (one unfiltered eth_getLogs pass): a topic0 the pipeline
             neither decodes (OrderFilled, Upgraded) nor knows (OrdersMatched, FeeCharged) warns, naming the
             exchange and the count (an upgrade may have changed the events)
  clickhouse the server's version (a warning below the oldest one the pipeline was run against), the deployment
             profile (CLICKHOUSE_DEPLOYMENT) and whether the server is a shape the writer accepts
  ch settings whether the settings the profile sends (read-your-writes for the check, quorum inserts, the delete's
             wait) take effect on this server, as it reports them back
  ch tables  each table's engine and whether its dedup window is the profile's (the database may not exist yet:
             the writer creates it at its start)
`--only redis`, `--only sources` or `--only clickhouse` runs one group (repeat it for several).
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

from common import deployment, keys
from common.clickhouse import make_client as make_clickhouse_client
from common.clickhouse import map_clickhouse_errors, refuse_distributed_tables, refuse_sharded_cluster
from common.config import ClickHouseSettings, GammaSettings, HttpSettings, RedisSettings, SourceSettings, load
from common.errors import ConfigError, SinkError, SourceError, TransientSinkError
from common.exchanges import (
    EXCHANGE_V3,
    EXCHANGES,
    IMPLEMENTATION_SLOT,
    KNOWN_UNDECODED_EVENTS,
    TOPICS,
    UPGRADED_TOPIC,
)
from common.gamma_fields import item_version
from common.http import RateLimiter, make_client
from common.redis_client import make_redis, map_redis_errors
from common.redis_probe import UnsupportedServer
from common.status.snapshot import is_instance_of, read_server, read_services
from common.streams import read_cursor
from ingesters import chain_ingester, goldsky_ingester
from ingesters.chain_logs import ChainLog, get_logs_filter
from ingesters.cursor_ahead import chain_cursor_ahead, goldsky_cursor_ahead
from ingesters.gamma_listing import GammaClient, Listing, Position, fetch_page, open_gamma
from ingesters.json_rpc import RangeTooLarge, hex_quantity
from pipeline.ops.command import console, iso, make_parser, run_command

Verdict = Literal["ok", "warn", "fail"]
GROUPS = ("redis", "sources", "clickhouse")  # --only: the Redis server, the upstream sources, ClickHouse
CUTOVER_TS = 1_777_334_400  # 2026-04-28T00:00:00Z: the v1 exchanges stopped, and the public subgraph with them
FIRST_SPAN_BLOCKS = 10_000
GAMMA_RATE_PER_S = 10.0  # the ingesters' default GAMMA_RATE_PER_S
SAMPLED_LISTINGS: tuple[tuple[str, Listing], ...] = (
    ("markets", "keyset"), ("events", "keyset"), ("markets", "offset"), ("events", "offset"),
)  # fmt: skip
FINALITY_WARN_S = 60.0  # Polygon finalizes in 2-5 s (docs/upstream.md §5); minutes mean a stall
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


async def sample_listing(gamma: GammaClient, name: str, listing: Listing, pages: int) -> list[Any]:
    """The open items of the first pages of one listing, asked for GAMMA_VERSIONS as the ingesters ask (keyset:
    `pages` pages of 100; offset: the first page)."""
    position, items = Position(listing, closed=False, versions=gamma.versions), []
    for _ in range(pages if listing == "keyset" else 1):
        page = await fetch_page(gamma, name, position, limit=100)
        items += page.items
        if page.next_after is None:
            break
        position = Position(listing, False, page.next_after, gamma.versions)
    return items


async def excluded_trades() -> str:
    """What the trade processors counted as excluded by GAMMA_VERSIONS, read from their heartbeats in Redis."""
    redis = make_redis(load(RedisSettings))
    try:
        async with asyncio.timeout(3.0), map_redis_errors("doctor: trade processor counters"):
            services = await read_services(redis, now=time.time(), dead_after_s=15.0)
    except (TimeoutError, SinkError) as exc:
        return f"trade processor counters unavailable ({exc or 'Redis did not answer'})"
    finally:
        await redis.aclose()
    excluded = sum(s.counters.get("excluded_markets", 0) for s in services if is_instance_of(s.name, "trade_processor"))
    return f"{excluded:,} trades written without a market as excluded so far (trade processor counters)"


async def check_gamma(http: HttpSettings, source: SourceSettings, pages: int) -> Check:
    versions = load(GammaSettings).versions
    listings: dict[str, dict[str, Any]] = {}
    try:
        async with open_gamma(http, source, GAMMA_RATE_PER_S, versions) as gamma:
            for name, listing in SAMPLED_LISTINGS:
                items = await sample_listing(gamma, name, listing, pages)
                v2 = sum(1 for item in items if item_version(item) == "v2")
                share = v2 / len(items) if items else 0.0
                listings[f"{name} {listing}"] = {"items": len(items), "v2_share": round(share, 4)}
    except SourceError as exc:
        if not listings:
            return failed("gamma", exc, "keyset listing unavailable; a full sync cannot go past offset 2000 without it")
        listings["error"] = {"detail": str(exc)}
    selection = ",".join(versions)
    shares = "; ".join(f"{name} {v['items']:,} open, {v['v2_share']:.0%} version v2" for name, v in listings.items()
                       if "items" in v)  # fmt: skip
    detail = f"keyset reachable; GAMMA_VERSIONS={selection}: {shares}"
    markets = listings["markets keyset"]
    data = {"versions": list(versions), "markets": markets["items"], "v2_share": markets["v2_share"],
            "listings": listings}  # fmt: skip
    if "v2" not in versions:
        detail += f"; Protocol V2 markets are left out on purpose: {await excluded_trades()}"
        return Check("gamma", "warn", detail, data)
    if "error" in listings:
        return Check("gamma", "warn", f"{detail}; {listings['error']['detail']}", data)
    return Check("gamma", "ok" if markets["items"] else "warn", detail, data)


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


async def count_logs(node: chain_ingester.Node, first: int, last: int, span: int) -> Counter[tuple[str, str]]:
    """Every log of the exchanges in [first, last] per (address, topic0), `span` blocks per call (halved when
    refused)."""
    counts: Counter[tuple[str, str]] = Counter()
    block = first
    while block <= last:
        to_block = min(last, block + span - 1)
        try:
            logs = await node.call("eth_getLogs", [get_logs_filter(block, to_block, topics=None)])
        except RangeTooLarge:
            span = max(1, span // 2)  # dense blocks fail by result count, not span
            continue
        counts.update(map(log_kind, logs))
        block = to_block + 1
    return counts


def log_kind(raw: Any) -> tuple[str, str]:
    """(emitting contract, topic0) of an eth_getLogs item: typed (`ChainLog`) when the reply is all standard logs,
    plain JSON otherwise ("" for what it lacks)."""
    if isinstance(raw, ChainLog):
        address, topics = raw.address, list(raw.topics)
    elif isinstance(raw, dict):
        address, topics = str(raw.get("address", "")), raw.get("topics") or []
    else:
        return "", ""
    return address.lower(), str(topics[0]).lower() if isinstance(topics, list) and topics else ""


def fills_per_exchange(counts: Counter[tuple[str, str]]) -> Counter[str]:
    fills: Counter[str] = Counter()
    for (address, topic0), n in counts.items():
        if topic0 in TOPICS:
            fills[address] += n
    return fills


def topics_check(counts: Counter[tuple[str, str]], blocks: int) -> Check:
    """Warn on logs of an exchange whose topic0 the pipeline neither decodes nor knows."""
    names = {exchange.address: exchange.name for exchange in EXCHANGES}
    decoded = {*TOPICS, UPGRADED_TOPIC}
    known = {(names.get(a, a), KNOWN_UNDECODED_EVENTS[t].split("(")[0]): n for (a, t), n in counts.items()
             if t in KNOWN_UNDECODED_EVENTS}  # fmt: skip
    unknown = {
        (names.get(a, a), t): n for (a, t), n in counts.items() if t not in decoded and t not in KNOWN_UNDECODED_EVENTS
    }
    upgrades = sum(n for (_, t), n in counts.items() if t == UPGRADED_TOPIC)
    data = {"unknown": [{"exchange": e, "topic0": t, "logs": n} for (e, t), n in sorted(unknown.items())],
            "known_not_needed": [{"exchange": e, "event": t, "logs": n} for (e, t), n in sorted(known.items())],
            "upgraded": upgrades}  # fmt: skip
    extra = f"; {upgrades} Upgraded log(s): see `python -m pipeline ack-upgrade`" if upgrades else ""
    if unknown:
        listed = ", ".join(f"{e} {t} ×{n:,}" for (e, t), n in sorted(unknown.items()))
        return Check("topics", "warn", f"logs with a topic0 the pipeline does not decode in the last {blocks:,} "
                     f"blocks: {listed} (an upgrade may have changed the exchange's events){extra}", data)  # fmt: skip
    return Check("topics", "ok", f"every exchange log of the last {blocks:,} blocks has a known topic0{extra}", data)


async def check_implementation(node: chain_ingester.Node, top: int) -> Check:
    """ExchangeV3's implementation: the address in its proxy's ERC-1967 implementation slot at block `top`."""
    try:
        slot = await node.call("eth_getStorageAt", [EXCHANGE_V3, IMPLEMENTATION_SLOT, hex(top)])
    except SourceError as exc:
        return failed("implementation", exc, "the node does not answer eth_getStorageAt")
    if not isinstance(slot, str) or len(slot) != 66:
        return Check("implementation", "fail", f"eth_getStorageAt: unexpected answer {str(slot)[:80]!r}")
    implementation = "0x" + slot[-40:].lower()
    if int(implementation, 16) == 0:
        return Check("implementation", "warn", "ExchangeV3's ERC-1967 implementation slot is empty (not a proxy?)",
                     {"address": EXCHANGE_V3, "implementation": implementation})  # fmt: skip
    detail = f"ExchangeV3 {EXCHANGE_V3} runs implementation {implementation} (ERC-1967 slot, block {top:,})"
    return Check("implementation", "ok", detail, {"address": EXCHANGE_V3, "implementation": implementation})


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
        implementation = await check_implementation(node, top)
    except SourceError as exc:
        return [failed("rpc", exc)]
    fills = fills_per_exchange(counts)
    return [finality, span_check, *exchange_checks(fills, blocks), implementation, topics_check(counts, blocks)]


# --- clickhouse ----------------------------------------------------------------------------------------------


def check_clickhouse(ch: ClickHouseSettings) -> list[Check]:
    """The server, the profile's settings as the server reports them in effect, and the tables (blocking)."""
    profile = deployment.PROFILES[ch.deployment]
    try:
        client = make_clickhouse_client(ch, database="default")
    except TransientSinkError as exc:
        return [Check("clickhouse", "fail", str(exc))]
    try:
        with map_clickhouse_errors("doctor"):
            return [server_check(client, ch), settings_check(client, profile), tables_check(client, ch, profile)]
    except TransientSinkError as exc:
        return [Check("clickhouse", "fail", str(exc))]
    finally:
        client.close()


def server_check(client: Any, ch: ClickHouseSettings) -> Check:
    version = client.server_version
    data = {"version": version, "deployment": ch.deployment, "tls": ch.secure, "tls_verified": ch.secure and ch.verify}
    detail = f"ClickHouse {version}, deployment {ch.deployment}" + (
        f", TLS {'verified' if ch.verify else 'NOT verified (CLICKHOUSE_VERIFY=false)'}" if ch.secure else ""
    )
    try:
        refuse_sharded_cluster(client, ch)
    except ConfigError as exc:
        return Check("clickhouse", "fail", f"{detail}: {exc}", data)
    oldest = ".".join(map(str, deployment.MIN_SERVER_VERSION))
    if deployment.parse_version(version) < deployment.MIN_SERVER_VERSION:
        return Check("clickhouse", "warn", f"{detail}: older than {oldest}, the oldest the pipeline supports", data)
    return Check("clickhouse", "ok", detail, data)


def settings_check(client: Any, profile: deployment.Profile) -> Check:
    """The check's and the delete's settings go with the query, the insert settings are the client's own (as the
    writer sends them); system.settings shows what the server made of them."""
    wanted = {**profile.check_settings, **deployment.DELETE_SETTINGS, **profile.insert_settings}
    rows = client.query("SELECT name, value FROM system.settings WHERE name IN {names:Array(String)}",
                        parameters={"names": list(wanted)},
                        settings={**profile.check_settings, **deployment.DELETE_SETTINGS}).result_rows  # fmt: skip
    seen = {name: value for name, value in rows}
    shown = ", ".join(f"{name}={seen.get(name, 'absent')}" for name in wanted)
    wrong = [name for name, value in wanted.items() if seen.get(name) != str(value)]
    if wrong:
        return Check("ch settings", "fail", f"not in effect: {', '.join(wrong)} ({shown})", seen)
    return Check("ch settings", "ok", f"in effect: {shown}", seen)


def tables_check(client: Any, ch: ClickHouseSettings, profile: deployment.Profile) -> Check:
    rows = client.query("SELECT name, engine, engine_full FROM system.tables WHERE database = {db:String} "
                        "AND engine LIKE '%MergeTree' AND name != 'schema_migrations' ORDER BY name",
                        parameters={"db": ch.database}).result_rows  # fmt: skip
    try:
        refuse_distributed_tables(client, ch.database)
    except ConfigError as exc:
        return Check("ch tables", "fail", str(exc))
    if not rows:
        return Check("ch tables", "warn", f"database {ch.database} has no tables yet: the writer creates them at start")
    expected = profile.dedup_settings.split(", ")
    engines = {name: engine for name, engine, _ in rows}
    off = [name for name, _, full in rows if not all(part in full for part in expected)]
    data = {"engines": engines, "dedup_settings": profile.dedup_settings}
    listed = ", ".join(f"{name} {engine}" for name, engine in engines.items())
    alone = [name for name, engine in engines.items() if not engine.startswith("Replicated")]
    if profile.replicated and alone:
        why = 'on this replica alone (docs/operations.md, "From one server to a cluster")'
        return Check("ch tables", "fail", f"{listed}; {', '.join(alone)} not replicated: {why}", data)
    if off:
        why = f"{', '.join(off)} without {profile.dedup_settings}: created under another profile (docs/operations.md)"
        return Check("ch tables", "warn", f"{listed}; {why}", data)
    return Check("ch tables", "ok", f"{listed}; {profile.dedup_settings}", data)


# --- redis ---------------------------------------------------------------------------------------------------


async def check_redis(settings: RedisSettings, timeout_s: float) -> Check:
    redis = make_redis(settings.model_copy(update={"socket_timeout_s": timeout_s}))
    try:
        async with map_redis_errors("doctor"):
            server = await read_server(redis)  # what the dashboard shows
    except (SinkError, UnsupportedServer) as exc:
        return Check("redis", "fail", str(exc))
    finally:
        await redis.aclose()
    warning = f": {server.durability_warning}" if server.durability_warning else ""
    source = f" ({server.durability_source})" if server.durability_source else ""
    data = server.model_dump(include={"server", "durability", "durability_source", "durability_warning"})
    detail = f"{server.server}, durability {server.durability}{source}{warning}"
    return Check("redis", "warn" if warning else "ok", detail, data)


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
    def wanted(group: str) -> bool:
        return args.only is None or group in args.only

    http = capped_http(args.timeout_s)
    source = load(SourceSettings)
    chain = chain_ingester.load_config()
    chain = chain_ingester.ChainConfig(chain.chain, chain.source, http, chain.redis)
    goldsky = goldsky_ingester.load_config()
    goldsky = goldsky_ingester.GoldskyConfig(goldsky.goldsky, goldsky.source, http, goldsky.redis)
    ch = load(ClickHouseSettings)
    sources = {"gamma": source.gamma_api_url, "goldsky": source.goldsky_url,
               "rpc": mask_url(source.polygon_rpc_url.get_secret_value()),
               "clickhouse": f"{'https' if ch.secure else 'http'}://{ch.host}:{ch.port}/{ch.database}"}  # fmt: skip
    async with make_client(http) as client:
        probes: list[Awaitable[Check | list[Check]]] = []
        if wanted("redis"):
            probes.append(check_redis(load(RedisSettings), args.timeout_s))
        if wanted("sources"):
            probes += [check_gamma(http, source, args.pages),
                       check_goldsky(client, goldsky), check_rpc(client, chain, args.blocks)]  # fmt: skip
        if wanted("clickhouse"):
            probes.append(asyncio.to_thread(check_clickhouse, ch))
        results = await asyncio.gather(*probes)
    group_of = {"gamma": "sources", "goldsky": "sources", "rpc": "sources", "clickhouse": "clickhouse"}
    sources = {name: url for name, url in sources.items() if wanted(group_of[name])}
    checks = [check for result in results for check in ([result] if isinstance(result, Check) else result)]
    if wanted("sources"):
        checks.append(await check_cursors(load(RedisSettings), chain, goldsky, checks))
    return sources, checks


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
    parser.add_argument("--only", choices=GROUPS, action="append",
                        help="run only this group of checks: the Redis server, the upstream sources or ClickHouse")
    args = parser.parse_args(argv)
    show: Callable[[dict[str, str], list[Check]], None] = print_json if args.json else print_checks

    async def body() -> int:
        sources, checks = await run_checks(args)
        show(sources, checks)
        return 1 if any(check.verdict == "fail" for check in checks) else 0

    return run_command("doctor", body)
