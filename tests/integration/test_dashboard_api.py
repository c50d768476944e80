"""The dashboard's endpoints against a real Redis and the embedded ClickHouse, served by uvicorn in a thread."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from common import keys
from common.config import ClickHouseSettings
from dashboard.app import UNWATCHED_REFRESH_S, Dashboard, DashboardConfig, create_app, load_config
from dashboard.settings import DashboardSettings
from tests.fixtures.dashboard_world import dashboard_config, running_dashboard, serve_in_thread
from tests.fixtures.helpers import wait_until

EXPECTED_METRICS = {
    "pipeline_service_processed", "pipeline_service_failed", "pipeline_service_up",
    "pipeline_service_heartbeat_age_seconds", "pipeline_stream_length", "pipeline_stream_entries", "pipeline_group_lag",
    "pipeline_group_pending", "pipeline_group_consumers", "pipeline_dlq_length", "pipeline_cursor_age_seconds",
    "pipeline_source_behind_seconds", "pipeline_source_behind_blocks", "pipeline_chain_finality_lag_blocks",
    "pipeline_clickhouse_rows", "pipeline_clickhouse_insert_rows",
    "pipeline_clickhouse_insert_seconds", "pipeline_clickhouse_newest_trade_timestamp_seconds", "pipeline_up",
    "pipeline_unresolved_markets",
}  # fmt: skip


def get(url: str, **kwargs) -> httpx.Response:
    return httpx.get(url, timeout=5.0, **kwargs)


async def test_api_status_shows_streams_groups_services_cursors_and_table_counts(dashboard_world):
    world = dashboard_world
    with running_dashboard(world) as url:
        status = (await asyncio.to_thread(get, f"{url}/api/status")).json()
    redis_server = status["redis"].pop("server")  # 7.0 here, 6.2 in test_redis_6_2.py
    assert redis_server.startswith("Redis ") and status["redis"] == {
        "ok": True, "error": "", "durability": "AOF, appendfsync always", "durability_source": "CONFIG GET",
        "durability_warning": "",
    }  # fmt: skip
    assert status["clickhouse"]["ok"]
    streams = {s["name"]: s for s in status["streams"]}
    assert set(streams) == set(keys.STREAM_GROUPS)
    for name, groups in keys.STREAM_GROUPS.items():
        assert {g["name"] for g in streams[name]["groups"]} == set(groups)
        assert all(g["exists"] and g["lag"] == 0 and g["pending"] == 0 for g in streams[name]["groups"])
        # Redis 6.2's XINFO STREAM has no entries-added: not known, never guessed
        added = streams[name]["entries_added"]
        assert (added is None) if redis_server.startswith("Redis 6.") else (added >= streams[name]["length"])
    # the world's fills reached `trades` through stream:trades; the items its scripts counted, where they count them
    assert streams[keys.STREAM_TRADES]["items_added"] in (None, len(world.fills))
    tables = {t["name"]: t["rows"] for t in status["clickhouse"]["tables"]}
    assert tables == {"markets": 5, "events": 2, "order_filled_events": len(world.fills), "trades": len(world.fills)}
    assert status["clickhouse"]["newest_trade_at"] == max(f.timestamp for f in world.fills)
    services = {s["name"]: s for s in status["services"]}
    assert services["goldsky_ingester"]["state"] == "degraded"
    assert "HTTP 503" in services["goldsky_ingester"]["last_error"]
    assert services["chain_ingester"]["state"] == "dead"
    assert services["polymarket_ingester"]["state"] == "absent"
    processor = next(s for name, s in services.items() if name.startswith("trade_processor"))
    writer = next(s for name, s in services.items() if name.startswith("clickhouse_writer"))
    assert processor["state"] == "stopped" and processor["counters"]["trades"] == len(world.fills)
    assert writer["counters"]["rows_trades"] == len(world.fills) and writer["counters"]["insert_ms"] >= 0
    cursors = {c["key"]: c for c in status["cursors"]}
    assert 25 <= cursors[keys.STATE_GOLDSKY_LAST_TIMESTAMP]["behind_s"] <= 60
    assert cursors[keys.STATE_CHAIN_LAST_BLOCK]["value"] == "84902400"
    chain = cursors[keys.STATE_CHAIN_LAST_BLOCK]
    assert (chain["behind_blocks"], chain["finality_lag_blocks"]) == (100, 500)  # from the chain ingester's gauges
    trades = status["clickhouse"]["latest_trades"]
    assert trades and all("<script>" in t["question"] for t in trades)
    assert {t["side"] for t in trades} <= {"BUY", "SELL"}


async def test_metrics_parse_and_name_every_family(dashboard_world):
    with running_dashboard(dashboard_world) as url:
        body = (await asyncio.to_thread(get, f"{url}/metrics")).text
    families = {family.name: family for family in text_string_to_metric_families(body)}
    assert set(families) >= EXPECTED_METRICS
    assert families["pipeline_service_processed"].type == "counter"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    trades = len(dashboard_world.fills)
    assert samples[("pipeline_clickhouse_rows", (("table", "trades"),))] == trades
    assert samples[("pipeline_group_lag", (("group", "trade-processor"), ("stream", keys.STREAM_ORDER_EVENTS)))] == 0
    assert samples[("pipeline_dlq_length", ())] == 0
    chain = (("cursor", keys.STATE_CHAIN_LAST_BLOCK),)
    assert samples[("pipeline_source_behind_blocks", chain)] == 100
    assert samples[("pipeline_chain_finality_lag_blocks", chain)] == 500
    assert any(name == "pipeline_clickhouse_insert_rows_total" and dict(labels)["table"] == "trades" and value == trades
               for (name, labels), value in samples.items())  # fmt: skip
    assert all(not f.name.startswith("pipeline_") or f.type != "counter" or f.name + "_total" in body
               for f in families.values())  # fmt: skip


async def test_ready_flips_to_503_while_redis_is_down_and_back(dashboard_world, redis_server):
    with running_dashboard(dashboard_world) as url:
        assert (await asyncio.to_thread(get, f"{url}/ready")).status_code == 200
        redis_server.kill()
        try:
            down = await asyncio.to_thread(get, f"{url}/ready")
            assert down.status_code == 503 and down.json()["redis"].startswith("unreachable")
            assert down.json()["clickhouse"] == "ok"
            assert (await asyncio.to_thread(get, f"{url}/health")).json() == {"status": "ok"}
            status = await wait_until(lambda: asyncio.to_thread(lambda: get(f"{url}/api/status").json()),
                                            "Redis down in the status", accept=lambda s: not s["redis"]["ok"],
                                            timeout_s=10)  # fmt: skip
            assert status["clickhouse"]["ok"] and status["clickhouse"]["tables"]
            assert (await asyncio.to_thread(get, f"{url}/")).status_code == 200
        finally:
            redis_server.start()
        back = await wait_until(lambda: asyncio.to_thread(get, f"{url}/ready"), "ready again",
                                      accept=lambda r: r.status_code == 200, timeout_s=10)  # fmt: skip
        assert back.json() == {"ready": True, "redis": "ok", "clickhouse": "ok"}


async def test_clickhouse_down_still_renders_and_says_so_within_a_second(redis_client, redis_settings):
    with socket.socket() as silent:  # accepts connections, never answers: the worst kind of down
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        hung = ClickHouseSettings(host="127.0.0.1", port=silent.getsockname()[1], database="nowhere")
        config = DashboardConfig(DashboardSettings(sample_interval_s=0.5, clickhouse_timeout_s=1.0), redis_settings,
                                 hung)  # fmt: skip
        with serve_in_thread(create_app(config)) as url:
            timed = []
            for path in ("/api/status", "/", "/metrics", "/api/status"):
                started = time.monotonic()
                response = await asyncio.to_thread(get, f"{url}{path}")
                timed.append((path, response.status_code, time.monotonic() - started))
            status = await wait_until(lambda: asyncio.to_thread(lambda: get(f"{url}/api/status").json()),
                                            "ClickHouse down in the status",
                                            accept=lambda s: s["clickhouse"]["error"] != "", timeout_s=10)  # fmt: skip
            ready = await asyncio.to_thread(get, f"{url}/ready")
    assert all(code == 200 and elapsed_s < 1.0 for _, code, elapsed_s in timed), timed
    assert status["redis"]["ok"] and not status["clickhouse"]["ok"] and status["streams"]
    assert ready.status_code == 503 and ready.json()["redis"] == "ok"


async def test_no_secret_reaches_any_response(dashboard_world, monkeypatch):
    world = dashboard_world
    secrets = {
        "DASHBOARD_PASSWORD": "dash-s3cret-pw",
        "REDIS_PASSWORD": "redis-s3cret-pw",
        "CLICKHOUSE_PASSWORD": "ch-s3cret-pw",
        "POLYGON_RPC_URL": "https://rpc.example/v2/rpc-s3cret-key",
    }
    # a service that leaked a secret into its error text: the dashboard must still not show it
    await world.redis.hset(keys.service_key("chain_ingester"), "last_error",
                           f"POST {secrets['POLYGON_RPC_URL']} failed; auth ch-s3cret-pw")  # fmt: skip
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    loaded = load_config()
    assert set(secrets.values()) <= set(loaded.secrets)
    # the session's Redis and ClickHouse have no password: connect without one, keep what is to be masked
    dashboard = loaded.dashboard.model_copy(update={"sample_interval_s": 0.5})
    config = DashboardConfig(dashboard, world.redis_settings, world.ch, secrets=loaded.secrets)
    auth = ("admin", secrets["DASHBOARD_PASSWORD"])
    with serve_in_thread(create_app(config)) as url:
        assert (await asyncio.to_thread(get, f"{url}/api/status")).status_code == 401
        bodies = [(await asyncio.to_thread(get, f"{url}{path}", auth=auth)) for path in
                  ("/", "/api/status", "/api/history", "/metrics", "/openapi.json", "/health", "/ready")]  # fmt: skip
    assert all(response.status_code == 200 for response in bodies), [r.status_code for r in bodies]
    text = "\n".join(response.text for response in bodies)
    assert "**********" in text and "failed; auth" in text
    for value in secrets.values():
        assert value not in text


def test_every_route_is_read_only_and_status_is_documented(redis_settings):
    config = DashboardConfig(DashboardSettings(), redis_settings, ClickHouseSettings(port=1))
    app = create_app(config, sample=False)
    methods = {m for route in app.routes for m in getattr(route, "methods", None) or ()}
    assert methods <= {"GET", "HEAD"}
    schema = app.openapi()
    assert "/api/status" in schema["paths"] and "PipelineStatus" in schema["components"]["schemas"]
    assert {"/health", "/ready", "/metrics", "/api/history"} <= set(schema["paths"])


async def test_clickhouse_is_read_every_refresh_only_while_someone_looks(dashboard_world):
    dashboard = Dashboard(dashboard_config(dashboard_world, clickhouse_refresh_s=5.0))
    try:
        await dashboard.sample()  # the background sampling, nobody has looked yet
        assert dashboard.clickhouse.refresh_s == UNWATCHED_REFRESH_S
        dashboard.clickhouse._last_at -= 30  # the last read is 30 s old: young enough while nobody looks
        read_at = dashboard.clickhouse._last_at
        await dashboard.sample()
        assert dashboard.clickhouse._last_at == read_at
        status = await dashboard.status()  # someone looks: read again, and every 5 s from now on
        assert dashboard.clickhouse.refresh_s == 5.0
        assert dashboard.clickhouse._last_at > read_at and status.clickhouse.ok
        assert {t.name: t.rows for t in status.clickhouse.tables}["trades"] == len(dashboard_world.fills)
    finally:
        await dashboard.close()
