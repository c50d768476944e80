"""The shared service runner: stop signal, heartbeat with counters under `service:<name>`, clean shutdown.

A signal (SIGTERM from supervisord, Ctrl-C) sets `service.stop`; loops check it between batches, so the batch
in hand is finished and acked before the process exits. The heartbeat hash lets the dashboard tell a dead
service (old `heartbeat_at`) from an idle one (fresh heartbeat, flat counters) and a degraded one (state and
`last_error`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
import structlog

from common import keys
from common.backoff import retry_while_down, sleep_unless_stopped
from common.config import LogSettings, RedisSettings, ServiceSettings, load
from common.errors import ConfigError, CursorMoved, PermanentSourceError, SourceError, TransientSinkError
from common.key_prefix import check_key_prefix
from common.log import configure_logging
from common.payloads import Heartbeat, encode_heartbeat
from common.redis_client import make_redis, map_redis_errors

log = structlog.get_logger()


class Service:
    """A running service's name, stop event, state and counters."""

    def __init__(
        self,
        name: str,
        redis: aioredis.Redis,
        settings: ServiceSettings | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.redis = redis
        self.settings = settings or ServiceSettings()
        self.stop = stop or asyncio.Event()
        self.counters: Counter[str] = Counter()
        self.gauges: dict[str, float] = {}
        self.state = "starting"
        # standing conditions an operator must clear (name -> what to tell them): degraded until they are gone
        self.alerts: dict[str, str] = {}
        self.last_error = ""
        self.last_error_at = 0.0
        self.started_at = time.time()

    def __repr__(self) -> str:
        return f"Service(name={self.name!r}, state={self.state!r}, counters={dict(self.counters)})"

    def count(self, counter: str, n: int = 1) -> None:
        self.counters[counter] += n

    def gauge(self, name: str, value: float) -> None:
        """Set a current value (a head block, a size) that the next heartbeat publishes."""
        self.gauges[name] = value

    def degraded(self, error: BaseException | str) -> None:
        self.state = "degraded"
        self.last_error = str(error)[:500]
        self.last_error_at = time.time()
        self.count("errors")

    def healthy(self) -> None:
        """A step went through: running, unless an alert stands (then degraded, its text the last error)."""
        self.state = "degraded" if self.alerts else "running"
        if self.alerts:
            self.last_error = "; ".join(self.alerts.values())[:500]

    def set_alert(self, name: str, message: str | None) -> None:
        """Raise (or, with None, clear) a standing alert: unlike an error, the next good step does not clear it."""
        if message is None:
            self.alerts.pop(name, None)
        elif self.alerts.get(name) != message:
            self.alerts[name] = message
            self.last_error_at = time.time()
        if self.state in ("running", "degraded"):
            self.healthy()

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            state=self.state, pid=os.getpid(), host=socket.gethostname(), started_at=self.started_at,
            heartbeat_at=time.time(), last_error=self.last_error, last_error_at=self.last_error_at,
            counters=dict(self.counters), gauges=dict(self.gauges),
        )  # fmt: skip

    async def write_heartbeat(self) -> None:
        async with map_redis_errors("heartbeat"):
            await self.redis.hset(keys.service_key(self.name), mapping=encode_heartbeat(self.heartbeat()))

    async def heartbeat_forever(self) -> None:
        while not self.stop.is_set():
            try:
                await self.write_heartbeat()
            except TransientSinkError as exc:
                log.warning("heartbeat failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.settings.heartbeat_interval_s)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("stopping: finishing the current batch", signal=sig.name)
        self.state = "stopping"
        self.stop.set()


async def run_service(service: Service, body: Callable[[Service], Awaitable[None]]) -> None:
    """Run `body` with signal handling and a heartbeat; write a final `stopped` state on the way out."""
    with contextlib.suppress(NotImplementedError, RuntimeError):
        service.install_signal_handlers()
    heartbeat = asyncio.create_task(service.heartbeat_forever())
    service.healthy()
    log.info("started", pid=os.getpid())
    try:
        await body(service)
    finally:
        service.stop.set()
        await heartbeat
        service.state = "stopped"
        with contextlib.suppress(TransientSinkError):
            await asyncio.shield(service.write_heartbeat())
        log.info("stopped", **dict(service.counters))


async def run_worker(
    name: str,
    redis_settings: RedisSettings,
    body: Callable[[Service], Awaitable[None]],
    *,
    stop: asyncio.Event | None = None,
) -> Service:
    """Connect to Redis, run `body` as service `name` (see run_service), close the connection.

    `stop` lets an embedding program (tests, the benchmark) stop the service as a signal would.
    """
    redis = make_redis(redis_settings)
    service = Service(name, redis, load(ServiceSettings), stop=stop)
    log.info("redis", at=redis_settings.describe(), key_prefix=keys.PREFIX)  # describe() shows no password
    try:
        await refuse_stranded_keys(redis)
        await run_service(service, body)
    finally:
        await redis.aclose()
    return service


async def refuse_stranded_keys(redis: aioredis.Redis) -> None:
    """ConfigError when the pipeline's keys live under another REDIS_KEY_PREFIX; unchecked (said so) when Redis
    cannot answer yet: the service then waits for it as for any outage."""
    try:
        async with map_redis_errors("check the key prefix"):
            await check_key_prefix(redis)
    except TransientSinkError as exc:
        log.warning("key prefix not checked: redis unreachable", error=str(exc))


# On stop, a step in progress gets this long to finish its page; then it is cancelled (see _step_or_stop).
STOP_GRACE_S = 5.0


async def poll_forever(
    service: Service,
    step: Callable[[], Awaitable[bool]],
    *,
    interval_s: float,
    once: bool = False,
    max_backoff_s: float = 60.0,
) -> None:
    """Call `step` every `interval_s` (from the start of one call to the next) until the service stops; `step`
    returns True when more work is ready right away.

    An unreachable source or sink degrades the service and backs off (never a crash loop), at least as long as
    the server's Retry-After; a permanent source error backs off longer, because retrying at once cannot help.
    CursorMoved means another writer moved the cursor: `step` re-reads it on its next call. `once=True` returns
    when `step` reports nothing left.
    """
    while not service.stop.is_set():
        started = time.monotonic()
        try:
            more = await retry_while_down(lambda: _step_or_stop(service, step), stop=service.stop,
                                          event="step failed; backing off", on_error=service.degraded,
                                          retry_on=(SourceError, TransientSinkError), base_s=1.0,
                                          max_s=max_backoff_s, delay_s=_step_delay_s)  # fmt: skip
        except CursorMoved as exc:
            log.warning("cursor moved under us; re-reading it", error=str(exc))
            continue
        if more is None:
            return  # stopped
        service.healthy()
        if not more:
            if once:
                return
            # every interval_s from the start of the last step, not after it: a source polled every second is
            # read every second, however long a step took (less latency on a slow machine)
            await sleep_unless_stopped(service.stop, max(0.0, interval_s - (time.monotonic() - started)))


def _step_delay_s(exc: BaseException, backoff_s: float) -> float:
    """A permanent source error waits five times longer (retrying at once cannot help); a server's Retry-After is
    honoured."""
    delay_s = backoff_s * (5 if isinstance(exc, PermanentSourceError) else 1)
    return max(delay_s, getattr(exc, "retry_after_s", None) or 0.0)


async def _step_or_stop(service: Service, step: Callable[[], Awaitable[bool]]) -> bool:
    """Run one step; if the service is told to stop meanwhile, give it STOP_GRACE_S, then cancel it.

    A step may be deep in HTTP retries with long backoffs when SIGTERM comes; waiting them out would outlast
    supervisord's patience. Cancelling is safe: a page and its cursor are one compare-and-set script, so the
    page was either written with its cursor or not at all, and the next start goes on from the cursor in Redis.
    """
    task = asyncio.ensure_future(step())
    stopped = asyncio.ensure_future(service.stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=STOP_GRACE_S)
        if not task.done():
            log.info("stopping: abandoning the step in progress", grace_s=STOP_GRACE_S)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        return task.result()
    finally:
        stopped.cancel()


# The services allocate a few short-lived containers per stream entry (tuples, structs, lists) and make almost no
# reference cycles, so CPython's default (a generation-0 collection every 700 allocations) is mostly wasted work.
# Generation 0 waits for 20,000 allocations here; the older generations follow at once, so cyclic garbage that
# outlived one collection does not pile up. Measured (bench --quick, 250,000 fills): default 89.6 CPU-µs per fill
# in all, writer 24.0, processor 11.2, writer peak RSS 230 MB; (20,000, 10, 10) 83.6 / 19.6 / 9.6 but 296 MB;
# these 90.8 / 22.0 / 10.4 at a load of 3 (a busier machine), 246 MB. Only the two consumers use them: the Goldsky
# ingester's peak RSS doubles (76 -> 156 MB in --quick, 110 -> 359 MB in the full bench) with any higher
# generation-0 threshold (its pages of parsed JSON are the garbage).
GC_THRESHOLDS = (20_000, 1, 1)


def tune_gc() -> None:
    """Collect less often, and never scan what start-up created (modules, settings): call once, after imports
    (the trade processor's and the writer's `main()`; `service_main` freezes start-up objects for every service)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def service_arguments(description: str, argv: list[str] | None) -> argparse.Namespace:
    """Every service takes `--once` (process what is there, then exit) and `--help`; settings come from env."""
    parser = argparse.ArgumentParser(description=description, epilog="Settings come from the environment and .env.")
    parser.add_argument("--once", action="store_true", help="do the work that is available now, then exit")
    return parser.parse_args(argv)


def service_main(
    name: str,
    start: Callable[[argparse.Namespace], Coroutine[Any, Any, None]],
    description: str,
    argv: list[str] | None = None,
) -> int:
    """`main()` of every service: parse flags, set up logging, run; a bad setting exits 2 with one line."""
    args = service_arguments(description, argv)
    # what start-up created (modules, settings) is never garbage: no collection scans it again (measured, chain
    # ingester: 0.13-0.29 -> 0.06-0.07 CPU-s of GC per 50,000 fills)
    gc.freeze()
    try:
        configure_logging(name, load(LogSettings))
        asyncio.run(start(args))
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
