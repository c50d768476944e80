"""`python -m pipeline status` against a real Redis and ClickHouse: the dashboard's read, in the terminal."""

from __future__ import annotations

import orjson

from common import keys
from pipeline.ops import status as ops_status
from tests.fixtures.dashboard_world import run_command, set_pipeline_env


async def test_status_prints_every_stream_group_service_and_count(dashboard_world, monkeypatch, capsys):
    world = dashboard_world
    set_pipeline_env(monkeypatch, world.redis_settings, world.ch)
    assert await run_command(ops_status.main, "--sample-s", "0") == 0
    out = capsys.readouterr().out
    for stream, groups in keys.STREAM_GROUPS.items():
        assert stream in out and all(group in out for group in groups)
    for service in (
        "goldsky_ingester",
        "chain_ingester",
        "trade_processor",
        "clickhouse_writer",
        "polymarket_ingester",
    ):
        assert service in out
    assert "degraded" in out and "dead" in out and "HTTP 503" in out
    assert "order_filled_events" in out and f"{len(world.fills):,}" in out and "ClickHouse: up" in out
    assert "100 blocks behind the safe head (finality lag 500 blocks)" in out


async def test_status_json_is_the_api_document(dashboard_world, monkeypatch, capsys):
    set_pipeline_env(monkeypatch, dashboard_world.redis_settings, dashboard_world.ch)
    assert await run_command(ops_status.main, "--json", "--sample-s", "0.3") == 0
    status = orjson.loads(capsys.readouterr().out)
    tables = {t["name"]: t["rows"] for t in status["clickhouse"]["tables"]}
    assert tables["trades"] == len(dashboard_world.fills)
    assert {s["name"] for s in status["streams"]} == set(keys.STREAM_GROUPS)


async def test_status_exits_1_and_says_so_when_redis_is_down(ch_settings, redis_settings, monkeypatch, capsys):
    set_pipeline_env(monkeypatch, redis_settings.model_copy(update={"port": 1}), ch_settings)
    assert await run_command(ops_status.main, "--sample-s", "0") == 1
    assert "Redis is down" in capsys.readouterr().out
