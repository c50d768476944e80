"""One read of the whole pipeline: Redis (streams, groups, cursors, heartbeats, DLQ) and ClickHouse (counts).

`collect_status(redis, clickhouse)` is the only code that knows where each number lives; `/api/status`,
`/metrics`, the page and `python -m pipeline status` all show what it returns. It never raises for an
unreachable Redis or ClickHouse: the status says which one is down. ClickHouse runs in a worker thread with
short timeouts and at most one query in flight; when it is slow or down, the last answer is returned, marked
stale. Rates and cursor ages need two reads: `common.status.history.Observer` adds them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
import structlog
from clickhouse_connect.driver.client import Client

from common import keys, tables
from common.clickhouse import make_client, map_clickhouse_errors
from common.config import ClickHouseSettings
from common.errors import PoisonMessage, SinkError
from common.payloads import decode_dead_letter, decode_heartbeat, decode_market_ref
from common.position_ids import MODULE_BITS, MODULE_NAMES, MODULE_SHIFT, RESERVED_BITS, RESERVED_SHIFT
from common.redis_client import map_redis_errors
from common.redis_probe import UnsupportedServer, read_durability, read_version
from common.status.models import (
    ClickHouseStatus,
    ConsumerStatus,
    CursorStatus,
    DeadLetterView,
    DlqStatus,
    GroupStatus,
    PipelineStatus,
    RedisStatus,
    ServiceStatus,
    StreamStatus,
    TableStatus,
    TradeView,
    UnresolvedStatus,
)

log = structlog.get_logger()

KNOWN_SERVICES = keys.SERVICES
LATEST_TRADES = 20
LATEST_DEAD_LETTERS = 10


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _count(value: Any) -> int | None:
    return int(value) if value is not None else None


# --- pure: Redis replies to the model ------------------------------------------------------------------------


def service_status(name: str, fields: dict[bytes, bytes], *, now: float, dead_after_s: float) -> ServiceStatus:
    """A heartbeat hash as a state: dead when the heartbeat is older than `dead_after_s`, absent when missing."""
    if not fields:
        return ServiceStatus(name=name, state="absent")
    heartbeat = decode_heartbeat(fields)
    reported = heartbeat.state
    age_s = max(0.0, now - heartbeat.heartbeat_at) if heartbeat.heartbeat_at else None
    if reported == "stopped":
        state = "stopped"
    elif age_s is None or age_s > dead_after_s:
        state = "dead"
    else:
        state = reported if reported in ("running", "degraded", "standby", "starting", "stopping") else "running"
    return ServiceStatus(
        name=name, state=state, reported_state=reported, heartbeat_at=heartbeat.heartbeat_at or None,
        heartbeat_age_s=age_s, started_at=heartbeat.started_at or None, pid=heartbeat.pid or None,
        last_error=heartbeat.last_error, last_error_at=heartbeat.last_error_at or None, counters=heartbeat.counters,
        gauges=heartbeat.gauges,
    )  # fmt: skip


def group_status(info: dict[str, Any], consumers: list[dict[str, Any]], last_generated_id: str = "") -> GroupStatus:
    """`last_generated_id` is the stream's: a group that has been given it has no lag, whatever XINFO says (after
    an AOF reload Redis 7.0 can report a stale `lag` for a group that has read everything)."""
    lag = info.get("lag")
    if last_generated_id and _text(info.get("last-delivered-id") or "") == last_generated_id:
        lag = 0
    return GroupStatus(
        name=_text(info["name"]),
        exists=True,
        lag=int(lag) if lag is not None else None,
        pending=int(info.get("pending") or 0),
        last_delivered_id=_text(info.get("last-delivered-id") or ""),
        consumers=[
            ConsumerStatus(name=_text(c["name"]), pending=int(c.get("pending") or 0),
                           idle_s=round(int(c.get("idle") or 0) / 1000, 3))
            for c in consumers
        ],
    )  # fmt: skip


def dead_letter_view(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetterView:
    letter = decode_dead_letter(fields.get(b"data"))
    return DeadLetterView(
        id=_text(entry_id), stream=letter.stream, group=letter.group, entry_id=letter.entry_id,
        error=letter.error[:500], deliveries=letter.deliveries, time=letter.time,
    )  # fmt: skip


def cursor_status(key: str, value: str, *, now: float) -> CursorStatus:
    """Goldsky's cursor is a time: how far behind the source it is, is now minus it."""
    behind_s = None
    if key == keys.STATE_GOLDSKY_LAST_TIMESTAMP and value.isdigit():
        behind_s = round(max(0.0, now - int(value)), 1)
    return CursorStatus(key=key, value=value[:200], behind_s=behind_s)


