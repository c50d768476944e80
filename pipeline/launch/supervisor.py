"""supervisord as a child of `python -m pipeline run`: start it, ask it over its socket, stop it leaving nothing.

supervisord runs in the foreground (`-n`) in a session of its own, so a Ctrl-C at the terminal reaches only the
launcher, which then stops the pipeline services together (each finishes its batch on SIGTERM), then shuts
supervisord down, which stops the servers last (reverse priority). Every pid supervisord reported is checked
afterwards; whatever survived is killed and named.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import signal
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable, Iterable
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

CONFIG_NAME = "supervisord.conf"
SERVERS = ("redis", "clickhouse", "simulator")  # stopped last, by supervisord's own shutdown
RPC_POLL_S = 0.25
SHUTDOWN_TIMEOUT_S = 120.0  # services' stopwaitsecs (≤ 60) run in parallel, then the servers one by one


class SupervisorError(Exception):
    """supervisord did not start, died, or a program could not start; the message says which and why."""


def program_names(config: Path) -> list[str]:
    parser = configparser.RawConfigParser()
    parser.read(config)
    return [section.split(":", 1)[1] for section in parser.sections() if section.startswith("program:")]


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def process_identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time in clock ticks) while the process lives (not a zombie), else None; a recycled pid has
    another start time, so a pid seen earlier is never mistaken for an unrelated process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else (pid, fields[19])


class Supervisor:
    """One supervisord for the checkout at `root` (its socket, pidfile and logs live under root/data and root/logs)."""

    def __init__(self, root: Path, python: str) -> None:
        self.root = root
        self.python = python
        self.config = root / CONFIG_NAME
        self.socket = root / "data" / "supervisor.sock"
        self.console = root / "logs" / "supervisord.out"
        self.process: subprocess.Popen[bytes] | None = None
        self.seen: set[tuple[int, str]] = set()  # identities of every program process seen

    def rpc(self) -> xmlrpc.client.ServerProxy:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def answering_pid(self) -> int | None:
        """The pid of a supervisord already serving this checkout's socket, else None."""
        if not self.socket.exists():
            return None
        try:
            return int(self.rpc().supervisor.getPID())
        except (OSError, xmlrpc.client.Error):
            return None

    def start(self, env: dict[str, str]) -> None:
        for folder in ("data", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        running = self.answering_pid()
        if running is not None:
            raise SupervisorError(
                f"supervisord (pid {running}) already runs this checkout: "
                f"`supervisorctl -c {CONFIG_NAME} shutdown` first, or use it as is"
            )
        argv = [self.python, "-m", "supervisor.supervisord", "-n", "-c", str(self.config)]
        with open(self.console, "ab") as console:
            self.process = subprocess.Popen(
                argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise SupervisorError(f"supervisord exited; its last words ({self.console}):\n{tail(self.console)}")

    def processes(self) -> dict[str, dict[str, object]]:
        """name -> supervisord's process info (statename, pid, stdout_logfile, ...); remembers every pid seen."""
        infos = self.rpc().supervisor.getAllProcessInfo()
        identities = (process_identity(int(info["pid"])) for info in infos if info["pid"])
        self.seen.update(identity for identity in identities if identity is not None)
        return {str(info["name"]): info for info in infos}

    def wait_rpc(self, deadline: float, stopping: Callable[[], bool]) -> None:
        while time.monotonic() < deadline and not stopping():
            self.check_alive()
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                self.processes()
                return
            time.sleep(RPC_POLL_S)
        self.check_alive()

    def fail_if_fatal(self, names: Iterable[str]) -> None:
        infos = self.processes()
        for name in names:
            info = infos.get(name)
            if info is not None and info["statename"] == "FATAL":
                log = Path(str(info["stdout_logfile"]))
                raise SupervisorError(f"{name} could not start ({info['spawnerr'] or 'FATAL'}); {log}:\n{tail(log)}")

    def start_services(self) -> None:
        """Start every program that is not a server, all at once (supervisord.conf leaves them to us)."""
        rpc = self.rpc()
        for name, info in self.processes().items():
            if name not in SERVERS and info["statename"] in ("STOPPED", "EXITED", "FATAL"):
                rpc.supervisor.startProcess(name, False)  # no wait: each turns RUNNING after its startsecs

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> list[int]:
        """Stop the services together, then supervisord (servers last); returns the pids that had to be killed."""
        if self.process is None:
            return []
        deadline = time.monotonic() + timeout_s
        if self.alive():
            self._stop_services(deadline)
            try:
                self.rpc().supervisor.shutdown()
            except (OSError, xmlrpc.client.Error):
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self._kill_leftovers()

    def _stop_services(self, deadline: float) -> None:
        try:
            infos = self.processes()
            rpc = self.rpc()
            for name, info in infos.items():
                if name not in SERVERS and info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
                    with contextlib.suppress(xmlrpc.client.Fault):
                        rpc.supervisor.stopProcess(name, False)  # no wait: they all finish their batch at once
            while time.monotonic() < deadline:
                states = [info["statename"] for name, info in self.processes().items() if name not in SERVERS]
                if all(state in ("STOPPED", "EXITED", "FATAL") for state in states):
                    return
                time.sleep(RPC_POLL_S)
        except (OSError, xmlrpc.client.Error):
            return  # supervisord went away: its own shutdown (or death) follows

    def _kill_leftovers(self) -> list[int]:
        leftovers = sorted(pid for pid, started in self.seen if process_identity(pid) == (pid, started))
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leftovers
