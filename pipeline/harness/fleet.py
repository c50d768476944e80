"""A fleet of pipeline processes for the benchmark and the chaos run: the supervisord layout, one process each.

`Fleet` starts the simulator, the embedded Redis and ClickHouse, the four ingesters, the trade processor and the
ClickHouse writer as separate subprocesses (`python -m ...`), every one in its own process group, with the
environment that points them at the simulator and at the servers on free ports. All data and logs live under
one work folder (`<workdir>/data/<program>`, `<workdir>/logs/<program>.out`). It can SIGKILL and restart any of
them (Redis and ClickHouse come back on the same port and data folder), samples each one's resident memory, and
`stop_all()` (also on Ctrl-C or an exception, via `with Fleet(...)`) leaves no process behind: SIGTERM to each
group, then SIGKILL after a deadline. Children also get PR_SET_PDEATHSIG, so a SIGKILLed parent takes them along.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from common import keys, tables
from common.config import RedisSettings
from common.redis_client import make_sync_redis
from pipeline.embedded.redis_server import is_reachable

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVERS = ("simulator", "redis", "clickhouse")
SERVICE_MODULES = {
    "polymarket_ingester": "ingesters.polymarket_ingester",
    "polymarket_events_ingester": "ingesters.polymarket_events_ingester",
    "goldsky_ingester": "ingesters.goldsky_ingester",
    "chain_ingester": "ingesters.chain_ingester",
    "trade_processor": "processors.trade_processor",
    "clickhouse_writer": "processors.clickhouse_writer",
}
READY_DEADLINE_S = 120.0  # the simulator builds a 2,000,000-fill world in a few seconds; chDB opens in ~2 s
STOP_DEADLINE_S = 20.0
PR_SET_PDEATHSIG = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PFN_MASK = (1 << 55) - 1  # pagemap entry: bits 0-54 the page frame number, bit 63 "present"

# What every service gets in the benchmark and the chaos run, unless the caller overrides it.
SERVICE_DEFAULTS = {
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "info",
    "CLICKHOUSE_DATABASE": "polymarket",
    "GOLDSKY_POLL_INTERVAL_S": "1",
    "CHAIN_POLL_INTERVAL_S": "1",
    # Client-side request budgets are politeness towards Polymarket's hosts; the local simulator needs none.
    "GOLDSKY_RATE_LIMIT_PER_S": "100",
    "CHAIN_RATE_LIMIT_PER_S": "200",
    "CHAIN_INITIAL_SPAN_BLOCKS": "2000",
    "CHAIN_MAX_SPAN_BLOCKS": "2000",
    "CHAIN_BLOCK_BATCH_SIZE": "1000",
    "GAMMA_RATE_PER_S": "30",
    "MARKETS_REFRESH_S": "10",
    "EVENTS_REFRESH_S": "10",
    "TOKEN_LOOKUP_INTERVAL_S": "0.5",
    "STREAM_BLOCK_MS": "200",
    "STREAM_TRIM_INTERVAL_S": "1",
    "SERVICE_HEARTBEAT_INTERVAL_S": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def read_status_kb(pid: int, field_name: str, file: str = "status") -> int:
    """A `VmRSS`/`VmHWM` line of /proc/<pid>/status in kB (0 when the process is gone); `file="smaps_rollup"`: a
    `Pss`/`Rss` line of it. PSS splits each shared page between the processes that map it, so PSS figures of
    several processes add up to memory counted once."""
    try:
        with open(f"/proc/{pid}/{file}") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def group_pids(pgid: int) -> list[int]:
    """Every live process of process group `pgid` (a program and any child it forked), from /proc/<pid>/stat."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def resident_frames(pid: int) -> set[int]:
    """The physical page frames a process has resident, from /proc/<pid>/pagemap (frame numbers are shown to root
    only: empty otherwise). A union over several processes is their memory counted once, whatever else on the
    machine maps the same pages (PSS splits a library's pages with every process of any user that maps it)."""
    frames: set[int] = set()
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps") as smaps, open(f"/proc/{pid}/pagemap", "rb") as pm:
        start = end = 0
        for line in smaps:
            head = line.split(maxsplit=1)[0]
            if not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
            elif head == "Rss:" and line.split()[1] != "0":
                with contextlib.suppress(OSError):
                    pm.seek(start // PAGE_SIZE * 8)
                    entries = np.frombuffer(pm.read((end - start) // PAGE_SIZE * 8), "<u8")
                    present = entries[(entries >> np.uint64(63)) == 1] & np.uint64(PFN_MASK)
                    frames.update(present[present != 0].tolist())
    return frames


def read_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and of the children it has reaped, from /proc/<pid>/stat (0 when it
    is gone). The children count: Redis rewrites its AOF in a forked child, real CPU of the pipeline's."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return sum(int(ticks) for ticks in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Program:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    peak_rss_kb: int = 0  # over every incarnation (a restart loses the kernel's high-water mark)
    cpu_s_before: float = 0.0  # CPU seconds of earlier incarnations
    cpu_s_now: float = 0.0  # CPU seconds of the current one, as last sampled

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def sample_rss(self) -> int:
        if not self.running:
            return 0
        assert self.process is not None
        self.peak_rss_kb = max(self.peak_rss_kb, read_status_kb(self.process.pid, "VmHWM"))
        self.cpu_s_now = max(self.cpu_s_now, read_cpu_s(self.process.pid))
        return read_status_kb(self.process.pid, "VmRSS")

    def memory_kb(self) -> tuple[int, int]:
        """(PSS, RSS) in kB of the program's whole process group now; (0, 0) when it is not running."""
        if not self.running:
            return 0, 0
        assert self.process is not None
        pids = group_pids(self.process.pid)
        pss = sum(read_status_kb(pid, "Pss", "smaps_rollup") for pid in pids)
        return pss, sum(read_status_kb(pid, "Rss", "smaps_rollup") for pid in pids)

    def frames(self) -> set[int]:
        """Resident page frames of the program's whole process group (see `resident_frames`)."""
        if not self.running:
            return set()
        assert self.process is not None
        return set().union(*(resident_frames(pid) for pid in group_pids(self.process.pid)))

    @property
    def cpu_s(self) -> float:
        return self.cpu_s_before + self.cpu_s_now

    def started(self, process: subprocess.Popen[bytes]) -> None:
        self.cpu_s_before += self.cpu_s_now
        self.cpu_s_now = 0.0
        self.process = process
        self.starts += 1


@dataclass
class Fleet:
    """The processes of one run, under `workdir`. Use as a context manager: every process is stopped on exit."""

    workdir: Path
    simulator_args: list[str] = field(default_factory=list)
    service_env: dict[str, str] = field(default_factory=dict)  # overrides SERVICE_DEFAULTS
    service_defaults: dict[str, str] = field(default_factory=lambda: dict(SERVICE_DEFAULTS))
    dashboard: bool = False  # also run the dashboard (program `dashboard`, on `dashboard_port`)
    dashboard_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    clickhouse_port: int = field(default_factory=free_port)
    simulator_port: int = field(default_factory=free_port)
    # REDIS_* settings of a Redis started elsewhere (a Sentinel or Cluster deployment, TLS): no embedded one then
    redis_env: dict[str, str] | None = None
    programs: dict[str, Program] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CLICKHOUSE_", "SIMULATOR_"))}
        base |= {"PYTHONUNBUFFERED": "1", "LOG_DIR": str(self.workdir / "logs")}
        py = [sys.executable, "-m"]
        data = self.workdir / "data"
        sim_argv = [*py, "pipeline", "simulator", "--port", str(self.simulator_port), "--log-level", "warning"]
        self._add("simulator", sim_argv + self.simulator_args, base, self.simulator_ready)
        redis_dir = ["--data-dir", str(data / "redis")]
        if self.redis_env is None:
            self._add("redis", [*py, "pipeline", "embedded-redis", "--port", str(self.redis_port), *redis_dir], base,
                      self.redis_ready)  # fmt: skip
        ch_argv = [*py, "pipeline", "embedded-clickhouse", "--host", "127.0.0.1", "--port", str(self.clickhouse_port)]
        self._add("clickhouse", [*ch_argv, "--data-dir", str(data / "clickhouse")], base, self.clickhouse_ready)
        env = base | self.service_defaults | self.endpoints() | self.service_env
        for name, module in self.service_modules.items():
            self._add(name, [*py, module], env)

    @property
    def service_modules(self) -> dict[str, str]:
        return SERVICE_MODULES | ({"dashboard": "dashboard.app"} if self.dashboard else {})

    def _add(self, name: str, argv: list[str], env: dict[str, str], ready: Callable[[], bool] | None = None) -> None:
        self.programs[name] = Program(name, argv, dict(env), self.workdir / "logs" / f"{name}.out", ready)

    # ---- addresses

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.simulator_port}"

    @property
    def clickhouse_url(self) -> str:
        return f"http://127.0.0.1:{self.clickhouse_port}"

    def endpoints(self) -> dict[str, str]:
        redis_env = self.redis_env or {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.redis_port)}
        return {
            **redis_env,
            "REDIS_SOCKET_TIMEOUT_S": "10",
            "CLICKHOUSE_HOST": "127.0.0.1",
            "CLICKHOUSE_PORT": str(self.clickhouse_port),
            "GAMMA_API_URL": f"{self.simulator_url}/gamma",
            "GOLDSKY_URL": f"{self.simulator_url}/goldsky/subgraphs/orderbook-subgraph/0.0.1/gn",
            "POLYGON_RPC_URL": f"{self.simulator_url}/rpc",
            "DASHBOARD_PORT": str(self.dashboard_port),
        }

    def redis_settings(self) -> RedisSettings:
        if self.redis_env is None:  # every field given: the fleet's own passwordless Redis, whatever REDIS_* is set
            return RedisSettings(host="127.0.0.1", port=self.redis_port, db=0, password=None)
        return redis_settings_from(self.redis_env)

    @property
    def key_prefix(self) -> str:
        """The services' REDIS_KEY_PREFIX, which may differ from this process's `keys.PREFIX`."""
        return self.service_env.get("REDIS_KEY_PREFIX", (self.redis_env or {}).get("REDIS_KEY_PREFIX", keys.PREFIX))

    def redis(self) -> redis.Redis:
        return make_sync_redis(self.redis_settings(), timeout_s=10)

    # ---- readiness

    def simulator_ready(self) -> bool:
        return _http_ok(f"{self.simulator_url}/_sim/health")

    def clickhouse_ready(self) -> bool:
        return _http_ok(f"{self.clickhouse_url}/ping")

    def redis_ready(self) -> bool:
        return is_reachable(self.redis_settings())

    # ---- lifecycle

    def start(self, name: str, wait: bool = True) -> None:
        program = self.programs[name]
        if program.running:
            raise RuntimeError(f"{name} is already running")
        with program.log_path.open("ab") as out:
            program.started(subprocess.Popen(
                program.argv, cwd=REPO_ROOT, env=program.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            ))  # fmt: skip
        if wait and program.ready is not None:
            self.wait_ready(name)

    def wait_ready(self, name: str, deadline_s: float = READY_DEADLINE_S) -> None:
        program = self.programs[name]
        assert program.ready is not None
        give_up = time.monotonic() + deadline_s
        while not program.ready():
            if not program.running:
                raise RuntimeError(f"{name} exited with {program.process.returncode if program.process else '?'}: "
                                   f"{tail(program.log_path)}")  # fmt: skip
            if time.monotonic() > give_up:
                raise RuntimeError(f"{name} not ready after {deadline_s:.0f} s: {tail(program.log_path)}")
            time.sleep(0.05)

    @property
    def servers(self) -> list[str]:
        return [name for name in SERVERS if name in self.programs]

    def start_servers(self) -> None:
        for name in self.servers:
            self.start(name, wait=False)
        for name in self.servers:
            self.wait_ready(name)

    def start_services(self, names: tuple[str, ...] | None = None) -> None:
        for name in self.service_modules if names is None else names:
            self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL the program's whole process group, like a crash, and reap it."""
        program = self.programs[name]
        if program.process is None:
            return
        self.sample_rss()
        _signal_group(program.process, signal.SIGKILL)
        program.process.wait(STOP_DEADLINE_S)
        program.kills += 1

    def restart(self, name: str) -> None:
        if self.programs[name].running:
            self.kill(name)
        self.start(name)

    def stop_all(self) -> None:
        """SIGTERM every running program (services first, servers last), then SIGKILL what outlives the deadline."""
        services = list(self.service_modules)
        for group in (services, list(reversed(self.servers))):
            running = [self.programs[n].process for n in group if self.programs[n].running]
            for process in running:
                _signal_group(process, signal.SIGTERM)
            give_up = time.monotonic() + STOP_DEADLINE_S
            for process in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.1, give_up - time.monotonic()))
            for process in running:
                _signal_group(process, signal.SIGKILL)  # the group: also any child a program left behind
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # ---- measurements

    def sample_rss(self) -> dict[str, float]:
        """Current RSS of each running program in MB; also folds each one's VmHWM into its peak."""
        return {name: p.sample_rss() / 1024 for name, p in self.programs.items()}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds each program has used so far, over all its incarnations."""
        self.sample_rss()
        return {name: p.cpu_s for name, p in self.programs.items()}

    def memory_mb(self) -> dict[str, tuple[float, float]]:
        """(PSS, RSS) in MB of each running program now (process group included)."""
        memory = {name: p.memory_kb() for name, p in self.programs.items()}
        return {name: (pss / 1024, rss / 1024) for name, (pss, rss) in memory.items()}

    def counted_once_mb(self, names: list[str]) -> float:
        """Resident memory of these programs together, each page counted once (0 without root: see
        `resident_frames`)."""
        frames: set[int] = set()
        for name in names:
            frames |= self.programs[name].frames()
        return len(frames) * PAGE_SIZE / 2**20

    def peak_rss_mb(self, name: str) -> float:
        program = self.programs[name]
        program.sample_rss()
        return program.peak_rss_kb / 1024

    def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.simulator_url + path, timeout=120.0, **kwargs)
        response.raise_for_status()
        return response.json()

    def ch(self, sql: str) -> str:
        """Run a query on the embedded ClickHouse over HTTP; returns the TSV body."""
        response = httpx.post(self.clickhouse_url, params={"database": "polymarket"}, content=sql, timeout=120.0)
        if response.status_code != 200:
            raise RuntimeError(f"clickhouse: {response.status_code} {response.text[:300]}")
        return response.text


def redis_settings_from(env: dict[str, str]) -> RedisSettings:
    """RedisSettings from REDIS_* variables given as a dict (what the fleet hands its services)."""
    return RedisSettings(**{name.removeprefix("REDIS_").lower(): value for name, value in env.items()})


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def tail(path: Path, chars: int = 1500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


# ---- drain detection


def groups_drained(client: redis.Redis, prefix: str = keys.PREFIX) -> tuple[bool, str]:
    """Every group of every stream has been given every entry and acked it; else what is still open.

    "Given every entry" is `last-delivered-id` == the stream's `last-generated-id`, not XINFO's `lag`: after
    Redis is SIGKILLed and reloads its AOF, a group's `entries-read` can stay behind `entries-added` for good
    (seen with Redis 7.0.15: length 0, last-delivered-id == last-generated-id, pending 0, yet lag 8).
    """
    for logical, groups in keys.STREAM_GROUPS.items():
        stream = keys.under(prefix, logical)
        if not client.exists(stream):
            continue
        last_id = _stream_id(client.xinfo_stream(stream)["last-generated-id"])
        info = {g["name"].decode(): g for g in client.xinfo_groups(stream)}
        for group in groups:
            if group not in info:
                return False, f"{stream}: group {group} missing"
            delivered = _stream_id(info[group]["last-delivered-id"])
            if info[group]["pending"] or delivered < last_id:
                return False, (
                    f"{stream}/{group}: pending {info[group]['pending']}, delivered up to {delivered} of {last_id} "
                    f"(lag {info[group].get('lag')})"
                )
    return True, "drained"


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def entries_added(client: redis.Redis, stream: str) -> int:
    if not client.exists(stream):
        return 0
    return int(client.xinfo_stream(stream)["entries-added"])


@dataclass(frozen=True)
class Appended:
    count: int
    unit: str  # "items" (the stream:items hash) or "entries" (no item count for the stream: one item an entry)


def appended(client: redis.Redis, stream: str, prefix: str = keys.PREFIX) -> Appended:
    """What the producers appended to `stream` (a key under `prefix`) since it was created: items, from the hash
    `stream:items` the appending scripts keep (an entry is a page of 1..N items, docs/CONTRACT.md §3); where it has
    no field for the stream (a deployment or a branch from before pages, one item an entry), entries added."""
    items = client.hget(keys.under(prefix, keys.STREAM_ITEMS), stream)
    if items is not None:
        return Appended(int(items), "items")
    return Appended(entries_added(client, stream), "entries")


def table_count(fleet: Fleet, table: str) -> int:
    try:
        return int(fleet.ch(f"SELECT count() FROM {table}").strip() or 0)
    except (RuntimeError, httpx.HTTPError, ValueError):
        return -1


def wait_converged(fleet: Fleet, expected: int, timeout_s: float, tick: Callable[[], None] | None = None) -> float:
    """Wait until the ingesters appended `expected` fills (items, or entries before pages: `appended`), every group
    drained, and both tables hold `expected` rows.

    Survives Redis or ClickHouse being down meanwhile; raises with what did not converge. Returns the seconds waited.
    """
    started = time.monotonic()
    state = "not started"
    while time.monotonic() - started < timeout_s:
        if tick is not None:
            tick()
        try:
            client = fleet.redis()
            try:
                added = appended(client, keys.under(fleet.key_prefix, keys.STREAM_ORDER_EVENTS), fleet.key_prefix)
                drained, state = groups_drained(client, fleet.key_prefix)
            finally:
                client.close()
        except redis.RedisError as exc:
            state = f"redis: {exc}"
            time.sleep(0.5)
            continue
        counts = {t: table_count(fleet, t) for t in tables.FILL_TABLES}
        if added.count < expected:
            state = f"stream:order_events {added.unit} appended {added.count:,} < {expected:,}"
        elif drained and all(c == expected for c in counts.values()):
            return time.monotonic() - started
        elif drained:
            state = f"groups drained but ClickHouse counts {counts} != {expected:,}"
        time.sleep(0.5)
    raise TimeoutError(f"the pipeline did not converge within {timeout_s:.0f} s: {state}")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
