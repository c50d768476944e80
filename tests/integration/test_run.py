"""`python -m pipeline run`/`demo` for real: supervisord, the embedded servers, every service, a clean stop.

Each run happens in a copy of the checkout under a short temp path (supervisord's socket path must stay under
108 bytes), on free ports, with this interpreter (`--no-bootstrap`), so nothing touches the repo's data/ or logs/.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from common import keys
from pipeline.launch.supervisor import process_identity, program_names
from tests.fixtures.helpers import wait_until
from tests.fixtures.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_PARTS = ("common", "ingesters", "processors", "dashboard", "pipeline", "simulator", "supervisord.conf")
SEED_SERVICES = keys.SERVICES
SETTING_PREFIXES = ("REDIS_", "CLICKHOUSE_", "DASHBOARD_", "SIMULATOR_", "PIPELINE_", "LOG_", "HTTP_", "CHAIN_")
SETTING_NAMES = ("GAMMA_API_URL", "GOLDSKY_URL", "POLYGON_RPC_URL", "GOLDSKY_START_TIMESTAMP", "GOLDSKY_END_TIMESTAMP")
class Launch:
    """One `python -m pipeline <command>` in a copy of the checkout; its output goes to a file."""

    def __init__(self, root: Path, command: str, *extra: str, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.output = root / "launch.out"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline", command, "--no-follow", "--no-bootstrap", *extra],
                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def explain(self) -> str:
        logs = sorted((self.root / "logs").glob("*.out"))
        tails = [f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-8:]) for path in logs]
        return f"--- launcher\n{self.text()}\n" + "\n".join(tails)

    def wait_output(self, text: str, deadline_s: float) -> None:
        def seen() -> bool:
            if self.process.poll() is not None and text not in self.text():
                raise AssertionError(f"launcher exited with {self.process.returncode}\n{self.explain()}")
            return text in self.text()

        wait_until(seen, f"launcher printing {text!r}", timeout_s=deadline_s, interval_s=0.25, explain=self.explain)

    def supervisorctl(self, *args: str) -> str:
        argv = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.root / "supervisord.conf"), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=self.env).stdout

    def states(self) -> dict[str, tuple[str, str]]:
        """program -> (state, pid or '')"""
        rows = [line.split() for line in self.supervisorctl("status").splitlines() if line.strip()]
        return {row[0]: (row[1], row[3].rstrip(",") if len(row) > 3 and row[2] == "pid" else "") for row in rows}

    def all_running(self, expected: set[str]) -> dict[str, tuple[str, str]] | None:
        states = self.states()
        running = {name for name, (state, _) in states.items() if state == "RUNNING"}
        return states if running == expected else None

    def program_processes(self) -> set[tuple[int, str]]:
        pids = [int(pid) for pid in re.findall(r"^\d+$", self.supervisorctl("pid", "all") + "\n", re.M)]
        pids.append(int(self.supervisorctl("pid").strip()))
        identities = {process_identity(pid) for pid in pids}
        assert None not in identities, "a program pid is not a live process"
        return identities  # type: ignore[return-value]

    def stop(self, deadline_s: float = 60) -> int:
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C at the terminal sends
        try:
            return self.process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"launcher still stopping after {deadline_s} s\n{self.explain()}") from None

    def kill_if_running(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=60)


@pytest.fixture
def checkout() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pl-"))
    for part in CHECKOUT_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / part)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def launch_env() -> dict[str, str]:
    """This environment less every pipeline setting, plus free ports for everything the launcher starts."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(SETTING_PREFIXES) and key not in SETTING_NAMES
    }
    env.update(
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(free_port()),
        CLICKHOUSE_HOST="127.0.0.1",
        CLICKHOUSE_PORT=str(free_port()),
        DASHBOARD_PORT=str(free_port()),
        SIMULATOR_PORT=str(free_port()),
    )
    return env


@pytest.fixture
def launches() -> Iterator[list[Launch]]:
    started: list[Launch] = []
    yield started
    for launch in started:
        launch.kill_if_running()


def clickhouse_query(env: dict[str, str], sql: str) -> str | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{env['CLICKHOUSE_PORT']}/", params={"query": sql}, timeout=5)
    except httpx.HTTPError:
        return None
    return response.text.strip() if response.status_code == 200 else None


