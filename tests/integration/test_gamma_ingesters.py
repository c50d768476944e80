"""The Gamma ingesters against the simulator and a real Redis: exact sets, no duplicates, faults, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import structlog

from common import http, keys
from common.config import HttpSettings, RedisSettings, SourceSettings
from common.http import RateLimiter, make_client
from common.service import Service
from ingesters import polymarket_events_ingester as events_ingester
from ingesters import polymarket_ingester as markets_ingester
from ingesters.gamma import Connections, GammaSync, append_changed
from ingesters.gamma_listing import GammaClient, synced
from simulator.server import SimulatorHandle
from tests.fixtures.helpers import items_added, items_in, wait_until

ROOT = Path(__file__).resolve().parents[2]
SYNCED_BOTH = synced(("v1", "v2")).encode()  # a full sync asks for both versions by default
SYNC_KNOBS: dict[str, Any] = {"listing": "keyset", "page_limit": 100, "refresh_s": 0.01}
SIM = {"seed": 5, "markets": 40, "history_fills": 300, "late_listing_delay_s": 3600.0}
HTTP = HttpSettings(
    connect_timeout_s=2, read_timeout_s=2, write_timeout_s=2, pool_timeout_s=2, max_attempts=10, backoff_base_s=0.01,
    backoff_max_s=0.05,
)  # fmt: skip


# --- helpers ---------------------------------------------------------------------------------------------------


def listed(sim: SimulatorHandle) -> tuple[list[Any], list[Any]]:
    """The markets and events Gamma serves right now, per the simulator's own world."""
    world, now = sim.world, time.time()
    markets = [m for m in world.catalogue.markets if world.is_listed(m, now)]
    event_indexes = {m.event_index for m in markets}
    return markets, [e for e in world.catalogue.events if e.index in event_indexes]


async def stream_ids(redis: aioredis.Redis, stream: str) -> Counter[str]:
    return Counter(orjson.loads(item)["id"] for item in items_in(await redis.xrange(stream)))


async def run_markets(
    sim: SimulatorHandle, redis_settings: RedisSettings, *, stop: asyncio.Event | None = None, **changes: Any
) -> Service:
    """The markets ingester once (full sync, lookups), or until `stop` is set when given."""
    settings = markets_ingester.MarketsSettings().model_copy(update={"gamma_rate_per_s": 30.0, **changes})
    source = SourceSettings(gamma_api_url=sim.gamma_url)
    return await markets_ingester.run(settings, Connections(redis_settings, HTTP, source), once=stop is None, stop=stop)


async def run_events(sim: SimulatorHandle, redis_settings: RedisSettings, **changes: Any) -> Service:
    settings = events_ingester.EventsSettings().model_copy(update={"gamma_rate_per_s": 30.0, **changes})
    source = SourceSettings(gamma_api_url=sim.gamma_url)
    return await events_ingester.run(settings, Connections(redis_settings, HTTP, source), once=True)


async def assert_exact_sets(sim: SimulatorHandle, redis: aioredis.Redis) -> None:
    markets, events = listed(sim)
    assert await stream_ids(redis, keys.STREAM_MARKETS) == Counter(m.id for m in markets)
    assert await stream_ids(redis, keys.STREAM_EVENTS) == Counter(e.id for e in events)
    assert {m.closed for m in markets} == {True, False}
    tokens = {t.decode() for t in await redis.hkeys(keys.MARKETS_BY_TOKEN)}
    assert tokens == {t for m in markets for t in m.traded_ids}


def service_env(sim: SimulatorHandle, redis_settings: RedisSettings, tmp_path: Path, **extra: str) -> dict[str, str]:
    return os.environ | {
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_settings.port), "GAMMA_API_URL": sim.gamma_url,
        "LOG_DIR": str(tmp_path / "logs"), "HTTP_BACKOFF_BASE_S": "0.01", "HTTP_BACKOFF_MAX_S": "0.05",
        "SERVICE_HEARTBEAT_INTERVAL_S": "0.2", **extra,
    }  # fmt: skip


