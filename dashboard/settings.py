"""Dashboard settings (DASHBOARD_*): where it listens, optional basic auth, how often it samples the pipeline."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.config import PipelineSettings


class DashboardSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="DASHBOARD_")

    host: str = "127.0.0.1"  # loopback unless told otherwise: the page shows the whole pipeline
    port: int = Field(8000, ge=1, le=65535)
    user: str = "admin"
    password: SecretStr | None = None  # set: every endpoint but /health and /ready asks for basic auth
    # Redis read for the page, /metrics and the charts; the page refreshes every 5 s, so sampling more often only
    # cost CPU (0.45 % of a core for the dashboard at 2 s, with nobody watching: docs/performance-fleet.md)
    sample_interval_s: float = Field(5.0, gt=0)
    clickhouse_refresh_s: float = Field(5.0, gt=0)  # ClickHouse counts at most this often
    clickhouse_timeout_s: float = Field(2.0, gt=0)  # beyond this the last answer is shown, marked stale
    redis_timeout_s: float = Field(1.0, gt=0)
    history_s: float = Field(900.0, gt=0)  # the charts' window
