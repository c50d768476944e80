"""supervisord.conf, docker-compose.yml and the Dockerfile say what the operations guide promises.

supervisord.conf is read by supervisor's own parser (with the PIPELINE_* variables `pipeline run` sets), so a typo
in an option or an expansion fails here, not at an operator's first start.
"""

from __future__ import annotations

import configparser
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions

from common.config import RedisSettings, load
from pipeline.embedded.redis_server import SERVER_SETTINGS
from pipeline.harness.fleet import SERVICE_MODULES

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {**SERVICE_MODULES, "dashboard": "dashboard.app"}  # service -> module, as the harness starts them
SERVERS = {"redis", "clickhouse", "simulator"}
PIPELINE_ENV = {
    "PIPELINE_PYTHON": "/opt/venv/bin/python",
    "PIPELINE_EMBEDDED_REDIS": "true",
    "PIPELINE_EMBEDDED_CLICKHOUSE": "false",
    "PIPELINE_DEMO": "true",
    "PIPELINE_AUTOSTART_SERVICES": "true",
}


def supervisor_programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """supervisord's own view of the file, as if it lived in tmp_path (its data/ and logs/ must exist)."""
    for folder in ("data", "logs"):
        (tmp_path / folder).mkdir()
    shutil.copy(ROOT / "supervisord.conf", tmp_path / "supervisord.conf")
    for name, value in {**PIPELINE_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    options = ServerOptions()
    options.configfile = str(tmp_path / "supervisord.conf")
    options.process_config(do_usage=False)
    return {p.name: p for group in options.process_group_configs for p in group.process_configs}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_supervisord_runs_every_service_and_the_servers_under_their_seed_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    programs = supervisor_programs(tmp_path, monkeypatch)
    assert set(programs) == set(SERVICES) | SERVERS
    for name, module in SERVICES.items():
        assert programs[name].command == f"/opt/venv/bin/python -m {module}"
        assert importlib.util.find_spec(module) is not None


def test_supervisord_programs_restart_log_under_logs_and_stop_gently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, program in supervisor_programs(tmp_path, monkeypatch).items():
        assert program.autorestart is RestartUnconditionally, name  # autorestart=true
        assert program.stopsignal == 15, name  # SIGTERM: the service finishes and acks its batch
        assert program.stopwaitsecs >= 10, name
        assert program.stdout_logfile == str(tmp_path / "logs" / f"{name}.out"), name
        assert program.redirect_stderr, name  # tracebacks land in the same file
        assert program.directory == str(tmp_path), name  # .env and relative data/ paths resolve in the checkout
        assert "password" not in program.command.lower(), name  # secrets only through the environment
        if name in SERVICES:
            assert program.autostart is True
            assert program.startretries >= 100, name  # a service that keeps failing never ends FATAL


def test_supervisord_starts_servers_first_and_follows_the_pipeline_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    programs = supervisor_programs(tmp_path, monkeypatch, PIPELINE_AUTOSTART_SERVICES="false")
    assert programs["redis"].autostart is True  # PIPELINE_EMBEDDED_REDIS=true
    assert programs["clickhouse"].autostart is False  # PIPELINE_EMBEDDED_CLICKHOUSE=false
    assert programs["simulator"].autostart is True  # PIPELINE_DEMO=true
    assert not any(programs[name].autostart for name in SERVICES)  # pipeline run starts them once servers answer
    servers = max(programs[name].priority for name in SERVERS)
    assert all(programs[name].priority > servers for name in SERVICES)
    assert programs["dashboard"].priority > programs["trade_processor"].priority


def test_supervisorctl_needs_no_environment_to_find_the_socket() -> None:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "supervisord.conf")
    assert parser.get("supervisorctl", "serverurl") == "unix://%(here)s/data/supervisor.sock"
    assert parser.get("unix_http_server", "file") == "%(here)s/data/supervisor.sock"
    assert "ENV_" not in parser.get("supervisorctl", "serverurl")