# --- full sync, second pass, refresh -----------------------------------------------------------------------------


@pytest.mark.parametrize("listing", ["keyset", "offset"])
async def test_full_sync_appends_exactly_the_simulators_markets_and_events_once(
    listing: str, simulator: Callable[..., SimulatorHandle], redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**SIM)
    # Small pages: several per pass (keyset pages stop at 10 rows, offset ones at 7).
    markets_service = await run_markets(sim, redis_settings, markets_listing=listing, markets_page_limit=10)
    await run_events(sim, redis_settings, events_listing=listing, events_page_limit=7)

    await assert_exact_sets(sim, redis_client)
    assert await redis_client.get(keys.STATE_POLYMARKET_OFFSET) == SYNCED_BOTH
    assert await redis_client.get(keys.STATE_POLYMARKET_EVENTS_OFFSET) == SYNCED_BOTH
    assert markets_service.counters["pages"] > 4
    lengths = [await items_added(redis_client, stream) for stream in (keys.STREAM_MARKETS, keys.STREAM_EVENTS)]

    # A second full sync over unchanged data, then a refresh pass: nothing appended.
    await redis_client.delete(keys.STATE_POLYMARKET_OFFSET, keys.STATE_POLYMARKET_EVENTS_OFFSET)
    again = await run_markets(sim, redis_settings, markets_listing=listing)
    await run_events(sim, redis_settings, events_listing=listing)
    refresh = await run_markets(sim, redis_settings, markets_listing=listing)
    assert again.counters["appended"] == refresh.counters["appended"] == 0 and refresh.counters["pages"] >= 1
    assert [await items_added(redis_client, stream) for stream in (keys.STREAM_MARKETS, keys.STREAM_EVENTS)] == lengths
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0


async def test_refresh_appends_a_changed_market_and_a_new_market_once(
    simulator: Callable[..., SimulatorHandle], redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**SIM)
    await run_markets(sim, redis_settings)
    await run_events(sim, redis_settings)
    before_markets = await stream_ids(redis_client, keys.STREAM_MARKETS)
    before_events = await stream_ids(redis_client, keys.STREAM_EVENTS)

    changed = next(m for m in sim.world.catalogue.markets if m.listing == "listed" and not m.closed)
    changed.price = round(changed.price + changed.tick, 4)
    changed.volume += 1234.5
    sim.list_late_markets()
    late = [m for m in sim.world.catalogue.markets if m.listing == "late"]
    assert late
    for _ in range(2):  # the second refresh finds nothing new
        await run_markets(sim, redis_settings)
        await run_events(sim, redis_settings)

    # Every market embeds its parent event, whose volume sums its markets: the siblings changed too.
    siblings = [
        sim.world.catalogue.markets[i].id for i in sim.world.catalogue.events[changed.event_index].market_indexes
    ]
    new_markets = await stream_ids(redis_client, keys.STREAM_MARKETS) - before_markets
    assert new_markets == Counter([*siblings, *(m.id for m in late)])
    new_events = await stream_ids(redis_client, keys.STREAM_EVENTS) - before_events
    event_ids = [sim.world.catalogue.events[m.event_index].id for m in (changed, *late)]
    assert new_events == Counter(event_ids)
    entries = [orjson.loads(item) for item in items_in(await redis_client.xrange(keys.STREAM_MARKETS))]
    assert [e["volumeNum"] for e in entries if e["id"] == changed.id][-1] == round(changed.volume, 6)


