"""The demo's simulator stopped and started again over the same data: its chain goes on from where it was.

Before, a restarted simulator rebuilt its chain from the history head, behind the cursor the chain ingester had
stored, and the ingester waited in silence until the new chain passed it; live blocks carried April 2026 dates.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import redis
from pydantic import SecretStr

from common import keys
from common.config import HttpSettings, RedisSettings, SourceSettings
from common.pages import items_of
from common.payloads import decode_order_event
from ingesters import chain_ingester
from ingesters.chain_ingester import ChainConfig, ChainSettings
from tests.fixtures.redis_server import RedisServer, free_port
from tests.fixtures.simulator import start_simulator_process

BLOCKS_PER_S = 5  # live blocks 0.2 s apart: the first run gets far ahead of the history head in seconds
WORLD = {"SIMULATOR_HISTORY_FILLS": "600", "SIMULATOR_MARKETS": "10", "SIMULATOR_RATE": "40", "SIMULATOR_SEED": "4"}


def rpc(url: str, method: str, params: list[object]) -> object:
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=10)
    return reply.json()["result"]


def chain_config(rpc_url: str, redis_settings: RedisSettings) -> ChainConfig:
    sources = SourceSettings(polygon_rpc_url=SecretStr(rpc_url))
    return ChainConfig(ChainSettings(initial_span_blocks=2000), sources, HttpSettings(), redis_settings)


def cursor(port: int) -> int:
    with redis.Redis(port=port) as client:
        value = client.get(keys.STATE_CHAIN_LAST_BLOCK)
    return int(value) if value is not None else -1


def entries(port: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    with redis.Redis(port=port) as client:
        return client.xrange(keys.STREAM_ORDER_EVENTS)


def test_restarted_demo_simulator_continues_its_chain_with_wall_clock_blocks(
    redis_server: RedisServer, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    with redis.Redis(port=redis_server.port) as client:
        client.flushall()
    port = free_port()
    env = WORLD | {"SIMULATOR_CHAIN_STATE_FILE": str(tmp_path / "simulator" / "chain.json")}
    argv = ("--live-block-interval-s", str(1 / BLOCKS_PER_S))
    rpc_url = f"http://127.0.0.1:{port}/rpc"
    config = chain_config(rpc_url, redis_settings)

    first = start_simulator_process(port, *argv, module="pipeline.launch.demo_simulator", env=env)
    try:
        history_head = int(str(rpc(rpc_url, "eth_blockNumber", [])), 16)
        give_up = time.monotonic() + 60
        while cursor(redis_server.port) < history_head + 20 * BLOCKS_PER_S:  # 20 s of live blocks ingested
            assert time.monotonic() < give_up, f"the first run's ingest stopped at block {cursor(redis_server.port)}"
            asyncio.run(chain_ingester.run(config, once=True))
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(15)
    old_cursor, seen = cursor(redis_server.port), len(entries(redis_server.port))

    second = start_simulator_process(port, *argv, module="pipeline.launch.demo_simulator", env=env)
    try:
        restarted = time.time()
        assert int(str(rpc(rpc_url, "eth_blockNumber", [])), 16) >= old_cursor  # never a head behind the cursor
        give_up = time.monotonic() + 5  # the old code's chain needed 20 s to catch up with the cursor
        while len(new := entries(redis_server.port)[seen:]) == 0:
            assert time.monotonic() < give_up, f"no new trade within 5 s of the restart (cursor {old_cursor})"
            asyncio.run(chain_ingester.run(config, once=True))
            time.sleep(0.1)
        arrived = time.time()
        event = decode_order_event(items_of(new[0][1][b"data"])[0])
        block = rpc(rpc_url, "eth_getBlockByNumber", [hex(event.block_number), False])
        assert isinstance(block, dict)
        assert event.block_number > old_cursor
        assert event.timestamp == int(block["timestamp"], 16)  # the wall-clock second its block was made in
        assert int(restarted) - 1 <= event.timestamp <= arrived
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
