"""Both fill ingesters against the simulator and a real Redis: exact sets, crashes, faults, poison, parity.

"Exact" means the stream holds every fill id the simulator's ground truth says the source serves, once.
Crash tests run the service as a subprocess (env pointing at the simulator and Redis) and SIGKILL it mid-ingest.
"""

from __future__ import annotations

import asyncio
import os
import random
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
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr

from common import keys
from common.config import HttpSettings, RedisSettings, SourceSettings
from common.exchanges import ALL_EXCHANGES, V1_EXCHANGES
from common.http import RateLimiter
from common.payloads import OrderEvent, decode_order_event
from common.service import Service, poll_forever, run_worker
from ingesters import chain_ingester, goldsky_ingester
from ingesters.bounded_cache import BoundedCache
from ingesters.chain_ingester import ChainConfig, ChainSettings, Node
from ingesters.goldsky_ingester import GoldskyConfig, GoldskySettings, RangeIngester, Subgraph
from tests.fixtures.helpers import items_added, items_in, wait_until
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.simulator import SimulatorFactory

ROOT = Path(__file__).resolve().parents[2]
# A v1 history with two bursts of 2,300 fills in one second (> 2 pages of 1,000), and a v2 part after the cutover.
WORLD = {"seed": 11, "markets": 20, "history_fills": 10_000, "burst_fills": 2_300, "bursts_per_part": 2}
FAST_HTTP = HttpSettings(read_timeout_s=1.0, connect_timeout_s=1.0, backoff_base_s=0.02, backoff_max_s=0.3)
FIELDS = ("tx_hash", "order_hash", "timestamp", "maker", "taker", "maker_asset_id", "taker_asset_id")
AMOUNTS = ("maker_amount", "taker_amount", "fee")


# --- helpers -------------------------------------------------------------------------------------------------


def sources(sim: Any) -> SourceSettings:
    return SourceSettings(goldsky_url=sim.goldsky_url, polygon_rpc_url=SecretStr(sim.rpc_url))


def goldsky_config(sim: Any, redis_settings: RedisSettings, **knobs: Any) -> GoldskyConfig:
    return GoldskyConfig(GoldskySettings(**knobs), sources(sim), FAST_HTTP, redis_settings)


def chain_config(sim: Any, redis_settings: RedisSettings, **knobs: Any) -> ChainConfig:
    return ChainConfig(ChainSettings(**knobs), sources(sim), FAST_HTTP, redis_settings)


async def stream_events(client: aioredis.Redis, stream: str = keys.STREAM_ORDER_EVENTS) -> list[OrderEvent]:
    return [decode_order_event(item) for item in items_in(await client.xrange(stream))]


def sync_events(port: int) -> list[OrderEvent]:
    with redis.Redis(port=port) as client:
        return [decode_order_event(item) for item in items_in(client.xrange(keys.STREAM_ORDER_EVENTS))]


def goldsky_truth(truth: dict[str, Any]) -> list[dict[str, Any]]:
    return [fill for fill in truth["fills"] if "goldsky" in fill["sources"]]


def assert_exact(events: list[OrderEvent], expected: list[dict[str, Any]]) -> None:
    ids = [e.id for e in events]
    duplicates = [fid for fid, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} duplicate fills, e.g. {duplicates[:2]}"
    missing = {f["id"] for f in expected} - set(ids)
    extra = set(ids) - {f["id"] for f in expected}
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} unexpected"


def assert_fields_match(events: list[OrderEvent], expected: list[dict[str, Any]]) -> None:
    by_id = {f["id"]: f for f in expected}
    for event in events:
        fill = by_id[event.id]
        assert [getattr(event, k) for k in FIELDS + AMOUNTS] == [fill[k] for k in FIELDS + AMOUNTS], event.id