async def test_a_market_that_closes_between_refreshes_is_appended_in_its_closed_state(
    simulator: Callable[..., SimulatorHandle], redis_client: aioredis.Redis
) -> None:
    sim = simulator(**SIM)
    async with make_client(HTTP, base_url=sim.gamma_url) as client:
        gamma = GammaClient(client, HTTP, RateLimiter(30))
        sync = GammaSync(Service("t", redis_client), markets_ingester.MARKETS, gamma, **SYNC_KNOBS)
        while await sync.step():  # the full sync
            pass
        market = next(m for m in sim.world.catalogue.markets if m.listing == "listed" and not m.closed)
        market.closed, market.price = True, 1.0  # resolved: it leaves the closed=false listing
        await asyncio.sleep(0.02)  # refresh_s
        while await sync.step():  # one refresh pass, then the markets that left it
            pass
    entries = [orjson.loads(item) for item in items_in(await redis_client.xrange(keys.STREAM_MARKETS))]
    mine = [e for e in entries if e["id"] == market.id]
    assert [e["closed"] for e in mine] == [False, True] and mine[-1]["outcomePrices"] == '["1", "0"]'


async def test_a_3000_market_sync_completes_by_keyset_and_without_keyset_stops_at_offset_2000_saying_why(
    simulator: Callable[..., SimulatorHandle], redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**{**SIM, "markets": 3_000})
    markets, _ = listed(sim)
    assert len(markets) > 2_500 and sum(not m.closed for m in markets) > 2_000  # the open pass alone passes 2,000

    service = await run_markets(sim, redis_settings)  # auto: keyset, 100 markets a page

    assert await redis_client.get(keys.STATE_POLYMARKET_OFFSET) == SYNCED_BOTH
    assert await stream_ids(redis_client, keys.STREAM_MARKETS) == Counter(m.id for m in markets)
    assert service.counters["pages"] >= len(markets) // 100

    # The same world without keyset: offset serves up to offset 2,000 (the page there is the last), then Gamma's 422
    # on the next page stops the sync, loudly.
    await redis_client.flushdb()
    sim.set_switches(keyset_off=True)
    stop = asyncio.Event()
    running = asyncio.create_task(run_markets(sim, redis_settings, stop=stop))

    async def degraded() -> dict[bytes, bytes] | None:
        fields = await redis_client.hgetall(keys.service_key("polymarket_ingester"))
        return fields if fields.get(b"state") == b"degraded" else None

    heartbeat = await wait_until(degraded, "a degraded heartbeat", timeout_s=60)
    stop.set()
    await running
    error = heartbeat[b"last_error"].decode()
    assert "offset too large, use /markets/keyset for deeper pagination" in error, error
    assert "MARKETS_LISTING" in error and "refused offset 2100" in error and "not complete" in error
    # no claim of completion: the cursor waits at the refused page, and only what offset served was appended
    assert await redis_client.get(keys.STATE_POLYMARKET_OFFSET) == b"offset closed=false versions=v1,v2 after=2100"
    assert await items_added(redis_client, keys.STREAM_MARKETS) == 2_100


