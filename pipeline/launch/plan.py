"""What `python -m pipeline run`/`demo` will start, decided before anything starts.

Redis and ClickHouse: a configured server that answers is used as is; with nothing answering on a local address
the embedded one is started on REDIS_PORT/CLICKHOUSE_PORT. Anything else fails at once with one line: a remote
server that does not answer, or a local port held by something that is not Redis/ClickHouse. The demo adds the
simulator and points GAMMA_API_URL, GOLDSKY_URL and POLYGON_RPC_URL at it; its embedded servers keep their data
under data/demo/, so simulated markets and cursors never mix with the real ones of `run`.

The plan is a set of environment variables for supervisord (supervisord.conf reads PIPELINE_*; every program
reads its own settings), so the programs see exactly what was decided here.
"""

from __future__ import annotations

import errno
import importlib.util
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.clickhouse import ping
from common.config import ClickHouseSettings, GammaSettings, RedisSettings, SourceSettings, load
from common.errors import TransientSinkError
from dashboard.settings import DashboardSettings
from pipeline.embedded.redis_server import find_redis_server, is_reachable
from pipeline.launch.demo_simulator import DemoSimulatorSettings
from simulator.server import urls as simulator_urls

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""})
DEMO_REDIS_DATA_DIR = "data/demo/redis"
DEMO_CLICKHOUSE_DATA_DIR = "data/demo/clickhouse"
PING_TIMEOUT_S = 1.0


class LaunchError(Exception):
    """Something the operator must fix before (or while) starting; the message is one line saying what."""


@dataclass(frozen=True)
class Plan:
    demo: bool
    embedded_redis: bool
    embedded_clickhouse: bool
    redis: RedisSettings
    clickhouse: ClickHouseSettings
    dashboard_url: str
    simulator_url: str = ""
    env: dict[str, str] = field(default_factory=dict)  # what supervisord's environment adds to ours
    warnings: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        """What the operator needs to know, one line each; no secret (the RPC URL may hold a key: not shown)."""
        redis, ch = self.redis, self.clickhouse
        lines = [
            f"Redis {'embedded' if self.embedded_redis else 'configured'} at "
            + (f"{redis.host}:{redis.port}" if self.embedded_redis else redis.describe())
            + (f" (AOF under {redis.data_dir})" if self.embedded_redis else ""),
            f"ClickHouse {'embedded (chDB)' if self.embedded_clickhouse else 'configured'} at {ch.host}:{ch.port}"
            + (f" (data under {ch.data_dir})" if self.embedded_clickhouse else ""),
        ]
        if self.demo:
            lines.append(f"sources: the simulator at {self.simulator_url}")
        else:
            lines.append(f"sources: Gamma {load(SourceSettings).gamma_api_url}, Goldsky, Polygon RPC (POLYGON_RPC_URL)")
        return lines


def is_local(host: str) -> bool:
    return host.strip("[]").lower() in LOCAL_HOSTS


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something holds `port`: binding it fails with EADDRINUSE (the embedded servers bind 127.0.0.1)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clickhouse_answers(settings: ClickHouseSettings) -> bool:
    try:
        ping(settings, timeout_s=PING_TIMEOUT_S)
    except TransientSinkError:
        return False
    return True


def must_start_here(what: str, prefix: str, host: str, port: int, *, answers: bool, probe: str) -> bool:
    """False when the configured server answers; True when one can be started here; else why not (LaunchError)."""
    if answers:
        return False
    if not is_local(host):
        raise LaunchError(f"{what} at {host}:{port} ({prefix}_HOST) does not answer {probe}: start it, or unset it")
    if port_in_use(port):
        raise LaunchError(
            f"port {port} ({prefix}_PORT) is held by something that does not answer {probe}: "
            f"free the port or set {prefix}_PORT"
        )
    return True


def need_embedded_redis(settings: RedisSettings) -> bool:
    # A wrong REDIS_PASSWORD looks like a foreign server on the port: PING is refused.
    probe = "Redis PING (or REDIS_PASSWORD is wrong)"
    if settings.topology != "standalone":
        # An embedded standalone server is no stand-in for a Sentinel or Cluster deployment: wait for it instead.
        if not is_reachable(settings):
            raise LaunchError(f"Redis ({settings.describe()}) does not answer {probe}: start it, or unset "
                              + ("REDIS_SENTINELS" if settings.sentinels else "REDIS_CLUSTER"))  # fmt: skip
        return False
    if not must_start_here("Redis", "REDIS", settings.host, settings.port, answers=is_reachable(settings), probe=probe):
        return False
    if settings.tls:
        raise LaunchError(f"Redis at {settings.describe()} does not answer over TLS, and the embedded Redis has no "
                          "TLS: start that server, or unset REDIS_TLS (a rediss:// REDIS_URL sets it)")  # fmt: skip
    find_redis_server()  # ConfigError saying how to install it
    return True