def test_compose_has_one_container_per_service_plus_redis_and_clickhouse() -> None:
    services = compose()["services"]
    assert set(services) == set(SERVICES) | {"redis", "clickhouse"}
    for name, module in SERVICES.items():
        service = services[name]
        assert service["command"] == ["python", "-m", module]
        assert service["restart"] == "unless-stopped"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["clickhouse"]["condition"] == "service_healthy"
        assert service["environment"]["REDIS_HOST"] == "redis"
        assert service["environment"]["CLICKHOUSE_HOST"] == "clickhouse"
        assert service["healthcheck"]["test"][0] == "CMD"
        assert service["stop_grace_period"]
        assert "container_name" not in service
    for name in SERVICES.keys() - {"dashboard"}:
        assert services[name]["healthcheck"]["test"][1:] == ["python", "-m", "pipeline.launch.healthcheck", name]


def test_compose_redis_is_durable_and_clickhouse_is_the_official_server() -> None:
    services = compose()["services"]
    command = services["redis"]["command"]
    given = dict(zip(command[1::2], command[2::2], strict=True))
    # the embedded Redis' settings, the same in compose: AOF always, no snapshots, the rewrite's threshold and format
    assert given == {f"--{name}": value.strip('"') for name, value in SERVER_SETTINGS.items()}
    assert given["--appendfsync"] == "always"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    clickhouse = services["clickhouse"]
    assert clickhouse["image"].startswith("clickhouse/clickhouse-server:")
    assert "clickhouse-data:/var/lib/clickhouse" in clickhouse["volumes"]
    assert clickhouse["ulimits"]["nofile"]["soft"] >= 262144
    assert "/ping" in " ".join(clickhouse["healthcheck"]["test"])
    assert set(compose()["volumes"]) >= {"redis-data", "clickhouse-data"}


def test_compose_trade_processor_scales_and_dashboard_listens_on_8000() -> None:
    services = compose()["services"]
    processor = services["trade_processor"]
    assert processor["environment"]["TRADE_PROCESSOR_CONSUMER"] == ""  # trade_processor@<container hostname>
    assert "ports" not in processor and "container_name" not in processor
    dashboard = services["dashboard"]
    assert dashboard["environment"]["DASHBOARD_HOST"] == "0.0.0.0"
    assert any(str(port).endswith(":8000") for port in dashboard["ports"])


def test_image_runs_as_a_user_and_bakes_in_no_secret() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")  # one line per instruction
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    users = [rest for word, *rest in instructions if word == "USER"]
    assert users and users[-1] != ["root"]
    settings = " ".join(rest[0] for word, *rest in instructions if word in ("ENV", "ARG") and rest).upper()
    assert "PYTHONUNBUFFERED" in settings and "PIP_NO_CACHE_DIR" in settings
    assert not any(word in settings for word in ("PASSWORD", "SECRET", "KEY", "RPC_URL"))
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", "data", "logs", ".git"} <= set(ignored)


def test_compose_sentinel_variant_fails_over_to_a_durable_replica_and_points_every_service_at_the_sentinels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variant = yaml.safe_load((ROOT / "docker-compose.sentinel.yml").read_text())
    services = variant["services"]
    durable = {f"--{name}": value.strip('"') for name, value in SERVER_SETTINGS.items()}
    for name in ("redis", "redis-replica"):
        options = services[name]["command"][1 : -3 if name == "redis-replica" else None]  # --replicaof host port
        given = dict(zip(options[::2], options[1::2], strict=True))
        assert given.items() >= durable.items()  # a promoted replica is as durable as the primary was
        assert (given["--min-replicas-to-write"], given["--min-replicas-max-lag"]) == ("1", "10")
    assert services["redis-replica"]["command"][-3:] == ["--replicaof", "redis", "6379"]
    sentinels = sorted(name for name in services if name.startswith("redis-sentinel-"))
    assert len(sentinels) == 3
    for name in sentinels:
        script = services[name]["command"][0]
        assert "'sentinel monitor pm redis 6379 2'" in script and "--sentinel" in script
    addresses = variant["x-sentinel-env"]["REDIS_SENTINELS"]
    assert addresses == ",".join(f"{name}:26379" for name in sentinels)
    assert set(compose()["services"]) - {"redis", "clickhouse"} == {
        name for name, service in services.items() if service.get("environment") == variant["x-sentinel-env"]
    }
    for name, value in variant["x-sentinel-env"].items():
        monkeypatch.setenv(name, value)
    settings = load(RedisSettings)  # what each service then reads, with the base file's REDIS_HOST beside it
    assert (settings.topology, settings.sentinel_master) == ("sentinel", "pm")
    assert set(variant["volumes"]) == {"redis-replica-data"}
