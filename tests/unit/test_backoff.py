import asyncio
import random

import pytest

from common.backoff import Backoff, compute_backoff_s, retry_while_down
from common.errors import TransientSinkError


def test_backoff_grows_exponentially_and_is_capped() -> None:
    rng = random.Random(1)
    ceilings = [min(8.0, 0.5 * 2 ** (n - 1)) for n in range(1, 10)]
    for attempt, ceiling in enumerate(ceilings, start=1):
        samples = [compute_backoff_s(attempt, base_s=0.5, max_s=8.0, rng=rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # full jitter reaches near the ceiling


def test_backoff_state_resets_after_success() -> None:
    backoff = Backoff(base_s=1.0, max_s=100.0, rng=random.Random(3))
    for _ in range(5):
        backoff.next_delay_s()
    assert backoff.attempt == 5
    backoff.reset()
    assert backoff.next_delay_s() <= 1.0


async def test_retry_while_down_retries_until_the_server_answers() -> None:
    calls, errors = [], []

    async def call() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientSinkError("connection refused", sink="redis")
        return "answered"

    stop = asyncio.Event()
    result = await retry_while_down(call, stop=stop, event="test", on_error=errors.append, base_s=0.001, max_s=0.001)
    assert result == "answered" and len(calls) == 3 and len(errors) == 2


async def test_retry_while_down_runs_once_when_stopped_and_never_after() -> None:
    stop = asyncio.Event()
    stop.set()
    calls = []

    async def down() -> None:
        calls.append(1)
        raise TransientSinkError("down", sink="clickhouse")

    assert await retry_while_down(down, stop=stop, event="test") is None
    assert calls == [1]  # work in hand is tried once on a stop, and not retried


async def test_retry_while_down_lets_other_errors_through() -> None:
    async def broken() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await retry_while_down(broken, stop=asyncio.Event(), event="test")