def need_embedded_clickhouse(settings: ClickHouseSettings) -> bool:
    answers = clickhouse_answers(settings)
    if not must_start_here("ClickHouse", "CLICKHOUSE", settings.host, settings.port, answers=answers, probe="/ping"):
        return False
    if importlib.util.find_spec("chdb") is None:
        raise LaunchError("the embedded ClickHouse needs the chdb-core package: pip install -r requirements.txt")
    return True


def simulator_port(environ: Mapping[str, str], settings: DemoSimulatorSettings) -> int:
    """SIMULATOR_PORT when set (it must be free); else 8545, or any free port when 8545 is taken."""
    if not port_in_use(settings.port, settings.host):
        return settings.port
    if "SIMULATOR_PORT" in environ:
        raise LaunchError(f"port {settings.port} (SIMULATOR_PORT) is in use: free it or choose another")
    return free_port()


def dashboard_url(settings: DashboardSettings) -> str:
    if port_in_use(settings.port, settings.host if is_local(settings.host) else "0.0.0.0"):
        raise LaunchError(f"port {settings.port} (DASHBOARD_PORT) is in use: stop what holds it or set DASHBOARD_PORT")
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{shown_host}:{settings.port}/"


def plan_simulator(environ: Mapping[str, str], env: dict[str, str], rate: float | None) -> str:
    """Pick the simulator's port, point the three source URLs at it; returns its base URL."""
    settings = load(DemoSimulatorSettings, **({"rate": rate} if rate is not None else {}))
    port = simulator_port(environ, settings)
    base_url = f"http://{settings.host}:{port}"
    env.update(SIMULATOR_PORT=str(port), SIMULATOR_RATE=str(settings.rate), **simulator_urls(base_url))
    return base_url


def make_plan(*, demo: bool, python: str, environ: Mapping[str, str], rate: float | None = None) -> Plan:
    """Decide; `environ` is what the settings are read from (the launcher's os.environ).

    Raises LaunchError, or ConfigError for a bad setting (naming its variable).
    """
    # The launcher starts the services itself once the servers answer (no start-up race with them).
    env = {"PIPELINE_PYTHON": python, "PIPELINE_DEMO": str(demo).lower(), "PIPELINE_AUTOSTART_SERVICES": "false"}
    if demo:
        env.update(REDIS_DATA_DIR=DEMO_REDIS_DATA_DIR, CLICKHOUSE_DATA_DIR=DEMO_CLICKHOUSE_DATA_DIR)
    load(GammaSettings)  # read by three services: a bad GAMMA_VERSIONS stops the run before any starts
    redis = load(RedisSettings, **({"data_dir": DEMO_REDIS_DATA_DIR} if demo else {}))
    clickhouse = load(ClickHouseSettings, **({"data_dir": DEMO_CLICKHOUSE_DATA_DIR} if demo else {}))
    dashboard = dashboard_url(load(DashboardSettings))
    embedded_redis = need_embedded_redis(redis)
    embedded_clickhouse = need_embedded_clickhouse(clickhouse)
    env["PIPELINE_EMBEDDED_REDIS"] = str(embedded_redis).lower()
    env["PIPELINE_EMBEDDED_CLICKHOUSE"] = str(embedded_clickhouse).lower()
    if embedded_clickhouse and clickhouse.deployment == "server":  # the default: say what it is (doctor shows it)
        env["CLICKHOUSE_DEPLOYMENT"] = "embedded"
        clickhouse = clickhouse.model_copy(update={"deployment": "embedded"})
    simulator_url, warnings = "", ()
    if demo:
        simulator_url = plan_simulator(environ, env, rate)
        if not (embedded_redis and embedded_clickhouse):
            warnings = ("the demo writes simulated data into the configured Redis/ClickHouse",)
    return Plan(
        demo=demo,
        embedded_redis=embedded_redis,
        embedded_clickhouse=embedded_clickhouse,
        redis=redis,
        clickhouse=clickhouse,
        dashboard_url=dashboard,
        simulator_url=simulator_url,
        env=env,
        warnings=warnings,
    )
