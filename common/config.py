"""Settings, one pydantic-settings model per concern; the only module that reads the environment and `.env`.

Every field maps to one environment variable (prefix + field name, upper-case). Durations carry their unit in
the name. Secrets (passwords, the RPC URL, which usually embeds an API key) are `SecretStr`: they print as
`**********` and never reach logs or the dashboard. `load()` turns a validation failure into a `ConfigError`
whose one-line message names the variable.
"""

from __future__ import annotations

import re
from pathlib import Path
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


class RedisKeySettings(PipelineSettings):
    """The one setting `common.keys` needs, read alone so naming a key never depends on the connection settings."""

    model_config = SettingsConfigDict(env_prefix="REDIS_")

    # Put in front of every pipeline key. Empty keeps the documented names (`stream:trades`); Redis Cluster needs one
    # hash tag for all of them, e.g. `{pm}:`, so every script's keys share a slot (docs/operations.md).
    key_prefix: str = ""  # checked by RedisSettings: importing common.keys must not fail before logging is set up


class RedisSettings(RedisKeySettings):
    """Where Redis is: REDIS_URL, or REDIS_HOST/REDIS_PORT/REDIS_DB/REDIS_USERNAME/REDIS_PASSWORD/REDIS_TLS; with
    REDIS_SENTINELS + REDIS_SENTINEL_MASTER the primary is asked of Sentinel; REDIS_CLUSTER=true treats the address
    as any node of a Redis Cluster. `common.redis_client.make_redis` is the one place that turns this into a client."""

    model_config = SettingsConfigDict(env_prefix="REDIS_")

    url: SecretStr | None = None  # redis:// or rediss://[user[:password]@]host[:port][/db]; sets the fields below
    host: str = "localhost"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    username: str | None = None  # an ACL user; none is Redis' `default` user
    password: SecretStr | None = None
    tls: bool = False  # TLS to Redis and to the Sentinels (a rediss:// URL sets it)
    tls_ca_file: str | None = None  # none: the system's trusted CAs
    tls_verify: bool = True  # the server's certificate and host name; off only for a test server
    tls_cert_file: str | None = None  # a client certificate, for servers that require one (mutual TLS)
    tls_key_file: str | None = None  # the client certificate's key (set with REDIS_TLS_CERT_FILE)
    sentinels: str | None = None  # host:port,host:port,... of the Sentinels that know the primary
    sentinel_master: str | None = None  # the name the Sentinels monitor the primary under
    sentinel_password: SecretStr | None = None  # when the Sentinels themselves require one (their `requirepass`)
    cluster: bool = False  # Redis Cluster: the address is any node; needs a hash tag in REDIS_KEY_PREFIX
    socket_timeout_s: float = Field(30.0, gt=0)
    # Started by `python -m pipeline run` when nothing answers at host:port.
    data_dir: str = "data/redis"

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, data: Any) -> Any:
        """Fill the address fields from REDIS_URL; setting one of them as well is ambiguous, so refused."""
        if not isinstance(data, dict) or not data.get("url"):
            return data
        url = data["url"].get_secret_value() if isinstance(data["url"], SecretStr) else str(data["url"])
        given = sorted(name for name in URL_FIELDS if data.get(name) not in (None, ""))
        if given:
            raise ValueError(
                f"REDIS_URL and {', '.join(env_name(cls, name) for name in given)} both say where Redis is: set one"
            )
        return data | parse_redis_url(url)

    @model_validator(mode="after")
    def _coherent(self) -> RedisSettings:
        if re.search(r"[\s*?\[\]\\]", self.key_prefix) or len(self.key_prefix) > 64:
            raise ValueError(
                f"REDIS_KEY_PREFIX {self.key_prefix!r}: at most 64 characters, no whitespace, * ? [ ] or \\ "
                "(a prefix is matched literally in SCAN patterns)"
            )
        if self.sentinels and self.cluster:
            raise ValueError("REDIS_SENTINELS and REDIS_CLUSTER=true exclude each other: Sentinel or Cluster, not both")
        if bool(self.sentinels) != bool(self.sentinel_master):
            raise ValueError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together: set both or neither")
        if self.sentinels:
            sentinel_addresses(self.sentinels)  # raises naming REDIS_SENTINELS
        if self.cluster and self.db != 0:
            raise ValueError(f"REDIS_DB={self.db}: a Redis Cluster has database 0 only")
        if self.cluster and not hash_tag(self.key_prefix):
            raise ValueError(
                f"REDIS_CLUSTER=true needs REDIS_KEY_PREFIX with a hash tag (e.g. '{{pm}}:'; got {self.key_prefix!r})"
                ", so that every script's keys share one slot"
            )
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path and not self.tls:
                raise ValueError(f"{env_name(type(self), name)} is set but TLS is off (REDIS_TLS, or a rediss:// URL)")
            if path and not Path(path).is_file():
                raise ValueError(f"{env_name(type(self), name)}: no such file: {path}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together: set both or neither")
        return self

    @property
    def topology(self) -> Literal["standalone", "sentinel", "cluster"]:
        return "sentinel" if self.sentinels else "cluster" if self.cluster else "standalone"

    def describe(self) -> str:
        """Where Redis is, for logs and the dashboard: no password, ever."""
        scheme = "rediss" if self.tls else "redis"
        user = f"{self.username}@" if self.username else ""
        if self.sentinels:
            return f"sentinel {self.sentinel_master} via {self.sentinels} ({scheme}, {user}db {self.db})"
        where = f"{scheme}://{user}{self.host}:{self.port}/{self.db}"
        return f"cluster via {where}" if self.cluster else where


