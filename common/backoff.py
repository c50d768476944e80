"""Exponential backoff with full jitter, shared by every retry loop, and the one loop that retries while a server
is down (`retry_while_down`)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from common.errors import TransientSinkError

log = structlog.get_logger()
T = TypeVar("T")


def compute_backoff_s(attempt: int, *, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1-based): uniform in [0, min(max_s, base_s * 2**(attempt-1))].

    Full jitter spreads retries of many clients so they don't hammer a recovering server together.
    """
    ceiling_s = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0, ceiling_s)


@dataclass
class Backoff:
    """Stateful form for loops: `next_delay_s()` after each failure, `reset()` after a success."""

    base_s: float = 0.5
    max_s: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay_s(self) -> float:
        self.attempt += 1
        return compute_backoff_s(self.attempt, base_s=self.base_s, max_s=self.max_s, rng=self.rng)

    def reset(self) -> None:
        self.attempt = 0


async def sleep_unless_stopped(stop: asyncio.Event, delay_s: float) -> None:
    """Sleep `delay_s`, waking at once when `stop` is set (a SIGTERM must not wait out a long backoff)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay_s)


async def retry_while_down(
    call: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event,
    event: str,
    on_error: Callable[[BaseException], None] | None = None,
    retry_on: tuple[type[BaseException], ...] = (TransientSinkError,),
    base_s: float = 0.2,
    max_s: float = 10.0,
    delay_s: Callable[[BaseException, float], float] | None = None,
    **log_fields: Any,
) -> T | None:
    """`call()`'s result, called again with backoff while it raises one of `retry_on` (by default: Redis or
    ClickHouse unreachable or not ready, as when a service starts before them); None once `stop` is set.

    `call` runs at least once, so work already in hand is finished on a stop, and never after the stop. Each failure
    goes to `on_error` (a service marks itself degraded) and to one log line, `event`. `delay_s(error,
    backoff_delay)` may lengthen a delay (a server's Retry-After).
    """
    backoff = Backoff(base_s=base_s, max_s=max_s)
    while True:
        try:
            return await call()
        except retry_on as exc:
            if on_error is not None:
                on_error(exc)
            if stop.is_set():
                return None
            delay = backoff.next_delay_s() if delay_s is None else delay_s(exc, backoff.next_delay_s())
            log.warning(event, error=str(exc), delay_s=round(delay, 2), **log_fields)
            await sleep_unless_stopped(stop, delay)
            if stop.is_set():
                return None