def service_env(sim: Any, redis_server: RedisServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLDSKY_", "CHAIN_", "HTTP_", "REDIS_"))}
    env.update(sim.env())
    env.update(REDIS_HOST="127.0.0.1", REDIS_PORT=str(redis_server.port), LOG_DIR=str(tmp_path / "logs"))
    env.update(HTTP_READ_TIMEOUT_S="1", HTTP_BACKOFF_BASE_S="0.02", HTTP_BACKOFF_MAX_S="0.3", LOG_FORMAT="json")
    env.update(extra)
    return env


def kill_repeatedly(cmd: list[str], env: dict[str, str], port: int, kills: int, seed: int) -> int:
    """Start `cmd`, SIGKILL it at a random moment after it wrote something, `kills` times; returns kills done."""
    rng, done = random.Random(seed), 0
    with redis.Redis(port=port) as client:
        for _ in range(kills):
            before = client.xlen(keys.STREAM_ORDER_EVENTS)
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wrote_or_ended = lambda n=before, p=proc: client.xlen(keys.STREAM_ORDER_EVENTS) > n or p.poll() is not None  # noqa: E731
            wait_until(wrote_or_ended, "a page", timeout_s=30, interval_s=0.01)
            time.sleep(rng.uniform(0.0, 0.12))
            if proc.poll() is not None:  # finished before the kill: nothing left to interrupt
                assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
                break
            proc.kill()
            proc.wait(10)
            done += 1
    return done


def run_to_end(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def log_events(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


# --- Goldsky -------------------------------------------------------------------------------------------------


async def test_goldsky_stream_holds_exactly_the_truth_across_bursts_larger_than_a_page(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**WORLD)
    expected = goldsky_truth(sim.truth())
    assert max(Counter(f["timestamp"] for f in expected).values()) > 2_000  # the burst the cursor must survive

    service = await goldsky_ingester.run(goldsky_config(sim, redis_settings), once=True)

    events = await stream_events(redis_client)
    assert_exact(events, expected)
    assert_fields_match(events, expected)
    assert all(e.source == "goldsky" and e.exchange == "" and e.block_number == 0 for e in events)
    last = max((f["timestamp"], f["id"]) for f in expected)
    cursor = await redis_client.mget(keys.STATE_GOLDSKY_LAST_TIMESTAMP, keys.STATE_GOLDSKY_LAST_ID)
    assert (int(cursor[0]), cursor[1].decode()) == last
    assert service.counters["fills"] == len(expected)
    heartbeat = await redis_client.hgetall(keys.service_key("goldsky_ingester"))
    assert heartbeat[b"state"] == b"stopped" and int(heartbeat[b"count:fills"]) == len(expected)


async def test_goldsky_parallel_backfill_of_4_ranges_gives_the_same_set_and_resumes_to_nothing(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**WORLD)
    expected = goldsky_truth(sim.truth())
    first, last = min(f["timestamp"] for f in expected), max(f["timestamp"] for f in expected)
    config = goldsky_config(sim, redis_settings)
    reports: list[tuple[int, int]] = []

    appended = await goldsky_ingester.backfill(
        config, start_ts=first, end_ts=last, workers=4, progress=lambda d, t: reports.append((d, t))
    )

    events = await stream_events(redis_client)
    assert appended == len(expected)
    assert_exact(events, expected)
    assert reports[-1] == (last - first + 1, last - first + 1)
    assert len(await redis_client.keys("state:goldsky_backfill:*:last_id")) == 4
    # A second run over the same range resumes every finished range: nothing is appended twice.
    assert await goldsky_ingester.backfill(config, start_ts=first, end_ts=last, workers=2) == 0
    assert await items_added(redis_client, keys.STREAM_ORDER_EVENTS) == len(expected)


SlowGoldsky = tuple[list[dict[str, Any]], dict[str, str]]  # the truth's Goldsky fills, the service environment


@pytest.fixture
def slow_goldsky(
    simulator: SimulatorFactory, redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> SlowGoldsky:
    """The Goldsky truth and a service environment whose ingest is long enough to be interrupted many times:
    pages of 150 fills and 20 ms per request. (`redis_client` flushes the session's Redis first.)"""
    sim = simulator(**WORLD, faults="latency_ms=20")
    return goldsky_truth(sim.truth()), service_env(sim, redis_server, tmp_path, GOLDSKY_PAGE_SIZE="150")


def test_goldsky_killed_10_times_mid_ingest_still_ends_with_the_exact_set(
    slow_goldsky: SlowGoldsky, redis_server: RedisServer
) -> None:
    expected, env = slow_goldsky
    cmd = [sys.executable, "-m", "ingesters.goldsky_ingester", "--once"]

    assert kill_repeatedly(cmd, env, redis_server.port, kills=10, seed=1) == 10
    run_to_end(cmd, env)

    assert_exact(sync_events(redis_server.port), expected)


def test_goldsky_sigterm_finishes_the_page_in_hand_and_exits_cleanly(
    slow_goldsky: SlowGoldsky, redis_server: RedisServer
) -> None:
    expected, env = slow_goldsky
    cmd = [sys.executable, "-m", "ingesters.goldsky_ingester"]  # following the subgraph, not --once
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with redis.Redis(port=redis_server.port) as client:
        wait_until(lambda: client.xlen(keys.STREAM_ORDER_EVENTS) > 0, "a first page", timeout_s=30, interval_s=0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert client.hget(keys.service_key("goldsky_ingester"), "state") == b"stopped"
        assert 0 < int(client.hget(keys.STREAM_ITEMS, keys.STREAM_ORDER_EVENTS) or 0) < len(expected)

    run_to_end([*cmd, "--once"], env)  # resumes from the cursor the stopped process left

    assert_exact(sync_events(redis_server.port), expected)


def test_goldsky_backfill_killed_mid_way_resumes_every_range_without_gap_or_duplicate(
    slow_goldsky: SlowGoldsky, redis_server: RedisServer
) -> None:
    expected, env = slow_goldsky
    first, last = min(f["timestamp"] for f in expected), max(f["timestamp"] for f in expected)
    cmd = [sys.executable, "-m", "pipeline", "backfill", "goldsky", "--from", str(first), "--to", str(last),
           "--workers", "4"]  # fmt: skip

    assert kill_repeatedly(cmd, env, redis_server.port, kills=4, seed=2) == 4
    # Restarted with another worker count: the stored split (4 ranges) is resumed, not replaced.
    run_to_end([*cmd[:-1], "3"], env)

    assert_exact(sync_events(redis_server.port), expected)


# --- chain ---------------------------------------------------------------------------------------------------

# eth_getLogs caps spans at 300 blocks and responses at 2,500 logs (the bursts have 2,300 fills in one block).
CHAIN_WORLD = {**WORLD, "max_block_range": 300, "max_logs": 2_500}


def finalized_truth(truth: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in truth["fills"] if f["block_number"] <= truth["finalized_block"]]


async def test_chain_ingests_the_finalized_truth_across_the_cutover_shrinking_on_range_errors(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    # Live blocks keep coming while `finalized` is stalled: fills above it must not be read.
    sim = simulator(**CHAIN_WORLD, rate=300, live_block_interval_s=0.05, faults="finalized_stall=1")
    finalized = sim.truth(fills=False)["finalized_block"]
    wait_until(lambda: sim.truth(fills=False)["head_block"] > finalized + 30, "live blocks above finalized",
               timeout_s=10, interval_s=0.01)  # fmt: skip
    truth = sim.truth()
    expected = finalized_truth(truth)
    assert truth["finalized_block"] == finalized and len(expected) < truth["count"]
    config = chain_config(sim, redis_settings, start_block=truth["first_block"], initial_span_blocks=2_000)

    service = await chain_ingester.run(config, once=True)

    events = await stream_events(redis_client)
    assert_exact(events, expected)
    assert_fields_match(events, expected)
    by_id = {f["id"]: f for f in expected}
    assert all(
        (e.exchange, e.block_number, e.log_index)
        == tuple(by_id[e.id][k] for k in ("exchange", "block_number", "log_index"))
        for e in events
    )
    assert {e.exchange for e in events} == ALL_EXCHANGES  # both sides of the cutover, ExchangeV3 included
    assert max(e.block_number for e in events) <= truth["finalized_block"]
    assert int(await redis_client.get(keys.STATE_CHAIN_LAST_BLOCK)) == truth["finalized_block"]
    assert service.counters["range_too_large"] >= 2
    # The stalled finality shows: the heartbeat carries the safe head and a chain head above it.
    heartbeat = await redis_client.hgetall(keys.service_key(chain_ingester.NAME))
    assert int(heartbeat[b"gauge:safe_head"]) == truth["finalized_block"]
    assert int(heartbeat[b"gauge:chain_head"]) >= truth["head_block"] > truth["finalized_block"] + 30


async def test_chain_falls_back_to_head_minus_confirmations_when_finalized_is_off(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**CHAIN_WORLD)
    truth = sim.truth()
    safe = truth["head_block"] - 500
    config = chain_config(sim, redis_settings, start_block=truth["first_block"], use_finalized=False, confirmations=500)

    await chain_ingester.run(config, once=True)

    assert_exact(await stream_events(redis_client), [f for f in truth["fills"] if f["block_number"] <= safe])
    assert int(await redis_client.get(keys.STATE_CHAIN_LAST_BLOCK)) == safe
    heartbeat = await redis_client.hgetall(keys.service_key(chain_ingester.NAME))
    assert (int(heartbeat[b"gauge:chain_head"]), int(heartbeat[b"gauge:safe_head"])) == (truth["head_block"], safe)


def test_chain_killed_10_times_mid_ingest_still_ends_with_the_exact_set(
    simulator: SimulatorFactory, redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    sim = simulator(**{**CHAIN_WORLD, "history_fills": 5_000}, faults="latency_ms=20")
    truth = sim.truth()
    env = service_env(
        sim, redis_server, tmp_path, CHAIN_START_BLOCK=str(truth["first_block"]), CHAIN_MAX_SPAN_BLOCKS="40"
    )
    cmd = [sys.executable, "-m", "ingesters.chain_ingester", "--once"]

    assert kill_repeatedly(cmd, env, redis_server.port, kills=10, seed=3) == 10
    run_to_end(cmd, env)

    assert_exact(sync_events(redis_server.port), finalized_truth(truth))


async def test_chain_backfill_of_4_ranges_gives_the_same_set(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**CHAIN_WORLD)
    truth = sim.truth()
    config = chain_config(sim, redis_settings)

    await chain_ingester.backfill(config, from_block=truth["first_block"], to_block=truth["finalized_block"], workers=4)

    assert_exact(await stream_events(redis_client), finalized_truth(truth))
    assert len(await redis_client.keys("state:chain_backfill:*:last_block")) == 4


# --- both sources ---------------------------------------------------------------------------------------------


async def test_the_same_fill_from_both_sources_has_the_same_id_and_fields(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**WORLD)
    truth = sim.truth()
    await goldsky_ingester.run(goldsky_config(sim, redis_settings), once=True)
    await chain_ingester.run(chain_config(sim, redis_settings, start_block=truth["first_block"]), once=True)

    by_source: dict[str, dict[str, OrderEvent]] = {"goldsky": {}, "chain": {}}
    for event in await stream_events(redis_client):
        by_source[event.source][event.id] = event
    shared = by_source["goldsky"].keys() & by_source["chain"].keys()
    assert len(shared) == truth["v1_count"] == len(by_source["goldsky"])
    for fid in shared:
        goldsky, chain = by_source["goldsky"][fid], by_source["chain"][fid]
        assert [getattr(goldsky, k) for k in FIELDS + AMOUNTS] == [getattr(chain, k) for k in FIELDS + AMOUNTS]
        assert chain.exchange in V1_EXCHANGES and chain.log_index is not None and chain.block_number > 0


def test_under_20_percent_faults_each_ingester_ends_exact_and_logs_its_retries(
    simulator: SimulatorFactory, redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    faults = "429=0.05,500=0.05,timeout=0.05,truncate=0.05,retry_after_s=0.1,timeout_s=2"
    sim = simulator(**{**CHAIN_WORLD, "finalized_lag_blocks": 16}, faults=faults)
    truth = sim.truth()
    env = service_env(
        sim,
        redis_server,
        tmp_path,
        CHAIN_START_BLOCK=str(truth["first_block"]),
        GOLDSKY_PAGE_SIZE="250",
        HTTP_READ_TIMEOUT_S="0.5",
    )

    run_to_end([sys.executable, "-m", "ingesters.goldsky_ingester", "--once"], env)
    run_to_end([sys.executable, "-m", "ingesters.chain_ingester", "--once"], env)

    events = sync_events(redis_server.port)
    assert_exact([e for e in events if e.source == "goldsky"], goldsky_truth(truth))
    assert_exact([e for e in events if e.source == "chain"], finalized_truth(truth))
    errors = []
    for name in ("goldsky_ingester", "chain_ingester"):
        retries = [e for e in log_events(tmp_path / "logs" / f"{name}.log") if e["event"] == "retrying request"]
        assert len(retries) >= 3, name
        errors += [r["error"] for r in retries]
    text = " ".join(errors)
    assert "HTTP 429" in text and "HTTP 5" in text and "timeout" in text and "invalid JSON" in text
    assert (
        "/rpc" not in (tmp_path / "logs" / "chain_ingester.log").read_text()
    )  # the RPC URL (it may hold a key) is never logged
    injected = sim.config()["faults_injected"]
    assert injected.get("goldsky.429", 0) > 0 and injected.get("rpc.truncate", 0) > 0


async def test_graphql_and_json_rpc_errors_in_200_replies_are_retried_and_the_sets_stay_exact(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**WORLD, faults="graphql_error=0.15,rpc_error=0.05")
    truth = sim.truth()
    start = truth["finalized_block"] - 60  # a short stretch: every failed batch item costs a backoff

    goldsky = await goldsky_ingester.run(goldsky_config(sim, redis_settings), once=True)
    chain = await chain_ingester.run(chain_config(sim, redis_settings, start_block=start), once=True)

    events = await stream_events(redis_client)
    assert_exact([e for e in events if e.source == "goldsky"], goldsky_truth(truth))
    assert_exact(
        [e for e in events if e.source == "chain"], [f for f in finalized_truth(truth) if f["block_number"] >= start]
    )
    injected = sim.config()["faults_injected"]
    assert injected["goldsky.graphql_error"] >= 1 and injected["rpc.rpc_error"] >= 1
    assert goldsky.counters["errors"] >= 1 and chain.counters["errors"] >= 1  # degraded, then recovered
    assert "goldsky GraphQL" in goldsky.last_error and "RPC error -32603" in chain.last_error


async def test_a_source_that_keeps_failing_shows_degraded_and_does_not_crash(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**WORLD, faults="500=1.0")
    stop = asyncio.Event()
    config = goldsky_config(sim, redis_settings)
    config = GoldskyConfig(
        config.goldsky, config.source, FAST_HTTP.model_copy(update={"max_attempts": 2}), config.redis
    )
    task = asyncio.create_task(goldsky_ingester.run(config, once=True, stop=stop))

    async def degraded() -> bool:
        return await redis_client.hget(keys.service_key("goldsky_ingester"), "state") == b"degraded"

    async def degraded_or_ended() -> bool:
        return task.done() or await degraded()

    await wait_until(degraded_or_ended, "reported degraded")
    assert not task.done(), "the service ended instead of reporting degraded"
    stop.set()
    service = await asyncio.wait_for(task, 10)
    assert "HTTP 50" in service.last_error and service.counters["errors"] >= 1
    assert await redis_client.xlen(keys.STREAM_ORDER_EVENTS) == 0


# --- poison ---------------------------------------------------------------------------------------------------


class CorruptingTransport(httpx.AsyncBaseTransport):
    """Forwards to the simulator and passes each JSON reply through `corrupt` (a seam, not a mock)."""

    def __init__(self, corrupt: Callable[[Any], Any]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.corrupt = corrupt

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = orjson.loads(await response.aread())
        return httpx.Response(response.status_code, content=orjson.dumps(self.corrupt(body)))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run_with_transport(redis_settings: RedisSettings, corrupt: Callable[[Any], Any], make_step: Any) -> Service:
    async def body(service: Service) -> None:
        async with httpx.AsyncClient(transport=CorruptingTransport(corrupt), timeout=5) as client:
            await poll_forever(service, make_step(service, client), interval_s=0.1, once=True)

    return await run_worker("poison-test", redis_settings, body)


async def dlq(client: aioredis.Redis) -> list[dict[str, Any]]:
    return [orjson.loads(fields[b"data"]) for _, fields in await client.xrange(keys.STREAM_DLQ)]


async def test_goldsky_poison_items_go_to_the_dlq_with_reason_and_the_rest_of_the_page_is_ingested(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**WORLD)
    expected = goldsky_truth(sim.truth())
    poisoned: dict[str, str] = {}

    def corrupt(body: Any) -> Any:
        rows = body["data"]["orderFilledEvents"]
        if not poisoned and len(rows) > 10:
            rows[3]["makerAmountFilled"] = "12.5x"
            rows[4]["makerAssetId"], rows[4]["takerAssetId"] = "5", "7"  # neither leg is USDC
            del rows[5]["fee"]
            poisoned.update({rows[i]["id"]: "bad" for i in (3, 4, 5)})
        return body

    config = goldsky_config(sim, redis_settings)
    await run_with_transport(
        redis_settings,
        corrupt,
        lambda service, client: RangeIngester(service, Subgraph(client, RateLimiter(100), config), 0, None).step,
    )

    letters = await dlq(redis_client)
    assert {orjson.loads(letter["payload"])["id"] for letter in letters} == set(poisoned)
    reasons = " | ".join(letter["error"] for letter in letters)
    assert "invalid literal" in reasons and "exactly one asset id" in reasons and "missing field fee" in reasons
    assert all(letter["stream"] == keys.STREAM_ORDER_EVENTS for letter in letters)
    assert_exact(await stream_events(redis_client), [f for f in expected if f["id"] not in poisoned])


async def test_chain_undecodable_logs_go_to_the_dlq_with_reason_and_the_rest_is_ingested(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    sim = simulator(**WORLD)
    truth = sim.truth()
    poisoned: dict[str, str] = {}

    def corrupt(body: Any) -> Any:
        logs = body.get("result") if isinstance(body, dict) else None
        if isinstance(logs, list) and len(logs) > 10 and not poisoned:
            logs[2]["data"] = "0x1234"
            logs[7]["topics"] = logs[7]["topics"][:3]
            poisoned.update({f"{x['transactionHash']}_{x['topics'][1]}": "bad" for x in (logs[2], logs[7])})
        return body

    config = chain_config(sim, redis_settings, start_block=truth["first_block"])

    def make_step(service: Service, client: httpx.AsyncClient) -> Any:
        node = Node(client, RateLimiter(100), config, BoundedCache(10_000))
        return chain_ingester.range_ingester(
            service, node, truth["first_block"], None, keys.STATE_CHAIN_LAST_BLOCK
        ).step

    await run_with_transport(redis_settings, corrupt, make_step)

    letters = await dlq(redis_client)
    assert len(letters) == 2
    reasons = " | ".join(letter["error"] for letter in letters)
    assert "undecodable log data" in reasons and "not an OrderFilled log" in reasons
    assert_exact(await stream_events(redis_client), [f for f in finalized_truth(truth) if f["id"] not in poisoned])


# --- configuration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "env", "message"),
    [
        ("ingesters.chain_ingester", {"POLYGON_RPC_URL": "wss://key-123@node"}, "POLYGON_RPC_URL"),
        ("ingesters.chain_ingester", {"CHAIN_START_BLOCK": "-4"}, "CHAIN_START_BLOCK"),
        ("ingesters.goldsky_ingester", {"GOLDSKY_PAGE_SIZE": "5000"}, "GOLDSKY_PAGE_SIZE"),
        ("ingesters.goldsky_ingester", {"GOLDSKY_START_TIMESTAMP": "9", "GOLDSKY_END_TIMESTAMP": "5"}, "END_TIMESTAMP"),
    ],
)
def test_bad_configuration_fails_fast_with_the_variable_named(
    module: str, env: dict[str, str], message: str, tmp_path: Path
) -> None:
    full_env = {**os.environ, "LOG_DIR": str(tmp_path), **env}
    result = subprocess.run(
        [sys.executable, "-m", module, "--once"], env=full_env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and message in result.stderr
    assert "key-123" not in result.stderr
