"""Trade processor: order fills in, enriched trades out (docs/CONTRACT.md §3 rule 3, §4, §5).

Reads `stream:order_events` in consumer group `trade-processor` (stable consumer name per worker, several
workers share the load) and writes one trade per fill to `stream:trades`. The trades of a batch and the ack of
their fills are one script (`StreamConsumer.finish`): a crash before it redoes the batch, after it nothing; a
trade is only written by the call that acked its fill while it was still pending for this worker, so workers that
raced on a claimed fill never both emit it.

Markets come from the `markets:by_token` hash that the markets ingester writes together with the markets, with
a local cache in front. A fill whose token is unknown is held (left pending, kept from other workers' XAUTOCLAIM),
its token is put in `markets:token_lookups` for the markets ingester, and the trade is emitted when the market
arrives, or after UNKNOWN_MARKET_WAIT_S with `market_id = ''` (counted as `unresolved_markets`).
A fill whose token belongs to a version GAMMA_VERSIONS leaves out (a Protocol V2 position id when only v1 is
selected, a CTF token id when only v2 is) is not held: no market of that version is ever listed or looked up, so
its trade is written at once with `market_id = ''` (counted as `excluded_markets`). The version is read from the
id itself (`common.gamma_fields.outcome_id_version`), not from the exchange: the subgraph names none, and the id's
kind is what Gamma's own `version` rule keys on.
Poison fills go to `stream:dlq` with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import time

import structlog
from pydantic import Field

from common import keys
from common.backoff import sleep_unless_stopped
from common.config import GammaSettings, PipelineSettings, RedisSettings, StreamSettings, load
from common.errors import PoisonMessage, TransientSinkError
from common.gamma_fields import outcome_id_version
from common.payloads import OrderEvent, decode_order_event, encode_trade
from common.service import Service, run_worker, service_main, tune_gc
from common.streams import Entry, StreamConsumer, run_consumer
from processors.markets_cache import MarketsCache
from processors.trades import derive_trade, token_of

log = structlog.get_logger()


class ProcessorSettings(PipelineSettings):
    # Stable consumer name of this worker, also its heartbeat name (`service:<name>`). Several workers need
    # distinct names; empty means `trade_processor@<hostname>` (one worker per container).
    trade_processor_consumer: str = "trade_processor"
    trade_processor_batch_max: int = Field(5000, ge=1)
    unknown_market_wait_s: float = Field(300.0, ge=0)
    # A held fill waits for its market's listing (a markets refresh or a token lookup, seconds to minutes): looking
    # again every 2 s rather than every second adds at most a second to that wait, and halves the re-checks of
    # every held fill (docs/performance-fleet.md).
    held_check_interval_s: float = Field(2.0, gt=0)
    # An unknown token is asked of the markets ingester again at most this often. Asking at every held check for the
    # same unlisted token kept the ingester making Gamma requests for nothing (docs/performance-fleet.md); a market
    # listed meanwhile is still found within this time, and within a quarter of unknown_market_wait_s when shorter.
    token_lookup_repeat_s: float = Field(15.0, ge=0)


class Processor:
    """One worker's state: the consumer, the markets cache and the fills held for their market."""

    def __init__(
        self, service: Service, settings: ProcessorSettings, stream_settings: StreamSettings, gamma: GammaSettings
    ) -> None:
        self.service = service
        self.settings = settings
        self.versions = gamma.versions
        self.markets = MarketsCache(
            service.redis,
            wanted=self.is_selected,
            lookup_repeat_s=min(settings.token_lookup_repeat_s, settings.unknown_market_wait_s / 4),
        )
        self.consumer = StreamConsumer(
            service.redis,
            stream=keys.STREAM_ORDER_EVENTS,
            group=keys.GROUP_TRADE_PROCESSOR,
            consumer=service.name,
            settings=stream_settings,
            batch_max=settings.trade_processor_batch_max,
        )
        self.held: dict[str, tuple[Entry, OrderEvent]] = {}
        self.kept_at = -math.inf  # monotonic time held entries were last claimed again (`keep`)

    def is_selected(self, token: str) -> bool:
        """Whether the market of `token` is of a version GAMMA_VERSIONS selects (else it is never looked up)."""
        return outcome_id_version(token) in self.versions

    async def handle(self, batch: list[Entry]) -> None:
        """Decode, resolve markets, emit what is ready, hold the rest."""
        started = time.perf_counter()
        fills, dead = [], []
        for entry in batch:
            try:
                fills.append((entry, decode_order_event(entry.data)))
            except PoisonMessage as exc:
                dead.append((entry, str(exc)))
        emitted = await self.release(fills, dead)
        log.info(
            "batch",
            fills=len(batch),
            trades=emitted,
            held=len(self.held),
            dead=len(dead),
            duration_s=round(time.perf_counter() - started, 4),
        )

    async def release(self, fills: list[tuple[Entry, OrderEvent]], dead: list[tuple[Entry, str]] = ()) -> int:
        """Emit the trades of `fills` whose market is known or whose wait is over; the rest stay held."""
        tokens = [token_of(event) for _, event in fills]
        markets = await self.markets.resolve(set(tokens))
        # an entry id starts with its unix ms: older than this, a fill stops waiting for its market
        give_up_ms = time.time() * 1000 - self.settings.unknown_market_wait_s * 1000
        ready: dict[str, tuple[bytes]] = {}  # a fill's one trade in a tuple: one allocation, a list's two
        unresolved = excluded = 0
        for (entry, event), token in zip(fills, tokens, strict=True):
            market = markets.get(token)
            if market is None:
                if not self.is_selected(token):
                    excluded += 1
                elif int(entry.id.partition("-")[0]) > give_up_ms:
                    self.held.setdefault(entry.id, (entry, event))
                    continue
                else:
                    unresolved += 1
            ready[entry.id] = (encode_trade(derive_trade(event, market)),)
        if not ready and not dead:
            return 0
        acked, emitted, _ = await self.consumer.finish(ack=ready, output_stream=keys.STREAM_TRADES, dead=dead)
        for entry_id in ready:
            self.held.pop(entry_id, None)
        for entry, _ in dead:
            self.held.pop(entry.id, None)
        self.service.count("fills", acked)
        self.service.count("trades", emitted)
        self.service.count("unresolved_markets", unresolved)
        self.service.count("excluded_markets", excluded)
        self.service.count("dead_lettered", len(dead))
        return emitted

    async def release_held_forever(self) -> None:
        """Re-check held fills every interval; keep them ours and their tokens asked for meanwhile."""
        while not self.service.stop.is_set():
            await sleep_unless_stopped(self.service.stop, self.settings.held_check_interval_s)
            if not self.held:
                continue
            try:
                await self.release(list(self.held.values()))
                waiting = list(self.held.values())
                await self.markets.request_lookups({token_of(event) for _, event in waiting})
                # Other consumers claim entries idle for claim_min_idle_ms: renewing ours a few times within that
                # is enough (an XCLAIM of every held entry each second was a measurable share of Redis' time).
                if time.monotonic() - self.kept_at >= self.consumer.settings.claim_min_idle_ms / 4000:
                    await self.consumer.keep([entry.id for entry, _ in waiting])
                    self.kept_at = time.monotonic()
            except TransientSinkError as exc:
                self.service.degraded(exc)


