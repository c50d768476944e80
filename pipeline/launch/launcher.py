"""The body of `python -m pipeline run`/`demo` once the interpreter has the requirements (see pipeline/launch/run.py).

Order: plan (fail fast on bad settings and held ports) → supervisord with the servers → Redis and ClickHouse answer
→ migrations → the services → every program RUNNING → the dashboard URL → follow logs/<program>.out until
Ctrl-C/SIGTERM → clean shutdown (services together, each finishing its batch, then the servers).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

from common.clickhouse import apply_migrations
from common.errors import ConfigError, TransientSinkError
from pipeline.embedded.redis_server import is_reachable
from pipeline.launch.plan import LaunchError, Plan, clickhouse_answers, make_plan
from pipeline.launch.supervisor import CONFIG_NAME, SERVERS, Supervisor, SupervisorError, program_names

POLL_S = 0.25
RUNNING_GRACE_S = 20.0  # after the servers: how long programs may stay STARTING before we report them


def say(message: str) -> None:
    print(f"pipeline: {message}", flush=True)


class StopSignal:
    """SIGINT/SIGTERM/SIGHUP set the flag; the launcher's loops poll it, then shut down in order."""

    def __init__(self) -> None:
        self.event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            say("still stopping: each service finishes its batch first")
        self.event.set()

    def __call__(self) -> bool:
        return self.event.is_set()


class LogFollower:
    """Prints the lines programs add to logs/<program>.out, prefixed with the program name."""

    def __init__(self, log_dir: Path, names: list[str]) -> None:
        self.paths = {name: log_dir / f"{name}.out" for name in names}
        self.offsets = {name: self._size(path) for name, path in self.paths.items()}
        self.partial = dict.fromkeys(names, b"")
        self.width = max(map(len, names), default=0)

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def poll(self) -> list[str]:
        lines = []
        for name, path in self.paths.items():
            size = self._size(path)
            if size < self.offsets[name]:  # rotated by supervisord
                self.offsets[name], self.partial[name] = 0, b""
            if size == self.offsets[name]:
                continue
            with open(path, "rb") as log:
                log.seek(self.offsets[name])
                data = self.partial[name] + log.read(size - self.offsets[name])
            self.offsets[name] = size
            *complete, self.partial[name] = data.split(b"\n")
            lines += [f"{name:<{self.width}} | {line.decode(errors='replace')}" for line in complete]
        return lines


def wait_for_servers(supervisor: Supervisor, plan: Plan, deadline: float, stopping: StopSignal) -> None:
    """Until Redis and ClickHouse answer (and the simulator, in the demo) and the migrations are applied."""
    used = {"redis": plan.embedded_redis, "clickhouse": plan.embedded_clickhouse, "simulator": plan.demo}
    servers = [name for name in SERVERS if used[name]]
    pending = {"redis", "clickhouse", "migrations"} | ({"simulator"} if plan.demo else set())
    last_error = ""
    while pending and not stopping():
        if time.monotonic() > deadline:
            raise LaunchError(f"not ready after the start timeout: {', '.join(sorted(pending))} ({last_error})")
        supervisor.check_alive()
        supervisor.fail_if_fatal(servers)
        if "redis" in pending and is_reachable(plan.redis):
            pending.discard("redis")
        if "clickhouse" in pending and clickhouse_answers(plan.clickhouse):
            pending.discard("clickhouse")
        if "simulator" in pending and simulator_answers(plan.simulator_url):
            pending.discard("simulator")
        if pending == {"migrations"}:
            try:
                apply_migrations(plan.clickhouse)
                pending.discard("migrations")
            except TransientSinkError as exc:
                if "Authentication failed" in str(exc):
                    raise LaunchError("ClickHouse refused CLICKHOUSE_USER/CLICKHOUSE_PASSWORD") from None
                last_error = str(exc)
        time.sleep(0 if not pending else POLL_S)


def simulator_answers(base_url: str) -> bool:
    try:
        return httpx.get(base_url + "/_sim/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_running(supervisor: Supervisor, stopping: StopSignal) -> list[str]:
    """Wait (a bounded while) for every started program to be RUNNING; returns those that are not."""
    deadline = time.monotonic() + RUNNING_GRACE_S
    while True:
        supervisor.check_alive()
        infos = supervisor.processes()
        late = [name for name, info in infos.items() if info["statename"] not in ("RUNNING", "STOPPED")]
        if not late or time.monotonic() > deadline or stopping():
            return [f"{name} {infos[name]['statename']}" for name in late]
        time.sleep(POLL_S)


def follow(supervisor: Supervisor, follower: LogFollower | None, stopping: StopSignal) -> None:
    while not stopping():
        supervisor.check_alive()
        for line in follower.poll() if follower else []:
            print(line, flush=True)
        stopping.event.wait(POLL_S)


def launch(command: str, args: argparse.Namespace, *, root: Path, python: str) -> int:
    demo = command == "demo"
    try:
        plan = make_plan(demo=demo, python=python, environ=os.environ, rate=getattr(args, "rate", None))
    except (ConfigError, LaunchError) as exc:
        print(f"pipeline {command}: {exc}", file=sys.stderr)
        return 2
    for line in plan.describe():
        say(line)
    for warning in plan.warnings:
        say(f"warning: {warning}")
    stopping = StopSignal()
    supervisor = Supervisor(root, python)
    follower = None if args.no_follow or args.detach else LogFollower(root / "logs", program_names(supervisor.config))
    detached, code = False, 0
    try:
        supervisor.start({**os.environ, **plan.env})
        supervisor.wait_rpc(time.monotonic() + 30, stopping)
        wait_for_servers(supervisor, plan, time.monotonic() + args.start_timeout, stopping)
        if not stopping():
            supervisor.start_services()
            report_started(plan, wait_running(supervisor, stopping), detach=args.detach)
        if args.detach and not stopping():
            detached = True
            return 0
        follow(supervisor, follower, stopping)
    except (LaunchError, SupervisorError) as exc:
        print(f"pipeline {command}: {exc}", file=sys.stderr)
        code = 1
    finally:
        if not detached:
            code = stop_everything(supervisor, follower) or code
    return code


def report_started(plan: Plan, late: list[str], *, detach: bool) -> None:
    say("migrations applied; every program started" + (f" except: {', '.join(late)}" if late else ""))
    say(f"dashboard: {plan.dashboard_url}")
    say(f"status: .venv/bin/supervisorctl -c {CONFIG_NAME} status   (stop|start|restart <program>)")
    if detach:
        say(f"supervisord stays in the background: `.venv/bin/supervisorctl -c {CONFIG_NAME} shutdown` stops it all")
    else:
        say("Ctrl-C stops everything")


def stop_everything(supervisor: Supervisor, follower: LogFollower | None) -> int:
    say("stopping: services finish their batch, then the servers stop")
    leftovers = supervisor.shutdown()
    with contextlib.suppress(OSError):
        for line in follower.poll() if follower else []:
            print(line, flush=True)
    if leftovers:
        say(f"killed processes that outlived supervisord: {leftovers}")
        return 1
    say("stopped; no process left behind")
    return 0
