"""`python -m pipeline embedded-redis` starts a Redis with AOF that keeps acknowledged writes through kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.fixtures.helpers import wait_until
from tests.fixtures.redis_server import free_port


def start(port: int, data_dir, password: str | None = None, username: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_PASSWORD": password or "", "REDIS_USERNAME": username or ""}
    if password is None:
        env.pop("REDIS_PASSWORD")
    if username is None:
        env.pop("REDIS_USERNAME")
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "embedded-redis", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def wait_ping(client: redis.Redis) -> None:
    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, "redis-server answering PING")


def test_embedded_redis_keeps_acknowledged_writes_through_kill_9(tmp_path) -> None:
    port = free_port()
    process = start(port, tmp_path / "redis")
    client = redis.Redis(port=port)
    try:
        wait_ping(client)
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        client.xadd("stream:markets", {"data": b"{}"})
        client.set("state:polymarket_offset", "500")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        process = start(port, tmp_path / "redis")
        wait_ping(client)
        assert client.xlen("stream:markets") == 1
        assert client.get("state:polymarket_offset") == b"500"
    finally:
        process.kill()
        process.wait(10)
        client.close()


def test_embedded_redis_password_is_required_and_not_on_the_command_line(tmp_path) -> None:
    port = free_port()
    process = start(port, tmp_path / "redis", password="s3cret-pw")
    try:
        wait_ping(redis.Redis(port=port, password="s3cret-pw"))
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        assert "s3cret-pw" not in " ".join(process.args)  # type: ignore[arg-type]
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        assert "s3cret-pw" not in cmdline
        assert oct((tmp_path / "redis" / "redis.conf").stat().st_mode & 0o777) == "0o600"
    finally:
        process.kill()
        process.wait(10)


def test_embedded_redis_creates_the_acl_user_the_services_log_in_as(tmp_path) -> None:
    port = free_port()
    process = start(port, tmp_path / "redis", password="s3cret-pw", username="pipeline")
    try:
        wait_ping(redis.Redis(port=port, username="pipeline", password="s3cret-pw"))
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, username="pipeline", password="wrong").ping()
    finally:
        process.kill()
        process.wait(10)
