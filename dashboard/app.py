"""Dashboard: the pipeline at a glance on http://127.0.0.1:8000, read-only.

Reads Redis (stream lengths, group lag/pending/consumers, cursors, heartbeats, the DLQ) every
DASHBOARD_SAMPLE_INTERVAL_S and ClickHouse (table counts, newest trade, latest trades) at most every
DASHBOARD_CLICKHOUSE_REFRESH_S, in one background task (`common.status.snapshot.collect_status`); every endpoint
answers from the last read, so a slow or stopped Redis or ClickHouse never slows a page down: the page says
which one is down. Endpoints (all GET; nothing here changes the pipeline):
  /              the HTML page, refreshing every 5 s in place (static file; data arrives as JSON, shown as text)
  /api/status    the whole status (schema in /docs, /openapi.json)
  /api/history   the last 15 minutes of throughput and backlog for the charts
  /metrics       Prometheus text format, `pipeline_*`
  /health        liveness: the process answers (no dependency checked)
  /ready         Redis PING and ClickHouse /ping answer within 1 s, else 503
With DASHBOARD_PASSWORD set, everything but /health, /ready and /static asks for basic auth (DASHBOARD_USER).
Responses never contain a secret: the configured passwords and the RPC URL are masked in every JSON answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.staticfiles import StaticFiles
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.clickhouse import ping
from common.config import ClickHouseSettings, LogSettings, RedisSettings, ServiceSettings, load
from common.errors import ConfigError, SinkError
from common.log import configure_logging
from common.redis_client import make_redis, map_redis_errors
from common.status.history import Observer
from common.status.models import ClickHouseStatus, History, PipelineStatus, RedisStatus
from common.status.redaction import redact, secret_values
from common.status.snapshot import ClickHouseReader, collect_status
from dashboard.metrics import render_metrics
from dashboard.settings import DashboardSettings

log = structlog.get_logger()

STATIC_DIR = Path(__file__).with_name("static")
FIRST_READ_WAIT_S = 0.5  # then a placeholder: the page answers within a second even while a read hangs
# While someone looks (the page, /api/status, /metrics within the last WATCHED_S) Redis is sampled every
# sample_interval_s and ClickHouse read every clickhouse_refresh_s; with nobody looking, every UNWATCHED_SAMPLE_S
# (the charts keep a point every 15 s) and every UNWATCHED_REFRESH_S (its figures are not charted). Sampling at the
# watched pace with nobody watching cost 0.3 % of a core (docs/performance-fleet.md).
WATCHED_S = 60.0
UNWATCHED_SAMPLE_S = 15.0
UNWATCHED_REFRESH_S = 60.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class DashboardConfig:
    dashboard: DashboardSettings
    redis: RedisSettings
    clickhouse: ClickHouseSettings
    service: ServiceSettings = field(default_factory=ServiceSettings)
    secrets: tuple[str, ...] = ()  # values masked in every answer


def load_config() -> DashboardConfig:
    dashboard, redis, clickhouse = load(DashboardSettings), load(RedisSettings), load(ClickHouseSettings)
    own = (dashboard.password.get_secret_value(),) if dashboard.password else ()
    return DashboardConfig(dashboard, redis, clickhouse, load(ServiceSettings), secret_values(redis, clickhouse, *own))


class Dashboard:
    """The running dashboard: its connections, the last status read and the charts' history."""

    def __init__(self, config: DashboardConfig) -> None:
        settings = config.dashboard
        self.config = config
        self.redis = make_redis(config.redis.model_copy(update={"socket_timeout_s": settings.redis_timeout_s}))
        self.redis.set_retry(Retry(NoBackoff(), 0))  # a down Redis is reported, not waited for
        self.clickhouse = ClickHouseReader(
            config.clickhouse, timeout_s=settings.clickhouse_timeout_s, refresh_s=settings.clickhouse_refresh_s
        )
        self.observer = Observer(window_s=settings.history_s, interval_s=settings.sample_interval_s)
        self.latest: PipelineStatus | None = None
        self.watched_at = -WATCHED_S
        self.sampled_at = -UNWATCHED_SAMPLE_S
        self._lock = asyncio.Lock()

    def watched(self) -> bool:
        return time.monotonic() - self.watched_at < WATCHED_S

    async def sample(self) -> PipelineStatus:
        refresh_s = self.config.dashboard.clickhouse_refresh_s
        self.clickhouse.refresh_s = refresh_s if self.watched() else max(refresh_s, UNWATCHED_REFRESH_S)
        self.sampled_at = time.monotonic()
        async with self._lock:
            status_ = await collect_status(self.redis, self.clickhouse, dead_after_s=self.config.service.dead_after_s)
            self.latest = self.observer.observe(status_)
            return self.latest

    async def sample_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                if self.watched() or started - self.sampled_at >= UNWATCHED_SAMPLE_S:
                    await self.sample()
            except Exception:  # keep sampling whatever one read did; the page shows the last good one
                log.exception("status read failed")
            await asyncio.sleep(max(0.1, self.config.dashboard.sample_interval_s - (time.monotonic() - started)))

    async def status(self) -> PipelineStatus:
        """The last read; right after start, the first one if it comes within FIRST_READ_WAIT_S, else a placeholder.
        The first look after a quiet minute waits as long for a new read: ClickHouse's figures may be a minute old."""
        unwatched = not self.watched()
        self.watched_at = time.monotonic()
        if self.latest is not None and not unwatched:
            return self.latest
        try:
            return await asyncio.wait_for(asyncio.shield(self.sample()), FIRST_READ_WAIT_S)
        except TimeoutError:
            if self.latest is not None:
                return self.latest
            waiting = "the dashboard's first read of Redis and ClickHouse is still in progress"
            return PipelineStatus(generated_at=time.time(), redis=RedisStatus(ok=False, error=waiting),
                                  clickhouse=ClickHouseStatus(ok=False, error=waiting))  # fmt: skip

    async def ready(self) -> dict[str, str]:
        """'ok' or the reason, per dependency, each checked live within 1 s."""
        checks = await asyncio.gather(self._ping_redis(), self._ping_clickhouse())
        return dict(zip(("redis", "clickhouse"), checks, strict=True))

    # /ready answers without authentication: a reason names the kind of error, never an address
    async def _ping_redis(self) -> str:
        try:
            async with map_redis_errors("ping"):
                await asyncio.wait_for(self.redis.ping(), 1.0)
            return "ok"
        except SinkError as exc:
            return f"unreachable: {type(exc).__name__}"

    async def _ping_clickhouse(self) -> str:
        try:
            await asyncio.to_thread(ping, self.config.clickhouse, timeout_s=1.0)
            return "ok"
        except SinkError as exc:
            return f"unreachable: {type(exc).__name__}"

    async def close(self) -> None:
        await self.redis.aclose()
        await asyncio.to_thread(self.clickhouse.close)


