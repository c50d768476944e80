"""Polygon `eth_getLogs` for every exchange's `OrderFilled` -> `stream:order_events` (the live source).

Writes: `stream:order_events` (normalized fills, `source="chain"`, with exchange, block and log index),
`stream:dlq` (undecodable logs, with the raw log and the reason), and the cursor `state:chain_last_block`: the
last block whose logs are all in the stream (next range starts at +1; absent: CHAIN_START_BLOCK, default the
v2 genesis). Only blocks at or below `finalized` are read (head - CHAIN_CONFIRMATIONS when CHAIN_USE_FINALIZED
is false or the node lacks the tag), so a reorg never reaches the stream; both heads are published as the
heartbeat gauges `gauge:chain_head` and `gauge:safe_head` (their difference is the finality lag). A backfill
(`backfill()`, run by `python -m pipeline backfill chain --from A --to B --workers N`) pages block ranges
concurrently, each with its own `state:chain_backfill:<first>-<last>:last_block` (see `ingesters/backfill.py`).

Each range's logs, dead letters and the new cursor are one `append_with_cursor` call (compare-and-set): a crash
before it re-reads the range, after it loses nothing. Block timestamps come from batched `eth_getBlockByNumber`
(one POST, a JSON array) through a bounded cache. The range grows while calls pass and shrinks on the
range-too-large errors providers give (`json_rpc.classify_rpc_error`). The same eth_getLogs call asks for the
exchanges' proxy `Upgraded` logs: a new one is recorded in `chain:exchange_upgrades` and keeps the service degraded
until acknowledged (`ingesters/upgrade_watch.py`); fills flow on meanwhile. POLYGON_RPC_URL carries an API key: it
is never logged; requests are named by method.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import structlog
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common import keys
from common.config import HttpSettings, PipelineSettings, RedisSettings, SourceSettings, load
from common.errors import ConfigError, PermanentSourceError, TransientSourceError
from common.exchanges import V2_GENESIS_BLOCK, WATCHED_TOPICS
from common.http import Decode, RateLimiter, make_client, request_json
from common.service import Service, poll_forever, run_worker, service_main
from common.streams import append_with_cursor, read_cursor
from ingesters.backfill import ProgressCallback, plan_backfill, run_parts
from ingesters.bounded_cache import BoundedCache
from ingesters.chain_logs import REPLY_DECODERS, blocks_needing_timestamps, get_logs_filter, normalize_logs
from ingesters.cursor_ahead import AheadAlarm, chain_cursor_ahead
from ingesters.json_rpc import (
    RangeTooLarge,
    SpanSizer,
    block_batch,
    decode_block_batch,
    hex_quantity,
    parse_block_batch,
    rpc_result,
)
from ingesters.upgrade_watch import UpgradeWatch, split_upgrades

NAME = "chain_ingester"
log = structlog.get_logger()


class ChainSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="CHAIN_")

    start_block: int = Field(V2_GENESIS_BLOCK, ge=0)  # first block ingested when no cursor is stored
    use_finalized: bool = True
    confirmations: int = Field(64, ge=0)  # depth below head when `finalized` is off or unsupported
    initial_span_blocks: int = Field(1000, ge=1)
    max_span_blocks: int = Field(10_000, ge=1)
    block_batch_size: int = Field(100, ge=1, le=1000)  # eth_getBlockByNumber calls per batch POST
    block_cache_size: int = Field(50_000, ge=1)
    rate_limit_per_s: float = Field(25.0, gt=0)
    poll_interval_s: float = Field(2.0, gt=0)
    backfill_workers: int = Field(4, ge=1, le=64)
    # A cursor this far past the node's head for this long degrades the service (ingesters/cursor_ahead.py).
    cursor_ahead_tolerance_blocks: int = Field(8, ge=0)
    cursor_ahead_grace_s: float = Field(60.0, ge=0)  # how long past the tolerance before the alarm


@dataclass(frozen=True)
class ChainConfig:
    chain: ChainSettings
    source: SourceSettings
    http: HttpSettings
    redis: RedisSettings


def load_config() -> ChainConfig:
    source = load(SourceSettings)
    if not source.polygon_rpc_url.get_secret_value().startswith(("http://", "https://")):
        raise ConfigError("POLYGON_RPC_URL: must be an http(s) URL (value hidden: it may hold an API key)")
    return ChainConfig(load(ChainSettings), source, load(HttpSettings), load(RedisSettings))


@dataclass
class Node:
    """The JSON-RPC side, shared by every range of a process: client, rate limit, block timestamp cache."""

    client: httpx.AsyncClient
    limiter: RateLimiter
    config: ChainConfig
    timestamps: BoundedCache[int, int]
    finalized_supported: bool = True

    async def post(self, body: Any, what: str, decode: Decode = orjson.loads) -> Any:
        url = self.config.source.polygon_rpc_url.get_secret_value()
        return await request_json(
            self.client, "POST", url, settings=self.config.http, what=what, limiter=self.limiter, decode=decode,
            json=body,
        )  # fmt: skip

    async def call(self, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply = await self.post(body, method, REPLY_DECODERS.get(method, orjson.loads))
        return rpc_result(reply, method)

    async def heads(self) -> tuple[int, int]:
        """(chain head, safe head): the safe head is `finalized`, or head minus CHAIN_CONFIRMATIONS."""
        finalized = await self.finalized_block()  # before the head, so the head is never below it
        head = hex_quantity(await self.call("eth_blockNumber", []), "eth_blockNumber")
        return head, finalized if finalized is not None else head - self.config.chain.confirmations

    async def finalized_block(self) -> int | None:
        """The `finalized` block; None when CHAIN_USE_FINALIZED is off or the node lacks the tag (then for good)."""
        if not (self.config.chain.use_finalized and self.finalized_supported):
            return None
        try:
            block = await self.call("eth_getBlockByNumber", ["finalized", False])
            if isinstance(block, dict):
                return hex_quantity(block.get("number"), "finalized block number")
        except PermanentSourceError as exc:
            log.warning("node has no finalized tag; using head minus confirmations", error=str(exc))
        self.finalized_supported = False
        return None

    async def block_timestamps(self, blocks: set[int]) -> dict[int, int]:
        """Timestamps of `blocks`, from the cache or batched eth_getBlockByNumber POSTs."""
        missing = sorted(b for b in blocks if self.timestamps.get(b) is None)
        size = self.config.chain.block_batch_size
        for start in range(0, len(missing), size):
            chunk = missing[start : start + size]
            replies = await self.post(block_batch(chunk), "eth_getBlockByNumber batch", decode_block_batch)
            timestamps, failures = parse_block_batch(replies, chunk)
            for number, timestamp in timestamps.items():  # keep what arrived: a retry asks only for the rest
                self.timestamps.put(number, timestamp)
            if failures:
                raise failures[0]
        return {b: t for b in blocks if (t := self.timestamps.get(b)) is not None}


@dataclass
class BlockRangeIngester:
    """Ingests blocks `[first_block, last_block]` (`last_block` None: follow the safe head) into the stream."""

    service: Service
    node: Node
    first_block: int
    last_block: int | None
    cursor_key: str = keys.STATE_CHAIN_LAST_BLOCK
    watch: UpgradeWatch | None = None  # ExchangeV3's upgrades (ingesters/upgrade_watch.py); None: not watched
    done: int = 0  # blocks of the range behind the cursor, for progress
    sizer: SpanSizer = field(default_factory=lambda: SpanSizer(1000, 10_000))
    safe: int = -1  # the safe head last seen; it only grows, so it is asked again once reached or stale
    head: int = -1
    heads_at: float = 0.0  # monotonic time of that answer: the published gauges stay fresh while catching up
    ahead: AheadAlarm = field(default_factory=lambda: AheadAlarm(60.0))

    def close_ahead(self) -> None:
        """Nothing is fetched ahead here: ranges are cheap to ask for compared with their timestamps."""

    async def refresh_heads(self) -> None:
        self.head, self.safe = await self.node.heads()
        self.heads_at = time.monotonic()
        self.service.gauge(keys.GAUGE_CHAIN_HEAD, self.head)
        self.service.gauge(keys.GAUGE_SAFE_HEAD, self.safe)

    async def step(self) -> bool:
        if self.watch is not None:
            await self.watch.refresh()  # an acknowledgement clears the alert even while no block comes
        stored = (await read_cursor(self.service.redis, [self.cursor_key]))[self.cursor_key]
        last_done = int(stored) if stored is not None else self.first_block - 1
        if last_done >= self.safe or time.monotonic() - self.heads_at > self.node.config.chain.poll_interval_s:
            await self.refresh_heads()
        safe = self.safe
        end = safe if self.last_block is None else min(safe, self.last_block)
        if last_done >= end:
            tolerance = self.node.config.chain.cursor_ahead_tolerance_blocks
            self.ahead.check(chain_cursor_ahead(last_done, self.head, tolerance) if stored is not None else None)
            return False
        self.ahead.check(None)
        from_block, to_block = last_done + 1, min(end, last_done + self.sizer.span)
        try:
            logs = await self.node.call("eth_getLogs", [get_logs_filter(from_block, to_block, WATCHED_TOPICS)])
        except RangeTooLarge as exc:
            self.sizer.too_large(exc.error, from_block, to_block - from_block + 1)
            self.service.count("range_too_large")
            log.info("range too large; shrinking", blocks=to_block - from_block + 1, next_blocks=self.sizer.span)
            return True
        self.sizer.succeeded()
        if not isinstance(logs, list):
            raise TransientSourceError(f"eth_getLogs: expected a list, got {type(logs).__name__}")
        logs, upgrades, bad_upgrades = split_upgrades(logs)
        if self.watch is not None:
            await self.watch.record(upgrades)  # before the cursor moves past them; recording twice is harmless
            await self.watch.refresh()
        timestamps = await self.node.block_timestamps(blocks_needing_timestamps(logs))
        entries, dead = normalize_logs(logs, timestamps)
        dead += bad_upgrades
        # A crash before this line re-reads the range; the script writes all of it or nothing.
        await append_with_cursor(
            self.service.redis,
            keys.STREAM_ORDER_EVENTS,
            entries,
            {self.cursor_key: (stored, str(to_block))},
            dead_letters=dead,
        )
        for counter, n in (("fills", len(entries)), ("dead_letters", len(dead)), ("ranges", 1)):
            self.service.count(counter, n)
        self.done = to_block - self.first_block + 1
        log.info("range", first=from_block, last=to_block, fills=len(entries), dead=len(dead), safe_head=safe)
        return to_block < end


def make_node(client: httpx.AsyncClient, config: ChainConfig) -> Node:
    settings = config.chain
    return Node(client, RateLimiter(settings.rate_limit_per_s), config, BoundedCache(settings.block_cache_size))


def range_ingester(service: Service, node: Node, first: int, last: int | None, key: str) -> BlockRangeIngester:
    settings = node.config.chain
    sizer = SpanSizer(min(settings.initial_span_blocks, settings.max_span_blocks), settings.max_span_blocks)
    watch = UpgradeWatch(service, recheck_s=settings.poll_interval_s)
    ahead = AheadAlarm(settings.cursor_ahead_grace_s)
    return BlockRangeIngester(service, node, first, last, key, watch=watch, sizer=sizer, ahead=ahead)


async def run(config: ChainConfig, *, once: bool = False, stop: asyncio.Event | None = None) -> Service:
    """Follow the safe head from the stored cursor (or CHAIN_START_BLOCK); `once`: up to the safe head now."""

    async def body(service: Service) -> None:
        async with make_client(config.http) as client:
            node = make_node(client, config)
            ingester = range_ingester(service, node, config.chain.start_block, None, keys.STATE_CHAIN_LAST_BLOCK)
            await poll_forever(service, ingester.step, interval_s=config.chain.poll_interval_s, once=once)

    return await run_worker(NAME, config.redis, body, stop=stop)


async def backfill(
    config: ChainConfig, *, from_block: int, to_block: int, workers: int, progress: ProgressCallback | None = None
) -> int:
    """Ingest blocks `[from_block, to_block]` (capped at the safe head) as `workers` concurrent ranges."""
    if to_block < from_block or workers < 1:
        raise ConfigError(f"backfill: need FROM <= TO and workers >= 1 (got {from_block}, {to_block}, {workers})")

    async def body(service: Service) -> None:
        ranges = await plan_backfill(service, "chain", from_block, to_block, workers)
        async with make_client(config.http) as client:
            node = make_node(client, config)
            parts = [
                range_ingester(service, node, a, b, keys.backfill_key("chain", a, b, "last_block")) for a, b in ranges
            ]
            await run_parts(service, parts, to_block - from_block + 1, progress)

    service = await run_worker(f"{NAME}_backfill", config.redis, body)
    return service.counters["fills"]


async def start(args: argparse.Namespace) -> None:
    await run(load_config(), once=args.once)


def main(argv: list[str] | None = None) -> int:
    description = "Polygon OrderFilled logs (the five exchanges, finalized blocks) -> stream:order_events."
    return service_main(NAME, start, description + " History: python -m pipeline backfill chain.", argv)


if __name__ == "__main__":
    raise SystemExit(main())
