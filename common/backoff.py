"""Exponential backoff with full jitter, shared by every retry loop."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field


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
