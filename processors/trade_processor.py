"""Trade processor: order fills in, enriched trades out (docs/CONTRACT.md §3 rule 3, §4, §5).

Reads `stream:order_events` in consumer group `trade-processor` (stable consumer name per worker, several
workers share the load) and writes one trade per fill to `stream:trades`: an entry's fills (a page,
common/pages.py) become one entry of their trades, in the same order. The trades of a batch and the ack of their
entries are one script (`StreamConsumer.finish`): a crash before it redoes the batch, after it nothing; trades are
only written by the call that acked their entry while it was still pending for this worker, so workers that raced
on a claimed entry never both emit them.

Markets come from the `markets:by_token` hash that the markets ingester writes together with the markets, with
a local cache in front. A fill whose token is unknown waits for its market, alone: an entry whose every fill waits
is held (left pending, kept from other workers' XAUTOCLAIM); an entry with some fills ready is finished, its
waiting fills appended again, in the same script, as an entry of their own that keeps their arrival time
(`since`). Their tokens are put in `markets:token_lookups` for the markets ingester, and a waiting fill's trade is
emitted when its market arrives, or UNKNOWN_MARKET_WAIT_S after the fill arrived with `market_id = ''` (counted
as `unresolved_markets`).
A fill whose token belongs to a version GAMMA_VERSIONS leaves out (a Protocol V2 position id when only v1 is
selected, a CTF token id when only v2 is) is not held: no market of that version is ever listed or looked up, so
its trade is written at once with `market_id = ''` (counted as `excluded_markets`). The version is read from the
id itself (`common.gamma_fields.outcome_id_version`), not from the exchange: the subgraph names none, and the id's
kind is what Gamma's own `version` rule keys on.
A malformed fill goes to `stream:dlq` alone, with the reason; its page-mates go on.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import time
from typing import NamedTuple

import structlog
from pydantic import Field

from common import keys
from common.backoff import sleep_unless_stopped
from common.config import GammaSettings, PipelineSettings, RedisSettings, StreamSettings, load
from common.errors import TransientSinkError
from common.gamma_fields import outcome_id_version
from common.pages import decode_page
from common.payloads import OrderEvent, decode_order_event, decode_order_events, encode_items
from common.service import Service, run_worker, service_main, tune_gc
from common.streams import Entry, Finish, Finished, StreamConsumer, dead_item, pages_for, run_consumer
from processors.markets_cache import MarketsCache
from processors.trades import derive_trade, token_of

log = structlog.get_logger()


class ProcessorSettings(PipelineSettings):
    # Stable consumer name of this worker, also its heartbeat name (`service:<name>`). Several workers need
    # distinct names; empty means `trade_processor@<hostname>` (one worker per container).
    trade_processor_consumer: str = "trade_processor"
    # Fills per batch at most: entries, pages of up to STREAM_PAGE_MAX_ITEMS fills, are read this many fills' worth
    # at a time (at least one entry)
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


class Page(NamedTuple):
    """An entry of `stream:order_events` in hand: its fills decoded, and the dead letters of its poison items."""

    entry: Entry
    events: list[OrderEvent]
    dead: list[bytes]


class Processor:
    """One worker's state: the consumer, the markets cache and the entries held for their fills' markets."""

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
            batch_max=pages_for(settings.trade_processor_batch_max, stream_settings),
        )
        self.held: dict[str, Page] = {}  # entries whose every fill waits for its market, left pending
        self.kept_at = -math.inf  # monotonic time held entries were last claimed again (`keep`)

    def is_selected(self, token: str) -> bool:
        """Whether the market of `token` is of a version GAMMA_VERSIONS selects (else it is never looked up)."""
        return outcome_id_version(token) in self.versions

    def read(self, entry: Entry) -> Page:
        """An entry's fills; its malformed items (or the whole entry, if it is no page of items) as dead letters."""
        decoded = decode_page(entry.data, decode_order_events, decode_order_event)
        dead = [dead_item(self.consumer, entry, bad.position, bad.data, bad.reason) for bad in decoded.bad]
        return Page(entry, decoded.values, dead)

    async def handle(self, batch: list[Entry]) -> None:
        """Decode, resolve markets, emit what is ready, hold the rest."""
        started = time.perf_counter()
        pages = [self.read(entry) for entry in batch]
        finished = await self.release(pages)
        log.info(
            "batch",
            entries=len(batch),
            fills=sum(len(page.events) for page in pages),
            trades=finished.emitted,
            waiting=finished.requeued,
            held=len(self.held),
            dead=finished.dead,
            duration_s=round(time.perf_counter() - started, 4),
        )

    async def release(self, pages: list[Page]) -> Finished:
        """Finish each entry whose fills all have their market (or have waited long enough): its trades, as one
        page, in the same script as its ack. An entry whose fills all wait stays held; one with some waiting is
        finished, its waiting fills appended again as an entry of their own that keeps their arrival time."""
        markets = await self.markets.resolve({token_of(event) for page in pages for event in page.events})
        # older than this, a fill stops waiting for its market
        give_up_ms = time.time() * 1000 - self.settings.unknown_market_wait_s * 1000
        done: dict[str, Finish] = {}
        unresolved = excluded = 0
        for page in pages:
            waited_out = page.entry.arrived_ms <= give_up_ms
            trades, waiting = [], []
            for event in page.events:
                token = token_of(event)
                market = markets.get(token)
                if market is None:
                    if not self.is_selected(token):
                        excluded += 1
                    elif not waited_out:
                        waiting.append(event)
                        continue
                    else:
                        unresolved += 1
                trades.append(derive_trade(event, market))
            if waiting and not trades and not page.dead:
                self.held.setdefault(page.entry.id, page)
                continue
            done[page.entry.id] = Finish(
                outputs=[(encode_items(trades), len(trades))] if trades else (),
                dead=page.dead,
                requeue=[(encode_items(waiting), len(waiting))] if waiting else (),
                since_ms=page.entry.arrived_ms,
            )
        if not done:
            return Finished(0, 0, 0, 0)
        finished = await self.consumer.finish(done, output_stream=keys.STREAM_TRADES)
        for entry_id in done:
            self.held.pop(entry_id, None)
        self.service.count("fills", finished.emitted + finished.dead)
        self.service.count("trades", finished.emitted)
        self.service.count("unresolved_markets", unresolved)
        self.service.count("excluded_markets", excluded)
        self.service.count("dead_lettered", finished.dead)
        self.service.count("fills_waiting_again", finished.requeued)
        return finished

    async def release_held_forever(self) -> None:
        """Re-check held entries every interval; keep them ours and their tokens asked for meanwhile."""
        while not self.service.stop.is_set():
            await sleep_unless_stopped(self.service.stop, self.settings.held_check_interval_s)
            if not self.held:
                continue
            try:
                await self.release(list(self.held.values()))
                waiting = list(self.held.values())
                await self.markets.request_lookups({token_of(event) for page in waiting for event in page.events})
                # Other consumers claim entries idle for claim_min_idle_ms: renewing ours a few times within that
                # is enough (an XCLAIM of every held entry each second was a measurable share of Redis' time).
                if time.monotonic() - self.kept_at >= self.consumer.settings.claim_min_idle_ms / 4000:
                    await self.consumer.keep([page.entry.id for page in waiting])
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