def clickhouse_count(env: dict[str, str], table: str) -> int:
    return int(clickhouse_query(env, f"SELECT count() FROM polymarket.{table}") or 0)


def dashboard_status(env: dict[str, str]) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{env['DASHBOARD_PORT']}/api/status", timeout=5)
    response.raise_for_status()
    return response.json()


def service_states(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    try:
        services = dashboard_status(env)["services"]
    except httpx.HTTPError:
        return {}
    return {service["name"]: service for service in services}


def healthcheck(root: Path, env: dict[str, str], service: str) -> tuple[int, str]:
    argv = [sys.executable, "-m", "pipeline.launch.healthcheck", service]
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stderr.strip()


def assert_nothing_left(processes: set[tuple[int, str]], root: Path) -> None:
    survivors = [pid for pid, started in processes if process_identity(pid) == (pid, started)]
    assert survivors == [], f"processes left behind: {survivors}"
    assert not (root / "data" / "supervisor.sock").exists()


def configured_modules() -> set[tuple[str, ...]]:
    """(module, *args) for every command supervisord.conf and docker-compose.yml run, healthchecks included."""
    commands: set[tuple[str, ...]] = set()
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "supervisord.conf")
    for name in program_names(ROOT / "supervisord.conf"):
        argv = shlex.split(parser.get(f"program:{name}", "command"))
        commands.add(tuple(argv[argv.index("-m") + 1 :]))
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for service in services.values():
        for argv in (service.get("command"), (service.get("healthcheck") or {}).get("test")):
            if argv and "-m" in argv:
                module_and_args = tuple(argv[argv.index("-m") + 1 :])
                commands.add(
                    module_and_args[:1] if module_and_args[0] == "pipeline.launch.healthcheck" else module_and_args
                )
    return commands


