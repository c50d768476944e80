"""ExchangeV3's `Upgraded` log on the simulator's chain: the chain ingester goes degraded naming the block and the
new implementation, counts it for `/metrics`, keeps ingesting fills, and recovers once an operator acknowledges it
with `python -m pipeline ack-upgrade`. Also: the chain ingester reads each real eth_getLogs item shape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from common import keys
from common.config import HttpSettings, RedisSettings, SourceSettings
from common.exchanges import EXCHANGE_V3
from common.payloads import decode_exchange_upgrade, decode_order_event
from common.status.models import ClickHouseStatus, PipelineStatus, RedisStatus
from common.status.snapshot import read_services
from dashboard.metrics import render_metrics
from ingesters import chain_ingester
from ingesters.chain_ingester import ChainConfig, ChainSettings
from pipeline.ops import ack_upgrade
from tests.fixtures.helpers import items_in, wait_until
from tests.fixtures.simulator import SimulatorFactory

FAST_HTTP = HttpSettings(read_timeout_s=2.0, connect_timeout_s=1.0, backoff_base_s=0.02, backoff_max_s=0.3)
NEW_IMPLEMENTATION = "0x641b40ec" + "77" * 16


def chain_config(sim: Any, redis_settings: RedisSettings, **knobs: Any) -> ChainConfig:
    sources = SourceSettings(polygon_rpc_url=SecretStr(sim.rpc_url))
    return ChainConfig(ChainSettings(**knobs), sources, FAST_HTTP, redis_settings)


async def heartbeat(redis: aioredis.Redis) -> dict[str, str]:
    fields = await redis.hgetall(keys.service_key(chain_ingester.NAME))
    return {k.decode(): v.decode() for k, v in fields.items()}


async def fill_blocks(redis: aioredis.Redis) -> list[int]:
    return [decode_order_event(item).block_number for item in items_in(await redis.xrange(keys.STREAM_ORDER_EVENTS))]


async def test_an_exchange_v3_upgrade_degrades_the_ingester_until_acknowledged_and_fills_keep_flowing(
    simulator: SimulatorFactory,
    redis_client: aioredis.Redis,
    redis_settings: RedisSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVICE_HEARTBEAT_INTERVAL_S", "0.1")
    sim = simulator(seed=4, markets=20, history_fills=2_000, rate=100, live_block_interval_s=0.1)
    first = sim.truth(fills=False)["first_block"]
    config = chain_config(sim, redis_settings, start_block=first, poll_interval_s=0.1)
    stop = asyncio.Event()
    ingester = asyncio.create_task(chain_ingester.run(config, stop=stop))
    try:
        head = sim.truth(fills=False)["head_block"]
        cursor = lambda: redis_client.get(keys.STATE_CHAIN_LAST_BLOCK)  # noqa: E731
        await wait_until(lambda: _at_least(cursor(), head - 16), "the ingester to catch up", timeout_s=30)
        assert (await heartbeat(redis_client))["state"] == "running"

        upgrade_block = sim.truth(fills=False)["head_block"] + 1  # the next live block
        sim.plant(plant_upgrade={"block": upgrade_block, "implementation": NEW_IMPLEMENTATION})

        await wait_until(lambda: _state_is(redis_client, "degraded"), "the upgrade reported", timeout_s=30)
        beat = await heartbeat(redis_client)
        assert NEW_IMPLEMENTATION in beat["last_error"] and f"block {upgrade_block:,}" in beat["last_error"]
        assert EXCHANGE_V3 in beat["last_error"] and "ack-upgrade" in beat["last_error"]
        assert float(beat["gauge:exchange_upgrades_unacknowledged"]) == 1 and beat["count:exchange_upgrades"] == "1"
        (stored,) = [decode_exchange_upgrade(v) for v in (await redis_client.hgetall(keys.EXCHANGE_UPGRADES)).values()]
        assert (stored.proxy, stored.implementation, stored.block_number) == (EXCHANGE_V3, NEW_IMPLEMENTATION,
                                                                             upgrade_block)  # fmt: skip

        # fills keep flowing past the upgrade while it is unacknowledged, and the ingester stays degraded
        await wait_until(lambda: _at_least(cursor(), upgrade_block + 20), "blocks past the upgrade", timeout_s=30)
        assert any(block > upgrade_block for block in await fill_blocks(redis_client))
        assert (await heartbeat(redis_client))["state"] == "degraded"

        services = await read_services(redis_client, now=time.time(), dead_after_s=15)
        status = PipelineStatus(generated_at=time.time(), redis=RedisStatus(ok=True),
                                clickhouse=ClickHouseStatus(ok=False), services=services)  # fmt: skip
        metrics = render_metrics(status).decode()
        assert 'pipeline_service_degraded{service="chain_ingester"} 1.0' in metrics
        gauge = 'pipeline_service_gauge{gauge="exchange_upgrades_unacknowledged",service="chain_ingester"} 1.0'
        assert gauge in metrics
        assert 'pipeline_service_processed_total{counter="exchange_upgrades",service="chain_ingester"} 1.0' in metrics

        for name, value in {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_settings.port)}.items():
            monkeypatch.setenv(name, value)
        assert await asyncio.to_thread(ack_upgrade.main, []) == 1  # listed, not acknowledged yet
        assert await asyncio.to_thread(ack_upgrade.main, ["1-2"]) == 2  # no such upgrade
        assert await asyncio.to_thread(ack_upgrade.main, [stored.id]) == 0

        await wait_until(lambda: _state_is(redis_client, "running"), "the alert to clear", timeout_s=10)
        assert float((await heartbeat(redis_client))["gauge:exchange_upgrades_unacknowledged"]) == 0
        assert await asyncio.to_thread(ack_upgrade.main, []) == 0
    finally:
        stop.set()
        service = await ingester
    assert service.counters["exchange_upgrades"] == 1 and service.counters["dead_letters"] == 0


async def _at_least(value: Awaitable[bytes | None], wanted: int) -> bool:
    got = await value
    return got is not None and int(got) >= wanted


async def _state_is(redis: aioredis.Redis, state: str) -> bool:
    return (await heartbeat(redis)).get("state") == state


@pytest.mark.parametrize(
    "shape",
    ["logs_block_timestamp=1", "logs_bare=1", "logs_checksum=1", "logs_block_timestamp=1,logs_bare=1,logs_checksum=1"],
)
async def test_the_chain_ingester_reads_every_real_log_shape_exactly(
    simulator: SimulatorFactory, redis_client: aioredis.Redis, redis_settings: RedisSettings, shape: str
) -> None:
    sim = simulator(seed=9, markets=20, history_fills=3_000, faults=shape)
    truth = sim.truth()
    expected = {f["id"]: f for f in truth["fills"] if f["block_number"] <= truth["finalized_block"]}
    calls_before = sim.config()["requests"]["rpc"]

    service = await chain_ingester.run(chain_config(sim, redis_settings, start_block=truth["first_block"]), once=True)

    events = [decode_order_event(item) for item in items_in(await redis_client.xrange(keys.STREAM_ORDER_EVENTS))]
    assert sorted(e.id for e in events) == sorted(expected) and service.counters["dead_letters"] == 0
    fields = ("exchange", "block_number", "log_index", "timestamp", "maker", "taker", "maker_amount", "taker_amount")
    assert all([getattr(e, k) for k in fields] == [expected[e.id][k] for k in fields] for e in events)
    requests = sim.config()["requests"]["rpc"] - calls_before
    if "logs_block_timestamp" in shape:  # timestamps come with the logs: no eth_getBlockByNumber batch at all
        assert requests == service.counters["ranges"] + 2  # one eth_getLogs per range, plus `finalized` and head