def is_instance_of(name: str, service: str) -> bool:
    """`trade_processor`, `trade_processor-2` and `trade_processor@host` are all workers of `trade_processor`."""
    return name == service or name.startswith((f"{service}-", f"{service}@"))


# --- Redis ---------------------------------------------------------------------------------------------------


async def _scan(redis: aioredis.Redis, pattern: str) -> list[str]:
    return sorted({_text(key) async for key in redis.scan_iter(match=pattern, count=500)})


async def read_streams(redis: aioredis.Redis) -> list[StreamStatus]:
    """Each stream's length, what was appended to it in entries and in items (`keys.STREAM_ITEMS`), and its groups."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in keys.STREAM_GROUPS:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
            pipe.xinfo_stream(stream)
        pipe.hmget(keys.STREAM_ITEMS, list(keys.STREAM_GROUPS))
        replies = await pipe.execute(raise_on_error=False)
    items = replies[-1] if isinstance(replies[-1], list) else [None] * len(keys.STREAM_GROUPS)
    streams = []
    for index, stream in enumerate(keys.STREAM_GROUPS):
        length, infos, info_stream = replies[3 * index : 3 * index + 3]
        infos = infos if isinstance(infos, list) else []  # no such key: the stream does not exist yet
        # no such key: nothing appended yet; a stream without `entries-added` (Redis 6.2): not known
        info_stream = info_stream if isinstance(info_stream, dict) else {"entries-added": 0}
        last_id = _text(info_stream.get("last-generated-id") or "")
        groups = [group_status(info, await redis.xinfo_consumers(stream, info["name"]), last_id) for info in infos]
        found = {group.name for group in groups}
        groups += [GroupStatus(name=name, exists=False) for name in keys.STREAM_GROUPS[stream] if name not in found]
        streams.append(StreamStatus(
            name=stream, length=int(length) if isinstance(length, int) else 0,
            entries_added=_count(info_stream.get("entries-added")),
            items_added=_count(items[index]), groups=groups,
        ))  # fmt: skip
    return streams


async def read_services(redis: aioredis.Redis, *, now: float, dead_after_s: float) -> list[ServiceStatus]:
    found = [key.removeprefix(keys.service_key("")) for key in await _scan(redis, keys.service_key("*"))]
    names = [name for name in KNOWN_SERVICES if not any(is_instance_of(f, name) for f in found)] + found
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.service_key(name))
        hashes = await pipe.execute()
    return [service_status(n, h, now=now, dead_after_s=dead_after_s) for n, h in zip(names, hashes, strict=True)]


async def read_cursors(redis: aioredis.Redis, *, now: float) -> list[CursorStatus]:
    names = await _scan(redis, keys.PREFIX + "state:*")
    values = await redis.mget(names) if names else []
    return [cursor_status(k, _text(v), now=now) for k, v in zip(names, values, strict=True) if v is not None]


def chain_distance(cursor: CursorStatus, chain_head: Any, safe_head: Any) -> None:
    """Blocks from the chain cursor to the safe head, and the finality lag (chain head minus safe head)."""
    if safe_head is None or not cursor.value.isdigit():
        return
    safe = int(float(_text(safe_head)))
    cursor.behind_blocks = max(0, safe - int(cursor.value))
    if chain_head is not None:
        cursor.finality_lag_blocks = max(0, int(float(_text(chain_head))) - safe)


async def add_chain_distance(redis: aioredis.Redis, cursors: list[CursorStatus]) -> None:
    """The chain cursor's distances, from the heads the chain ingester's heartbeat carries (absent: not shown)."""
    fields = [keys.gauge_field(keys.GAUGE_CHAIN_HEAD), keys.gauge_field(keys.GAUGE_SAFE_HEAD)]
    chain_head, safe_head = await redis.hmget(keys.service_key("chain_ingester"), fields)
    for cursor in cursors:
        if cursor.key == keys.STATE_CHAIN_LAST_BLOCK:
            chain_distance(cursor, chain_head, safe_head)


async def read_dlq(redis: aioredis.Redis) -> DlqStatus:
    length = await redis.xlen(keys.STREAM_DLQ)
    latest = await redis.xrevrange(keys.STREAM_DLQ, count=LATEST_DEAD_LETTERS)
    return DlqStatus(length=int(length), latest=[dead_letter_view(i, f) for i, f in latest])


async def read_questions(redis: aioredis.Redis, token_ids: list[str]) -> dict[str, str]:
    """Market question per token, from the processor's own token map (`markets:by_token`)."""
    if not token_ids:
        return {}
    refs = await redis.hmget(keys.MARKETS_BY_TOKEN, token_ids)
    questions = {}
    for token, ref in zip(token_ids, refs, strict=True):
        try:
            questions[token] = decode_market_ref(ref).question if ref else ""
        except PoisonMessage:
            questions[token] = ""
    return questions