def basic_auth(settings: DashboardSettings) -> Callable[..., Awaitable[None]]:
    security = HTTPBasic(auto_error=False, realm="pipeline dashboard")

    async def check(credentials: HTTPBasicCredentials | None = Depends(security)) -> None:  # noqa: B008
        if settings.password is None:
            return
        good = credentials is not None and all((
            secrets.compare_digest(credentials.username.encode(), settings.user.encode()),
            secrets.compare_digest(credentials.password.encode(), settings.password.get_secret_value().encode()),
        ))  # fmt: skip
        if not good:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required",
                                headers={"WWW-Authenticate": 'Basic realm="pipeline dashboard"'})  # fmt: skip

    return check


def create_app(config: DashboardConfig, *, sample: bool = True) -> FastAPI:
    """The FastAPI app; `sample=False` skips the background reads (each request then reads on demand)."""
    dashboard = Dashboard(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sampler = asyncio.create_task(dashboard.sample_forever()) if sample else None
        yield
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await dashboard.close()

    app = FastAPI(title="Polymarket pipeline dashboard", version="0.1.0", lifespan=lifespan,
                  description=__doc__.split("\n\n")[0])  # fmt: skip
    app.state.dashboard = dashboard
    add_routes(app, dashboard, Depends(basic_auth(config.dashboard)))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


def add_routes(app: FastAPI, dashboard: Dashboard, auth: Any) -> None:
    hidden = dashboard.config.secrets

    def json_answer(model: Any, code: int = 200) -> Response:
        return Response(redact(model.model_dump_json().encode(), hidden), code, media_type="application/json")

    @app.get("/", include_in_schema=False, dependencies=[auth])
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/status", response_model=PipelineStatus, dependencies=[auth], summary="The whole pipeline, now")
    async def api_status() -> Response:
        return json_answer(await dashboard.status())

    @app.get("/api/history", response_model=History, dependencies=[auth], summary="Charts: the last 15 minutes")
    async def api_history() -> Response:
        await dashboard.status()
        return json_answer(dashboard.observer.history())

    @app.get("/metrics", dependencies=[auth], summary="Prometheus metrics (text format)")
    async def metrics() -> Response:
        body = render_metrics(await dashboard.status())
        return Response(redact(body, hidden), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", summary="Liveness: the process answers; no dependency is checked")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: Redis and ClickHouse reachable, else 503")
    async def ready() -> JSONResponse:
        checks = await dashboard.ready()
        code = 200 if all(v == "ok" for v in checks.values()) else 503
        return JSONResponse({"ready": code == 200, **checks}, code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Settings come from the environment and .env (DASHBOARD_*, REDIS_*, "
                                            "CLICKHOUSE_*).")  # fmt: skip
    parser.add_argument("--host", help="listen address (default DASHBOARD_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default DASHBOARD_PORT, 8000)")
    args = parser.parse_args(argv)
    try:
        configure_logging("dashboard", load(LogSettings))
        logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)  # its retries: the page shows the error
        config = load_config()
    except ConfigError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 2
    host, port = args.host or config.dashboard.host, args.port or config.dashboard.port
    log.info("serving", url=f"http://{host}:{port}/", auth=config.dashboard.password is not None)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