async def run(
    settings: ProcessorSettings,
    *,
    redis: RedisSettings,
    streams: StreamSettings,
    gamma: GammaSettings | None = None,
    once: bool = False,
    stop: asyncio.Event | None = None,
) -> Service:
    gamma = gamma if gamma is not None else load(GammaSettings)

    async def body(service: Service) -> None:
        processor = Processor(service, settings, streams, gamma)
        held_task = asyncio.create_task(processor.release_held_forever())
        try:
            await run_consumer(
                processor.consumer,
                processor.handle,
                stop=service.stop,
                on_error=service.degraded,
                on_success=service.healthy,
                once=once,
                max_in_flight=2,  # decode and derive the next batch while Redis runs the last one's script
            )
        finally:
            service.stop.set()
            await held_task

    name = settings.trade_processor_consumer or f"trade_processor@{socket.gethostname()}"
    return await run_worker(name, redis, body, stop=stop)


async def start(args: argparse.Namespace) -> None:
    settings, gamma = load(ProcessorSettings), load(GammaSettings)
    await run(settings, redis=load(RedisSettings), streams=load(StreamSettings), gamma=gamma, once=args.once)


def main(argv: list[str] | None = None) -> int:
    tune_gc()  # a consumer's batches are short-lived garbage with no cycles (common/service.py)
    return service_main("trade_processor", start, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
