"""Settings, one pydantic-settings model per concern; the only module that reads the environment and `.env`.

Every field maps to one environment variable (prefix + field name, upper-case). Durations carry their unit in
the name. Secrets (passwords, the RPC URL, which usually embeds an API key) are `SecretStr`: they print as
`**********` and never reach logs or the dashboard. `load()` turns a validation failure into a `ConfigError`
whose one-line message names the variable.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError

ENV_FILE = ".env"


class PipelineSettings(BaseSettings):
    """Base of every settings model: reads `.env` too, ignores unknown variables, frozen (copy with `model_copy`).

    A subclass only names its prefix, `model_config = SettingsConfigDict(env_prefix="REDIS_")`; pydantic merges
    that into this config.
    """

    model_config = SettingsConfigDict(env_prefix="", env_file=ENV_FILE, extra="ignore", frozen=True)


class RedisSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="REDIS_")

    host: str = "localhost"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    password: SecretStr | None = None
    socket_timeout_s: float = Field(30.0, gt=0)
    # Started by `python -m pipeline run` when nothing answers at host:port.
    data_dir: str = "data/redis"


class ClickHouseSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="CLICKHOUSE_")

    host: str = "localhost"
    port: int = Field(8123, ge=1, le=65535)
    user: str = "default"
    password: SecretStr | None = None
    database: str = Field("polymarket", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secure: bool = False
    # auto: none on loopback (compressing for a local socket only burns CPU), lz4 to a remote server
    compress: Literal["auto", "none", "lz4", "zstd", "gzip"] = "auto"
    connect_timeout_s: float = Field(10.0, gt=0)
    send_receive_timeout_s: float = Field(300.0, gt=0)
    # Rows per insert (ClickHouse asks for 10,000–100,000). Memory follows it: the bench measured the writer's
    # peak RSS at 227 MB with 10,000, 269 MB with 20,000 and 488 MB with 50,000, at the same throughput.
    batch_size: int = Field(10_000, ge=1)
    flush_interval_s: float = Field(1.0, gt=0)
    insert_max_attempts: int = Field(5, ge=1)
    # Insert only ids the table does not hold yet (common/unique_insert.py). A bench knob: false measures the
    # writer without the check, and then overlapping sources or re-runs do count rows twice.
    unique_keys: bool = True
    # Used by the embedded server (`python -m pipeline embedded-clickhouse`).
    data_dir: str = "data/clickhouse"


class HttpSettings(PipelineSettings):
    """Timeouts per phase (as httpx.Timeout) and the retry policy for every upstream call."""

    model_config = SettingsConfigDict(env_prefix="HTTP_")

    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    write_timeout_s: float = Field(30.0, gt=0)
    pool_timeout_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(8, ge=1)
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    user_agent: str = "polymarket-pipeline/0.1"


class SourceSettings(PipelineSettings):
    """Where the upstream APIs live: Polymarket's by default, the simulator's in demo and tests."""

    gamma_api_url: str = "https://gamma-api.polymarket.com"
    goldsky_url: str = (
        "https://api.goldsky.com/api/public/project_cl6mb8i9h0003e201j6li0diw/subgraphs/orderbook-subgraph/0.0.1/gn"
    )
    polygon_rpc_url: SecretStr = SecretStr("https://polygon-rpc.com")


class StreamSettings(PipelineSettings):
    """Consumer-group behaviour shared by every consumer (docs/CONTRACT.md §3 rules 2 and 5)."""

    model_config = SettingsConfigDict(env_prefix="STREAM_")

    block_ms: int = Field(1000, ge=1)
    # Must exceed the worst batch time, or healthy work is stolen and done twice.
    claim_min_idle_ms: int = Field(60_000, ge=1)
    claim_interval_s: float = Field(30.0, gt=0)
    max_deliveries: int = Field(5, ge=1)
    trim_interval_s: float = Field(5.0, gt=0)


class LogSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="LOG_")

    level: Literal["debug", "info", "warning", "error"] = "info"
    # console: human-readable key=value lines; json: one JSON object per line.
    format: Literal["console", "json"] = "console"
    dir: str = "logs"


class ServiceSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="SERVICE_")

    heartbeat_interval_s: float = Field(2.0, gt=0)
    # A heartbeat older than this marks the service dead on the dashboard.
    dead_after_s: float = Field(15.0, gt=0)


SettingsT = TypeVar("SettingsT", bound=PipelineSettings)


def env_name(model: type[PipelineSettings], field_name: str) -> str:
    prefix = model.model_config.get("env_prefix") or ""
    return f"{prefix}{field_name}".upper()


def load(model: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build `model` from the environment; a bad value raises ConfigError naming its variable."""
    try:
        return model(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(model, exc)) from None


def describe_validation_error(model: type[PipelineSettings], exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field_name = str(error["loc"][0]) if error["loc"] else ""
        field = model.model_fields.get(field_name)
        is_secret = field is not None and "SecretStr" in repr(field.annotation)
        shown = "" if is_secret or "input" not in error else f" (got {error['input']!r})"
        problems.append(f"{env_name(model, field_name)}: {error['msg']}{shown}")
    return "invalid configuration: " + "; ".join(problems)
