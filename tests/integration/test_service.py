"""The shared service runner: heartbeats with counters, degraded state, graceful SIGTERM, config errors."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time

import pytest
import redis.asyncio as aioredis

from common import keys
from common.config import RedisSettings, StreamSettings, load
from common.errors import TransientSourceError
from common.redis_client import make_redis
from common.service import Service, poll_forever, run_worker, service_main
from common.streams import Entry, StreamConsumer, run_consumer
from tests.fixtures.slow_consumer import STREAM


async def test_heartbeat_records_state_counters_and_final_stop(redis_settings, redis_client: aioredis.Redis) -> None:
    seen_running: dict[bytes, bytes] = {}

    async def body(service: Service) -> None:
        service.count("fetched", 7)
        await service.write_heartbeat()
        seen_running.update(await redis_client.hgetall(keys.service_key("demo")))

    await run_worker("demo", redis_settings, body)

    assert seen_running[b"state"] == b"running"
    assert seen_running[b"count:fetched"] == b"7"
    assert abs(float(seen_running[b"heartbeat_at"]) - time.time()) < 5
    final = await redis_client.hgetall(keys.service_key("demo"))
    assert final[b"state"] == b"stopped"


async def test_a_source_is_polled_every_interval_from_the_start_of_each_step(redis_settings) -> None:
    starts: list[float] = []

    async def body(service: Service) -> None:
        async def slow_step() -> bool:
            starts.append(time.monotonic())
            if len(starts) == 4:
                service.stop.set()
            await asyncio.sleep(0.4)  # a step that takes most of the interval
            return False

        await poll_forever(service, slow_step, interval_s=0.6)

    await run_worker("poller", redis_settings, body)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # every 0.6 s from one start to the next; sleeping the interval after each step would make it 1.0 s
    assert len(gaps) == 3 and all(0.55 < gap < 0.9 for gap in gaps), gaps


async def test_failing_source_degrades_then_recovers_without_crashing(redis_settings, redis_client) -> None:
    calls = 0
    states: list[str] = []

    async def body(service: Service) -> None:
        async def step() -> bool:
            nonlocal calls
            calls += 1
            states.append(service.state)
            if calls <= 2:
                raise TransientSourceError("HTTP 503 from upstream")
            return False

        await poll_forever(service, step, interval_s=0.01, once=True, max_backoff_s=0.05)
        assert service.state == "running"
        assert service.last_error == "HTTP 503 from upstream"
        assert service.counters["errors"] == 2

    await run_worker("flaky", redis_settings, body)
    assert calls == 3
    assert states == ["running", "degraded", "degraded"]


async def test_sigterm_finishes_the_batch_in_hand(redis_server, redis_client: aioredis.Redis) -> None:
    for i in range(5):
        await redis_client.xadd(STREAM, {"data": str(i)})
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.slow_consumer", str(redis_server.port)], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    while process.stdout.readline().strip() != b"batch started":  # log lines come first
        pass
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    # the batch that was in hand when the signal came was finished and acked
    assert (await redis_client.xpending(STREAM, "g"))["pending"] == 0
    heartbeat = await redis_client.hgetall(keys.service_key("slow_consumer"))
    assert heartbeat[b"state"] == b"stopped" and heartbeat[b"count:processed"] == b"5"


def test_bad_setting_exits_2_with_one_line_naming_it(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_PORT", "six")

    async def start(_: object) -> None:
        load(RedisSettings)

    assert service_main("demo", start, "demo service", []) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("demo: invalid configuration: REDIS_PORT")
    assert "\n" not in err


def test_help_exits_zero(capsys) -> None:
    async def start(_: object) -> None:
        raise AssertionError("must not start")

    with pytest.raises(SystemExit) as info:
        service_main("demo", start, "demo service", ["--help"])
    assert info.value.code == 0
    assert "--once" in capsys.readouterr().out


async def test_stop_wakes_a_long_sleep_promptly(redis_settings) -> None:
    async def body(service: Service) -> None:
        asyncio.get_running_loop().call_later(0.1, service.stop.set)
        started = time.monotonic()
        await poll_forever(service, _nothing, interval_s=30)
        assert time.monotonic() - started < 2

    await run_worker("sleeper", redis_settings, body)


async def _nothing() -> bool:
    return False


async def test_stop_abandons_a_step_stuck_in_retries_after_the_grace(redis_settings, monkeypatch) -> None:
    monkeypatch.setattr("common.service.STOP_GRACE_S", 0.3)
    cancelled = asyncio.Event()

    async def stuck_step() -> bool:
        try:
            await asyncio.sleep(60)  # e.g. request_json backing off between retries of an unreachable source
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return False

    async def body(service: Service) -> None:
        asyncio.get_running_loop().call_later(0.1, service.stop.set)
        await poll_forever(service, stuck_step, interval_s=1)

    started = time.monotonic()
    await run_worker("stuck", redis_settings, body)
    assert time.monotonic() - started < 2
    assert cancelled.is_set()


async def test_consumer_waits_for_redis_instead_of_crashing(redis_server, redis_client) -> None:
    await redis_client.xadd(STREAM, {"data": "1"})
    redis_server.kill()
    stop = asyncio.Event()
    seen: list[bytes] = []
    consumer_redis = make_redis(redis_server.settings)
    consumer = StreamConsumer(consumer_redis, stream=STREAM, group="g", consumer="c",
                              settings=StreamSettings(block_ms=50), batch_max=10)  # fmt: skip

    async def handle(batch: list[Entry]) -> None:
        seen.extend(entry.data for entry in batch)
        await consumer.finish([entry.id for entry in batch])
        stop.set()

    task = asyncio.create_task(run_consumer(consumer, handle, stop=stop))
    await asyncio.sleep(0.5)
    assert not task.done()  # still trying, not crashed
    redis_server.start()
    await asyncio.wait_for(task, timeout=15)
    assert seen == [b"1"]
    await consumer_redis.aclose()