def test_every_configured_command_names_a_module_that_starts_with_help() -> None:
    commands = configured_modules()
    modules = {command[0] for command in commands}
    assert modules >= {"ingesters.polymarket_ingester", "processors.trade_processor", "dashboard.app", "pipeline"}
    assert {"pipeline.launch.healthcheck", "pipeline.launch.demo_simulator"} <= modules
    runs = {
        command: subprocess.Popen(
            [sys.executable, "-m", *command, "--help"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for command in sorted(commands)
    }
    for command, process in runs.items():
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, f"python -m {' '.join(command)} --help: {output.decode()}"
        assert b"usage" in output.lower() or b"SIMULATOR_PORT" in output, command


def test_demo_runs_every_program_under_supervisord_and_ctrl_c_leaves_nothing_behind(
    checkout: Path, launch_env: dict[str, str], launches: list[Launch]
) -> None:
    # Given the demo on free ports, with embedded Redis and ClickHouse
    demo = Launch(checkout, "demo", "--rate", "40", env=launch_env)
    launches.append(demo)
    demo.wait_output("dashboard: http://127.0.0.1:", 90)
    # Then every program, servers and simulator included, is RUNNING under supervisord
    expected = set(program_names(checkout / "supervisord.conf"))
    wait_until(lambda: demo.all_running(expected), "every program RUNNING", timeout_s=30, interval_s=0.25,
               explain=demo.explain)  # fmt: skip
    # And trades reach ClickHouse and keep coming; the dashboard sees every service running
    first = wait_until(lambda: clickhouse_count(launch_env, "trades"), "trades in ClickHouse", timeout_s=30,
                       interval_s=0.25, explain=demo.explain)  # fmt: skip
    wait_until(lambda: clickhouse_count(launch_env, "trades") > first, "trades growing", timeout_s=20, interval_s=0.25,
               explain=demo.explain)  # fmt: skip
    # And no fill reached ClickHouse twice (Goldsky serves the v1 history, the chain ingester the v2 blocks)
    assert clickhouse_query(launch_env, "SELECT count() - uniqExact(id) FROM polymarket.trades") == "0"

    def all_services_running() -> bool:
        states = service_states(launch_env)
        return all(states.get(name, {}).get("state") == "running" for name in SEED_SERVICES)

    wait_until(all_services_running, "dashboard: every service running", timeout_s=20, interval_s=0.25,
               explain=lambda: str(service_states(launch_env)))  # fmt: skip

    # And the container healthcheck agrees (it reads the same heartbeats)
    assert healthcheck(checkout, launch_env, "trade_processor") == (0, "")

    # When the trade processor is stopped and started again
    assert "stopped" in demo.supervisorctl("stop", "trade_processor")
    assert healthcheck(checkout, launch_env, "trade_processor") == (1, "unhealthy: trade_processor: stopped")
    assert "started" in demo.supervisorctl("start", "trade_processor")
    # Then it runs again and trades keep flowing
    wait_until(lambda: demo.all_running(expected), "every program RUNNING again", timeout_s=20, interval_s=0.25,
               explain=demo.explain)  # fmt: skip
    after_restart = clickhouse_count(launch_env, "trades")
    wait_until(lambda: clickhouse_count(launch_env, "trades") > after_restart, "trades after restart", timeout_s=20,
               interval_s=0.25)  # fmt: skip

    # When Ctrl-C reaches the launcher
    processes = demo.program_processes()
    assert demo.stop() == 0, demo.explain()
    # Then supervisord and every program are gone
    assert "no process left behind" in demo.text()
    assert_nothing_left(processes, checkout)


def test_run_with_unreachable_sources_keeps_every_service_running_and_says_so(
    checkout: Path, launch_env: dict[str, str], launches: list[Launch]
) -> None:
    # Given sources that refuse connections (no network) and one attempt per call, so they fail at once
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    env = {**launch_env, "GAMMA_API_URL": dead, "GOLDSKY_URL": dead + "/gn", "POLYGON_RPC_URL": dead + "/rpc"}
    env["HTTP_MAX_ATTEMPTS"] = "1"
    run = Launch(checkout, "run", env=env)
    launches.append(run)
    run.wait_output("dashboard: http://127.0.0.1:", 90)
    expected = set(program_names(checkout / "supervisord.conf")) - {"simulator"}
    before = wait_until(lambda: run.all_running(expected), "every program RUNNING", timeout_s=30, interval_s=0.25,
                        explain=run.explain)  # fmt: skip

    # Then the dashboard reports the source ingesters degraded, with the reason
    sources = ("polymarket_ingester", "polymarket_events_ingester", "goldsky_ingester", "chain_ingester")

    def degraded() -> dict[str, dict[str, Any]] | None:
        states = service_states(env)
        hit = {name: states.get(name, {}) for name in sources}
        return hit if all(s.get("state") == "degraded" and s.get("last_error") for s in hit.values()) else None

    reported = wait_until(degraded, "ingesters degraded on the dashboard", timeout_s=30, interval_s=0.25,
                          explain=lambda: str(service_states(env)))  # fmt: skip
    assert all("127.0.0.1" in s["last_error"] or "connect" in s["last_error"].lower() for s in reported.values())
    # And the sinks, up before the services started, are not blamed
    states = service_states(env)
    assert {name: states[name]["state"] for name in ("trade_processor", "clickhouse_writer")} == {
        "trade_processor": "running",
        "clickhouse_writer": "running",
    }, states
    # And no program was restarted meanwhile: same pids, all RUNNING (no crash loop)
    assert run.all_running(expected) == before

    assert run.stop() == 0, run.explain()


def test_run_fails_fast_on_a_port_held_by_something_else(
    checkout: Path, launch_env: dict[str, str], launches: list[Launch]
) -> None:
    # Given something that is not Redis listening on REDIS_PORT
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(launch_env["REDIS_PORT"])))
        squatter.listen()
        run = Launch(checkout, "run", env=launch_env)
        launches.append(run)
        # Then the launcher exits 2 with one line naming the variable, having started nothing
        assert run.process.wait(timeout=30) == 2, run.text()
    assert "REDIS_PORT" in run.text() and "held by something" in run.text()
    assert not (checkout / "data" / "supervisor.sock").exists()


def test_run_fails_fast_on_a_bad_setting(checkout: Path, launch_env: dict[str, str], launches: list[Launch]) -> None:
    run = Launch(checkout, "run", env={**launch_env, "CLICKHOUSE_PORT": "eighty"})
    launches.append(run)
    assert run.process.wait(timeout=30) == 2
    assert "CLICKHOUSE_PORT" in run.text()
    assert len(run.text().strip().splitlines()) == 1