# --- ClickHouse ----------------------------------------------------------------------------------------------

CTF_TOKEN = "ctf_token"


def module_of_token_sql(column: str) -> str:
    """The Protocol V2 module of a token id column, 0 for a CTF token id (reserved bits not all zero), in SQL."""
    value = f"toUInt256OrZero({column})"
    reserved = f"bitAnd(bitShiftRight({value}, {RESERVED_SHIFT}), toUInt256('{(1 << RESERVED_BITS) - 1}'))"
    module = f"toUInt8(bitAnd(bitShiftRight({value}, {MODULE_SHIFT}), {(1 << MODULE_BITS) - 1}))"
    return f"if({reserved} = 0, {module}, 0)"


def module_name(module_id: int) -> str:
    return CTF_TOKEN if module_id == 0 else MODULE_NAMES.get(module_id, f"module_{module_id}")


def query_unresolved_by_module(client: Client, database: str) -> dict[str, int]:
    rows = client.query(
        f"SELECT {module_of_token_sql('token_id')} AS module, count() FROM {database}.{tables.TRADES} "
        "WHERE market_id = '' GROUP BY module ORDER BY module"
    ).result_rows
    return {module_name(int(module_id)): int(n) for module_id, n in rows}


def table_counts(client: Client, database: str) -> dict[str, int]:
    """`count()` of each table that exists, in one query. Not system.tables.total_rows: it still counts the rows a
    lightweight DELETE has only masked (a re-listed market's replaced row) until a merge drops them. What a count
    costs (measured on chDB, docs/performance-fleet.md "What a count costs"): without a masked row, part metadata only
    (100M rows: 3 ms); a part with a lightweight-delete mask has its `_row_exists` column read (1 byte a row,
    83M masked rows: 160 ms). `trades` never gets lightweight deletes, so its count stays a metadata read at any size,
    and so does that of `order_filled_events`, a view over it (the engine counts the view from `trades`' parts: 1 row
    read for 3M trades); `markets` and `events` are small."""
    existing = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}",
        parameters={"db": database, "names": list(tables.ALL)},
    ).result_columns
    names = [name for name in tables.ALL if existing and name in existing[0]]
    if not names:
        return {}
    sql = " UNION ALL ".join(f"SELECT '{name}', count() FROM {database}.{name}" for name in names)
    return {name: int(n) for name, n in client.query(sql).result_rows}


def query_clickhouse(client: Client, database: str) -> tuple[ClickHouseStatus, list[str]]:
    """Table counts, newest trade, trades without a market, the latest taker-side trades (and their tokens)."""
    counts = table_counts(client, database)
    status = ClickHouseStatus(ok=True, checked_at=time.time(), tables=[
        TableStatus(name=t, rows=int(counts.get(t) or 0)) for t in tables.ALL
    ])  # fmt: skip
    if tables.TRADES not in counts:
        return status, []
    # Two scalar subqueries, each cheap at any size: max(timestamp) from the parts' metadata (timestamp is in the
    # partition key), the count from the granules the market_id_minmax index cannot rule out (migration 006).
    # One countIf beside max() would read both columns of the whole table.
    newest, unresolved = client.query(
        f"SELECT (SELECT toUnixTimestamp(max(timestamp)) FROM {database}.{tables.TRADES}), "
        f"(SELECT count() FROM {database}.{tables.TRADES} WHERE market_id = '')"
    ).result_rows[0]
    status.trades_without_market = int(unresolved)
    if unresolved:
        status.trades_without_market_by_module = query_unresolved_by_module(client, database)
    if not status.tables[tables.ALL.index(tables.TRADES)].rows:
        return status, []
    status.newest_trade_at = float(newest)
    rows = client.query(
        "SELECT id, toUnixTimestamp(timestamp), market_id, token_id, outcome, maker_direction, price, "
        f"toString(usd_amount) FROM {database}.{tables.TRADES} WHERE is_taker_side = 1 AND timestamp >= "
        f"toDateTime({int(newest)}) - 3600 ORDER BY timestamp DESC, id LIMIT {LATEST_TRADES}"
    ).result_rows
    status.latest_trades = [
        TradeView(id=r[0], timestamp=float(r[1]), market_id=r[2], question="", outcome=r[4], side=r[5],
                  price=float(r[6]), usd_amount=r[7])
        for r in rows
    ]  # fmt: skip
    return status, [r[3] for r in rows]