async def test_auto_listing_falls_back_to_offset_when_gamma_has_no_keyset(redis_client: aioredis.Redis) -> None:
    rows = [
        {"id": str(i), "conditionId": "0x1", "clobTokenIds": f'["{i}1", "{i}2"]', "closed": i % 3 == 0}
        for i in range(9)
    ]
    paths: list[str] = []

    def gamma_without_keyset(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/keyset"):
            return httpx.Response(404, json={"error": "not found"})
        closed, offset = request.url.params["closed"] == "true", int(request.url.params["offset"])
        matching = [r for r in rows if r["closed"] == closed]
        return httpx.Response(200, json=matching[offset : offset + 2])

    client = httpx.AsyncClient(transport=httpx.MockTransport(gamma_without_keyset), base_url="http://gamma")
    gamma = GammaClient(client, HTTP, RateLimiter(1000))
    sync = GammaSync(Service("t", redis_client), markets_ingester.MARKETS, gamma, **SYNC_KNOBS | {"listing": "auto"})
    while await sync.step():
        pass
    await client.aclose()
    assert paths.count("/markets/keyset") == 1 and sync.listing == "offset"
    assert await stream_ids(redis_client, keys.STREAM_MARKETS) == Counter(r["id"] for r in rows)
    assert await redis_client.hlen(keys.MARKETS_BY_TOKEN) == 18


# --- token lookups -----------------------------------------------------------------------------------------------


async def test_token_lookups_resolve_open_and_closed_markets_and_drop_unknown_ids(
    simulator: Callable[..., SimulatorHandle], redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**SIM)
    markets, _ = listed(sim)
    wanted = [m for m in markets if m.closed][:2] + [m for m in markets if not m.closed][:23]
    assert {m.version for m in wanted} >= {"v1", "v2"}  # CTF token ids and position ids, looked up by kind
    truth = sim.truth(fills=False)
    unknown = [*truth["unlisted_token_ids"], *truth["combo_position_ids"][:2], "123456789"]
    await redis_client.sadd(keys.TOKEN_LOOKUPS, *[m.traded_ids[0] for m in wanted], *unknown)

    service = Service("lookups", redis_client)
    async with make_client(HTTP, base_url=sim.gamma_url) as client:
        gamma = GammaClient(client, HTTP, RateLimiter(30))
        batches = 0
        while await markets_ingester.resolve_token_lookups(service, gamma, 10) or batches == 0:
            batches += 1
        await redis_client.sadd(keys.TOKEN_LOOKUPS, wanted[0].traded_ids[1])  # a known market, asked again
        await markets_ingester.resolve_token_lookups(service, gamma, 10)

    assert batches >= 3 and await redis_client.scard(keys.TOKEN_LOOKUPS) == 0
    assert await stream_ids(redis_client, keys.STREAM_MARKETS) == Counter(m.id for m in wanted)
    by_token = {k.decode(): orjson.loads(v) for k, v in (await redis_client.hgetall(keys.MARKETS_BY_TOKEN)).items()}
    assert set(by_token) == {t for m in wanted for t in m.traded_ids}  # both outcomes of every resolved market
    closed = wanted[0]
    assert by_token[closed.traded_ids[1]] == {
        "market_id": closed.id,
        "condition_id": closed.condition_id,
        "question": closed.question,
        "outcome": closed.outcomes[1],
        "outcome_index": 1,
    }


# --- faults, malformed items, crashes, configuration -------------------------------------------------------------


async def test_ingesters_end_with_the_exact_sets_under_injected_faults(
    simulator: Callable[..., SimulatorHandle], redis_client: aioredis.Redis, redis_settings: RedisSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faults = {"429": 0.05, "500": 0.05, "timeout": 0.05, "truncate": 0.05, "retry_after_s": 0, "timeout_s": 0.1}
    sim = simulator(**SIM, faults=faults)
    # A fresh logger: the module's own may be bound already, for good, by an earlier test's configure_logging
    # (cache_logger_on_first_use), and would then write past the capture.
    monkeypatch.setattr(http, "log", structlog.get_logger())
    with structlog.testing.capture_logs() as logs:
        markets_service = await run_markets(sim, redis_settings, markets_page_limit=5)
        await run_events(sim, redis_settings, events_page_limit=5, events_listing="offset")
    await assert_exact_sets(sim, redis_client)
    retries = [entry for entry in logs if entry["event"] == "retrying request"]
    assert retries and {entry["what"].split()[1] for entry in retries} == {"markets", "events"}
    assert markets_service.counters["pages"] >= 8
    assert sum(sim.config()["faults_injected"].values()) >= len(retries) // 2


async def test_a_malformed_market_goes_to_the_dlq_while_the_rest_of_the_page_is_ingested(
    simulator: Callable[..., SimulatorHandle], redis_client: aioredis.Redis
) -> None:
    sim = simulator(**SIM)
    async with make_client(HTTP, base_url=sim.gamma_url) as client:
        page = (await client.get("/markets", params={"limit": 5, "closed": "false"})).json()
    page[2]["clobTokenIds"] = "8851,1018"  # not a JSON-encoded list
    page.insert(4, ["not", "an", "object"])

    await append_changed(redis_client, markets_ingester.MARKETS, page, (None, "offset closed=false after=6"))
    good = [m["id"] for m in page if isinstance(m, dict) and m is not page[2]]
    assert await stream_ids(redis_client, keys.STREAM_MARKETS) == Counter(good)
    letters = [orjson.loads(fields[b"data"]) for _, fields in await redis_client.xrange(keys.STREAM_DLQ)]
    assert [orjson.loads(d["payload"]) for d in letters] == [page[2], page[4]]
    assert (
        "clobTokenIds is not a JSON-encoded list" in letters[0]["error"] and letters[0]["stream"] == keys.STREAM_MARKETS
    )
    assert "not an object" in letters[1]["error"]
    assert await redis_client.get(keys.STATE_POLYMARKET_OFFSET) == b"offset closed=false after=6"
    # The same page again (a refresh): nothing appended, nothing dead-lettered twice.
    await append_changed(redis_client, markets_ingester.MARKETS, page, None)
    assert await items_added(redis_client, keys.STREAM_MARKETS) == len(good)
    assert await redis_client.xlen(keys.STREAM_DLQ) == 2


async def test_sigkill_mid_sync_then_restart_ends_with_the_exact_set_and_sigterm_stops_cleanly(
    simulator: Callable[..., SimulatorHandle],
    redis_client: aioredis.Redis,
    redis_settings: RedisSettings,
    tmp_path: Path,
) -> None:
    sim = simulator(**SIM)
    env = service_env(
        sim, redis_settings, tmp_path, MARKETS_LISTING="offset", MARKETS_PAGE_LIMIT="2", GAMMA_RATE_PER_S="8"
    )
    command = [sys.executable, "-m", "ingesters.polymarket_ingester"]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def mid_sync() -> bool:
        state = (await redis_client.get(keys.STATE_POLYMARKET_OFFSET) or b"").decode()
        return state.startswith("offset closed=false versions=v1,v2 after=") and int(state.rsplit("=", 1)[1]) >= 6

    await wait_until(mid_sync, "the first pages of the sync", timeout_s=20)
    first.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    assert 0 < await items_added(redis_client, keys.STREAM_MARKETS) < len(listed(sim)[0])

    env["GAMMA_RATE_PER_S"] = "30"
    second = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def synced() -> bool:
        return await redis_client.get(keys.STATE_POLYMARKET_OFFSET) == SYNCED_BOTH

    await wait_until(synced, "the end of the full sync", timeout_s=20)
    second.send_signal(signal.SIGTERM)
    assert second.wait(10) == 0, second.stderr.read().decode() if second.stderr else ""
    assert await redis_client.hget(keys.service_key("polymarket_ingester"), "state") == b"stopped"
    markets, _ = listed(sim)
    assert await stream_ids(redis_client, keys.STREAM_MARKETS) == Counter(m.id for m in markets)


async def test_an_unreachable_gamma_degrades_the_service_instead_of_crashing_it(
    redis_client: aioredis.Redis, redis_settings: RedisSettings, tmp_path: Path, simulator: Callable[..., Any]
) -> None:
    sim = simulator(**SIM)
    env = service_env(sim, redis_settings, tmp_path, GAMMA_API_URL="http://127.0.0.1:9/gamma", HTTP_MAX_ATTEMPTS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "ingesters.polymarket_events_ingester"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )

    async def degraded() -> bool:
        return await redis_client.hget(keys.service_key("polymarket_events_ingester"), "state") == b"degraded"

    await wait_until(degraded, "a degraded heartbeat", timeout_s=20)
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert await redis_client.exists(keys.STREAM_EVENTS, keys.STATE_POLYMARKET_EVENTS_OFFSET) == 0


@pytest.mark.parametrize(
    ("module", "variable"),
    [("polymarket_ingester", "MARKETS_REFRESH_S"), ("polymarket_events_ingester", "EVENTS_LISTING")],
)
def test_a_bad_setting_exits_non_zero_with_one_line_naming_the_variable(
    module: str, variable: str, tmp_path: Path
) -> None:
    env = os.environ | {variable: "abc", "LOG_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", f"ingesters.{module}", "--once"], cwd=ROOT, env=env, capture_output=True, timeout=30
    )
    assert done.returncode != 0
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and "abc" in lines[0]
