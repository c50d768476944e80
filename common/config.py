"""Settings, one pydantic-settings model per concern; the only module that reads the environment and `.env`.

Every field maps to one environment variable (prefix + field name, upper-case). Durations carry their unit in
the name. Secrets (passwords, the RPC URL, which usually embeds an API key) are `SecretStr`: they print as
`**********` and never reach logs or the dashboard. `load()` turns a validation failure into a `ConfigError`
whose one-line message names the variable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.deployment import Deployment
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

    # --- where ClickHouse runs (common/deployment.py; docs/operations.md "Where ClickHouse runs") ---------------
    # embedded | server | cluster (one shard, N replicas, Keeper) | cloud (ClickHouse Cloud). `python -m pipeline
    # run` sets embedded for the services when it starts its own ClickHouse and this is unset.
    deployment: Deployment = "server"
    # cluster: the remote_servers cluster holding every replica, for the one CREATE DATABASE ... ON CLUSTER
    cluster: str = Field("{cluster}", pattern=r"^(\{cluster\}|[A-Za-z_][A-Za-z0-9_.-]*)$")
    # One URL instead of host/port/secure/user/password/database: https://user:password@host:8443/database
    url: SecretStr | None = None
    # TLS (CLICKHOUSE_SECURE or an https URL): the server certificate is verified unless false; ca_file: a PEM
    # bundle of the CAs to trust instead of the system's.
    verify: bool = True
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url_has_a_host(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and _split_url(url.get_secret_value()) is None:
            raise ValueError("must look like https://user:password@host:8443/database (http or https)")
        return url

    @model_validator(mode="before")
    @classmethod
    def _apply_url(cls, values: Any) -> Any:
        """CLICKHOUSE_URL's parts win over the separate settings (a bad URL is reported by `_url_has_a_host`)."""
        url = values.get("url") if isinstance(values, dict) else None
        if isinstance(url, SecretStr):
            url = url.get_secret_value()
        parts = _split_url(url) if isinstance(url, str) and url else None
        return values if parts is None else {**values, **parts}


def _split_url(url: str) -> dict[str, Any] | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    secure = parts.scheme == "https"
    values: dict[str, Any] = {"host": parts.hostname, "secure": secure, "port": port or (8443 if secure else 8123)}
    if parts.username:
        values["user"] = unquote(parts.username)
    if parts.password:
        values["password"] = unquote(parts.password)
    if parts.path.strip("/"):
        values["database"] = parts.path.strip("/")
    return values


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
    # Data API v2: a cross-check only (`python -m pipeline verify --against data-api`), never a source of trades.
    data_api_url: str = "https://data-api.polymarket.com"


GammaVersion = Literal["v1", "v2"]


class GammaSettings(PipelineSettings):
    """Which of Gamma's protocol versions the pipeline lists, looks up and resolves fills for.

    Gamma answers only `version: "v1"` (CTF) items to a request that names no `version` (docs/upstream-gamma.md):
    every listing and lookup names this selection, as a repeated `version` key. `GAMMA_VERSIONS=v1,v2` (default)
    follows every market; `v1` leaves Protocol V2 markets out on purpose: their fills are then written at once
    without a market and counted as excluded, instead of waiting for a market that will never be asked for.
    """

    model_config = SettingsConfigDict(env_prefix="GAMMA_")

    versions: Annotated[tuple[GammaVersion, ...], NoDecode] = ("v1", "v2")

    @field_validator("versions", mode="before")
    @classmethod
    def split_versions(cls, value: object) -> object:
        """The environment's "v1,v2" -> ("v1", "v2"), sorted, each once; empty is refused."""
        if isinstance(value, str):
            value = [part.strip().lower() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError('names no version; use "v1", "v2" or "v1,v2"')
            return tuple(sorted(set(value)))
        return value


class StreamSettings(PipelineSettings):
    """Consumer-group behaviour shared by every consumer (DESIGN §3 rules 2 and 5)."""

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


def load(model: type[SettingsT], **overrides: object) -> SettingsT:
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