class ClickHouseReader:
    """The ClickHouse half of a status read: short timeouts, one query in flight, the last answer cached."""

    def __init__(self, settings: ClickHouseSettings, *, timeout_s: float = 2.0, refresh_s: float = 0.0) -> None:
        self.settings = settings.model_copy(
            update={"connect_timeout_s": min(timeout_s, 1.0), "send_receive_timeout_s": timeout_s}
        )
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self._client: Client | None = None
        self._inflight: asyncio.Future[tuple[ClickHouseStatus, list[str]]] | None = None
        self._last: tuple[ClickHouseStatus, list[str]] | None = None
        self._last_at = 0.0

    def _query(self) -> tuple[ClickHouseStatus, list[str]]:
        try:
            if self._client is None:
                self._client = make_client(self.settings, database="default")
            with map_clickhouse_errors("status"):
                return query_clickhouse(self._client, self.settings.database)
        except SinkError:
            self._client = None  # reconnect next time: the server may have restarted
            raise

    async def read(self) -> tuple[ClickHouseStatus, list[str]]:
        """The current numbers, or the last ones marked stale with the reason ClickHouse did not answer."""
        if self._last is not None and self._last[0].ok and time.monotonic() - self._last_at < self.refresh_s:
            return self._last
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._query))
        try:
            result = await asyncio.wait_for(asyncio.shield(self._inflight), self.timeout_s)
        except TimeoutError:
            return self._stale(f"clickhouse did not answer within {self.timeout_s} s")
        except SinkError as exc:
            return self._stale(str(exc))
        self._last, self._last_at = result, time.monotonic()
        return result

    def _stale(self, error: str) -> tuple[ClickHouseStatus, list[str]]:
        if self._last is None:
            return ClickHouseStatus(ok=False, error=error), []
        cached = self._last[0].model_copy(update={"ok": False, "error": error, "stale": True})
        return cached, self._last[1]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# --- the whole read -----------------------------------------------------------------------------------------


async def read_server(redis: aioredis.Redis) -> RedisStatus:
    version, durability = await read_version(redis), await read_durability(redis)
    return RedisStatus(ok=True, server=str(version), durability=durability.mode, durability_source=durability.source,
                       durability_warning=durability.warning)  # fmt: skip


async def read_redis(redis: aioredis.Redis, status: PipelineStatus, *, dead_after_s: float) -> None:
    now = status.generated_at
    status.redis = await read_server(redis)
    status.streams = await read_streams(redis)
    status.services = await read_services(redis, now=now, dead_after_s=dead_after_s)
    status.cursors = await read_cursors(redis, now=now)
    await add_chain_distance(redis, status.cursors)
    status.dlq = await read_dlq(redis)
    processors = [s for s in status.services if is_instance_of(s.name, "trade_processor")]
    status.unresolved = UnresolvedStatus(
        emitted_without_market=sum(s.counters.get("unresolved_markets", 0) for s in processors),
        excluded_by_versions=sum(s.counters.get("excluded_markets", 0) for s in processors),
        lookups_pending=int(await redis.scard(keys.TOKEN_LOOKUPS)),
    )


async def collect_status(
    redis: aioredis.Redis, clickhouse: ClickHouseReader, *, dead_after_s: float = 15.0, redis_budget_s: float = 3.0
) -> PipelineStatus:
    """Everything the dashboard shows, read now; Redis and ClickHouse are read concurrently.

    The Redis half gives up after `redis_budget_s` (a Redis that accepts connections but does not answer).
    """
    status = PipelineStatus(generated_at=time.time(), redis=RedisStatus(ok=True), clickhouse=ClickHouseStatus(ok=False))
    ch_read = asyncio.ensure_future(clickhouse.read())
    try:
        async with asyncio.timeout(redis_budget_s), map_redis_errors("status"):
            await read_redis(redis, status, dead_after_s=dead_after_s)
    except (TimeoutError, SinkError, UnsupportedServer) as exc:
        error = f"redis did not answer within {redis_budget_s} s" if isinstance(exc, TimeoutError) else str(exc)[:300]
        status.redis = RedisStatus(ok=False, error=error)
        status.streams, status.services, status.cursors = [], [], []
    status.clickhouse, tokens = await ch_read
    status.unresolved.trades_without_market = status.clickhouse.trades_without_market
    status.unresolved.by_module = status.clickhouse.trades_without_market_by_module
    if status.redis.ok and status.clickhouse.latest_trades:
        try:
            async with map_redis_errors("market questions"):
                questions = await read_questions(redis, tokens)
            for trade, token in zip(status.clickhouse.latest_trades, tokens, strict=True):
                trade.question = questions.get(token, "")
        except SinkError as exc:
            log.warning("market questions unavailable", error=str(exc))
    return status
