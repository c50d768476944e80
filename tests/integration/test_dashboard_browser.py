"""The dashboard page in headless Chromium (Debian's `chromium`, driven by Playwright): what an operator sees.

Screenshots go to tests/artifacts/ (gitignored): dashboard.png after the first load, dashboard-refreshed.png after
the page updated itself with new trades, dashboard-clickhouse-down.png with ClickHouse unreachable.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from common import keys
from common.config import ClickHouseSettings, StreamSettings
from dashboard.app import DashboardConfig, create_app
from dashboard.settings import DashboardSettings
from pipeline.harness.showcase import CHROMIUM, CHROMIUM_ARGS
from processors import clickhouse_writer, trade_processor
from tests.fixtures.dashboard_world import running_dashboard, serve_in_thread
from tests.fixtures.fills_world import make_fills, publish_fills

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
STREAMS = (0.2, 5000)  # block_ms, claim_min_idle_ms for the live services below


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def open_page(browser: Browser, url: str) -> tuple[Page, list[str]]:
    """A page on the dashboard; the returned list collects any dialog (an executed script would open one)."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1800})
    events: list[str] = []
    page.on("dialog", lambda dialog: events.append(f"dialog: {dialog.message}"))
    page.on("pageerror", lambda error: events.append(f"page error: {error}"))
    await page.goto(url)
    await page.wait_for_function("() => Number(document.body.dataset.refreshes) >= 1", timeout=10_000)
    return page, events


async def table_text(page: Page, table: str) -> str:
    return await page.inner_text(f"#{table} tbody")


async def test_page_shows_every_stream_group_service_and_table_count(browser, dashboard_world):
    world = dashboard_world
    ARTIFACTS.mkdir(exist_ok=True)
    with running_dashboard(world) as url:
        page, events = await open_page(browser, url)
        streams, services, tables, cursors = [
            await table_text(page, t) for t in ("streams", "services", "tables", "cursors")
        ]
        redis_line = await page.inner_text("#redis-server")
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    for stream, groups in keys.STREAM_GROUPS.items():
        assert stream in streams and all(group in streams for group in groups)
    for service in ("polymarket_ingester", "polymarket_events_ingester", "goldsky_ingester", "chain_ingester",
                    "trade_processor", "clickhouse_writer"):  # fmt: skip
        assert service in services
    assert "degraded" in services and "dead" in services and "HTTP 503" in services
    rows = dict(line.split("\t") for line in tables.splitlines())
    assert rows == {"markets": "5", "events": "2", "order_filled_events": str(len(world.fills)),
                    "trades": str(len(world.fills))}  # fmt: skip
    assert "100 blocks behind the safe head (finality lag 500 blocks)" in cursors
    assert redis_line.startswith("Redis ") and redis_line.endswith(" · durability: AOF, appendfsync always")
    assert events == []


async def test_market_text_is_shown_as_text_never_run(browser, dashboard_world):
    with running_dashboard(dashboard_world) as url:
        page, events = await open_page(browser, url)
        trades = await table_text(page, "trades")
        injected = await page.evaluate("window.__xss === undefined ? null : window.__xss")
        elements = await page.evaluate("document.querySelectorAll('#trades script, #trades img, #trades b').length")
    assert "<script>window.__xss = 1</script>" in trades and "<b>YES</b>" in trades
    assert injected is None and elements == 0 and events == []


async def run_live_services(world: Any, stop: asyncio.Event) -> None:
    streams = StreamSettings(block_ms=200, claim_min_idle_ms=5000, claim_interval_s=1.0, trim_interval_s=0.5)
    await asyncio.gather(
        trade_processor.run(trade_processor.ProcessorSettings(held_check_interval_s=0.1), redis=world.redis_settings,
                            streams=streams, stop=stop),
        clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=world.redis_settings, clickhouse=world.ch,
                              streams=streams, stop=stop),
    )  # fmt: skip


async def test_page_refreshes_in_place_and_charts_throughput(browser, dashboard_world, monkeypatch):
    world = dashboard_world
    monkeypatch.setenv("SERVICE_HEARTBEAT_INTERVAL_S", "0.2")
    stop = asyncio.Event()
    services = asyncio.create_task(run_live_services(world, stop))
    with running_dashboard(world) as url:
        page, events = await open_page(browser, url)
        await page.evaluate("window.__sameDocument = 'yes'")
        more = make_fills(random.Random(99), world.markets, groups=40, start_ts=1_777_100_000)
        for start in range(0, len(more), 40):  # a few bursts, so the rates have something to measure
            await publish_fills(world.redis, more[start : start + 40])
            await asyncio.sleep(0.4)
        total = len(world.fills) + len(more)
        await page.wait_for_function(
            "(row) => document.querySelector('#tables tbody').innerText.includes(row)",
            arg=f"trades\t{total:,}", timeout=20_000,
        )  # fmt: skip
        assert await page.evaluate("window.__sameDocument") == "yes"
        history = httpx.get(f"{url}/api/history", timeout=5).json()
        assert max(v or 0 for v in history["throughput"]["trades derived"]) > 0
        assert {f"{keys.STREAM_ORDER_EVENTS}/trade-processor", f"{keys.STREAM_TRADES}/clickhouse-writer"} <= set(
            history["backlog"]
        )
        legend = await page.inner_text("#chart-throughput")
        size = await page.evaluate("(() => { const c = document.querySelector('#chart-throughput canvas');"
                                   " return c ? [c.width, c.height] : [0, 0]; })()")  # fmt: skip
        backlog_legend = await page.inner_text("#chart-backlog")
        await page.screenshot(path=str(ARTIFACTS / "dashboard-refreshed.png"), full_page=True)
    stop.set()
    await asyncio.wait_for(services, 20)
    assert "trades derived" in legend and "rows written" in legend and size[0] > 100 and size[1] > 100
    assert "trade-processor" in backlog_legend
    assert events == []


async def test_page_says_clickhouse_is_down(browser, redis_client, redis_settings):
    ARTIFACTS.mkdir(exist_ok=True)
    closed = ClickHouseSettings(host="127.0.0.1", port=1, database="nowhere")
    config = DashboardConfig(DashboardSettings(sample_interval_s=0.5), redis_settings, closed)
    with serve_in_thread(create_app(config)) as url:
        page, events = await open_page(browser, url)
        banner = await page.inner_text("#banner")
        await page.screenshot(path=str(ARTIFACTS / "dashboard-clickhouse-down.png"), full_page=True)
    assert "ClickHouse is down" in banner and "Redis" not in banner
    assert events == []