# The fields REDIS_URL sets.
URL_FIELDS = ("host", "port", "db", "username", "password", "tls")


def parse_redis_url(url: str) -> dict[str, Any]:
    """`redis://` or `rediss://[user[:password]@]host[:port][/db]` as settings fields; percent-escapes decoded."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("REDIS_URL must look like redis://[user:password@]host[:port][/db] or rediss://... "
                         f"(scheme {parts.scheme or 'missing'!r})")  # fmt: skip
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"REDIS_URL: the path must be a database number, got /{path}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("REDIS_URL: the port must be a number from 1 to 65535") from None
    fields: dict[str, Any] = {
        "host": parts.hostname,
        "port": port,
        "db": int(path or 0),
        "tls": parts.scheme == "rediss",
    }
    if parts.username:
        fields["username"] = unquote(parts.username)
    if parts.password:
        fields["password"] = SecretStr(unquote(parts.password))
    return fields


def sentinel_addresses(sentinels: str) -> list[tuple[str, int]]:
    """`host:port,host:port` as pairs; a malformed item raises naming REDIS_SENTINELS."""
    addresses = []
    for item in (part.strip() for part in sentinels.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS: {item!r} is not host:port (expected host:port,host:port,...)")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def hash_tag(prefix: str) -> str | None:
    """The hash tag Redis Cluster would hash a key starting with `prefix` by: the text in its first {...}, if any."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1)
    return prefix[start + 1 : end] or None if start != -1 and end != -1 else None


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
    # Rows per insert at most (ClickHouse asks for 10,000–100,000): the writer reads this many rows' worth of
    # entries, BATCH_SIZE / STREAM_PAGE_MAX_ITEMS pages (at least one). Fewer, bigger parts cost ClickHouse less
    # CPU per fill (26 µs at 10,000, 14 at 40,000); the writer's peak RSS follows it (97 MB at 10,000, 142-149 MB
    # at 40,000, 154 MB at 50,000): 30,000 keeps it well under 150 MB (docs/performance.md).
    batch_size: int = Field(30_000, ge=1)
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
    # TLS (CLICKHOUSE_SECURE or an https URL): the server certificate is verified unless false
    verify: bool = True
    ca_file: str | None = None  # a PEM bundle of the CAs to trust instead of the system's

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

    # the Gamma protocol versions listed and looked up (`v1`, `v2` or both, comma-separated)
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
    """Consumer-group behaviour shared by every consumer (docs/CONTRACT.md §3 rules 2 and 5)."""

    model_config = SettingsConfigDict(env_prefix="STREAM_")

    block_ms: int = Field(1000, ge=1)
    # Must exceed the worst batch time, or healthy work is stolen and done twice.
    claim_min_idle_ms: int = Field(60_000, ge=1)
    claim_interval_s: float = Field(30.0, gt=0)
    max_deliveries: int = Field(5, ge=1)
    trim_interval_s: float = Field(5.0, gt=0)
    # An entry's `data` is a page, a JSON array of what one source call returned or of the trades of one processed
    # entry (docs/CONTRACT.md §3), split so that no entry holds more than this many items
    page_max_items: int = Field(1000, ge=1)
    # The most bytes an entry's page holds (a page of Gamma events can be megabytes); a bigger item is a page alone
    page_max_bytes: int = Field(512 * 1024, ge=1024)


class LogSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="LOG_")

    level: Literal["debug", "info", "warning", "error"] = "info"
    # console: human-readable key=value lines; json: one JSON object per line.
    format: Literal["console", "json"] = "console"
    dir: str = "logs"


class ServiceSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="SERVICE_")

    # Once per dashboard refresh (5 s): more often only cost CPU in every service and in Redis; dead_after_s
    # still allows two lost beats.
    heartbeat_interval_s: float = Field(5.0, gt=0)
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
        # a check across settings (a model validator) has no field and its input is every setting, secrets
        # included: its message names the settings itself and shows no input
        shown = "" if is_secret or not field_name or "input" not in error else f" (got {error['input']!r})"
        named = f"{env_name(model, field_name)}: " if field_name else ""
        problems.append(f"{named}{error['msg'].removeprefix('Value error, ')}{shown}")
    return "invalid configuration: " + "; ".join(problems)
