"""Every configuration error names its variable; secrets never show."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from common.config import (
    ClickHouseSettings,
    GammaSettings,
    HttpSettings,
    LogSettings,
    PipelineSettings,
    RedisSettings,
    ServiceSettings,
    SourceSettings,
    StreamSettings,
    env_name,
    load,
)
from common.errors import ConfigError

BAD_VALUES = [
    (RedisSettings, "REDIS_PORT", "not-a-port"),
    (RedisSettings, "REDIS_PORT", "70000"),
    (RedisSettings, "REDIS_DB", "-1"),
    (ClickHouseSettings, "CLICKHOUSE_PORT", "http"),
    (ClickHouseSettings, "CLICKHOUSE_DATABASE", "drop table; --"),
    (ClickHouseSettings, "CLICKHOUSE_BATCH_SIZE", "0"),
    (ClickHouseSettings, "CLICKHOUSE_FLUSH_INTERVAL_S", "soon"),
    (HttpSettings, "HTTP_READ_TIMEOUT_S", "-5"),
    (HttpSettings, "HTTP_MAX_ATTEMPTS", "0"),
    (StreamSettings, "STREAM_MAX_DELIVERIES", "many"),
    (StreamSettings, "STREAM_CLAIM_MIN_IDLE_MS", "0"),
    (LogSettings, "LOG_FORMAT", "xml"),
    (LogSettings, "LOG_LEVEL", "loud"),
    (ServiceSettings, "SERVICE_HEARTBEAT_INTERVAL_S", "0"),
    (GammaSettings, "GAMMA_VERSIONS", "v3"),
    (GammaSettings, "GAMMA_VERSIONS", ""),
    (GammaSettings, "GAMMA_VERSIONS", "v1;v2"),
]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No variable from the developer's shell or .env changes what these tests see."""
    monkeypatch.chdir(tmp_path)
    for model in (RedisSettings, ClickHouseSettings, HttpSettings, SourceSettings, StreamSettings, LogSettings,
                  GammaSettings):  # fmt: skip
        prefix = model.model_config.get("env_prefix") or ""
        for name in model.model_fields:
            monkeypatch.delenv(f"{prefix}{name}".upper(), raising=False)


@pytest.mark.parametrize(("model", "variable", "value"), BAD_VALUES)
def test_config_error_names_its_variable(monkeypatch, model: type[PipelineSettings], variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load(model)
    message = str(info.value)
    assert variable in message
    assert "\n" not in message


@pytest.mark.parametrize(("value", "versions"), [("v1,v2", ("v1", "v2")), (" V2 , v1,v1", ("v1", "v2")),
                                                 ("v1", ("v1",)), ("v2", ("v2",))])  # fmt: skip
def test_gamma_versions_read_as_a_comma_list(monkeypatch, value: str, versions: tuple[str, ...]) -> None:
    monkeypatch.setenv("GAMMA_VERSIONS", value)
    assert load(GammaSettings).versions == versions


def test_defaults_are_the_seeds() -> None:
    redis = load(RedisSettings)
    clickhouse = load(ClickHouseSettings)
    assert (redis.host, redis.port, redis.db, redis.password) == ("localhost", 6379, 0, None)
    assert (clickhouse.host, clickhouse.port, clickhouse.user, clickhouse.database) == (
        "localhost",
        8123,
        "default",
        "polymarket",
    )


def test_settings_come_from_dotenv_file(tmp_path) -> None:
    (tmp_path / ".env").write_text("REDIS_PORT=6390\nGAMMA_API_URL=http://127.0.0.1:9/gamma\n")
    assert load(RedisSettings).port == 6390
    assert load(SourceSettings).gamma_api_url == "http://127.0.0.1:9/gamma"


class KnobSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="KNOB_")

    poll_interval_s: float = 1.0


def test_a_model_naming_only_its_prefix_keeps_the_shared_config(tmp_path) -> None:
    (tmp_path / ".env").write_text("KNOB_POLL_INTERVAL_S=2.5\nKNOB_UNKNOWN=1\n")
    knobs = load(KnobSettings)
    assert knobs.poll_interval_s == 2.5  # read from .env; the unknown variable is ignored
    assert env_name(KnobSettings, "poll_interval_s") == "KNOB_POLL_INTERVAL_S"
    with pytest.raises(ValidationError):
        knobs.poll_interval_s = 3.0  # frozen: change a copy with model_copy(update=...)


def test_secrets_never_print(monkeypatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("POLYGON_RPC_URL", "https://polygon.example/v2/SECRETKEY")
    redis, sources = load(RedisSettings), load(SourceSettings)
    shown = (
        repr(redis) + str(redis) + repr(sources) + str(sources) + str(redis.model_dump()) + str(sources.model_dump())
    )
    assert "hunter2" not in shown and "SECRETKEY" not in shown
    assert redis.password is not None and redis.password.get_secret_value() == "hunter2"
