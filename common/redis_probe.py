"""What the Redis server is: a version and commands the pipeline can run on, and how durable its writes are.

`check_on_connect` runs on the first connection `make_redis` opens to each server address (so after a failover,
on the new primary too): Redis (or Valkey) 6.2 or later, every command of `REQUIRED_COMMANDS` present (a managed
service or a `rename-command` may remove some). Otherwise `UnsupportedServer`, a `ConfigError`: the service stops
at start with one line naming the version found. 6.2 replies differently from 7 in places the code handles
(XAUTOCLAIM without deleted ids, XINFO GROUPS without `lag`, a script's OOM wrapped in the script's error).

`read_durability` says what an acknowledged write survives there (dashboard, `doctor`): `appendfsync` where
`CONFIG GET` is allowed, `aof_enabled` from `INFO persistence` where it is not (managed services), else unknown.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from common.errors import ConfigError

log = structlog.get_logger()

MIN_VERSION = (6, 2)  # XAUTOCLAIM, XTRIM MINID, exclusive XRANGE bounds, HELLO without arguments
# Every command the services, the dashboard and the ops commands send (the scripts' own included: a script calling a
# removed command fails mid-way).
REQUIRED_COMMANDS = (
    "evalsha", "script", "xadd", "xreadgroup", "xack", "xautoclaim", "xclaim", "xpending", "xinfo", "xgroup",
    "xtrim", "xrange", "xrevrange", "xlen", "xdel", "hset", "hget", "hmget", "hdel", "hgetall", "hincrby", "mget",
    "get", "set", "expire", "exists", "scan", "unlink", "sadd", "srem", "srandmember", "scard", "ping",
)  # fmt: skip
# The durability the docs ask for: an acknowledged write is on disk before the reply (docs/operations.md).
RECOMMENDED = "appendonly yes, appendfsync always"
_VERSION = re.compile(rb"^(\d+)\.(\d+)")

_checked: set[str] = set()  # addresses whose server passed: later connections to them skip the questions


class UnsupportedServer(ConfigError):
    """The Redis server is too old, or lacks a command the pipeline needs."""


@dataclass(frozen=True)
class ServerVersion:
    server: str  # "Redis", "Valkey"
    version: str  # "7.0.15"; "" when the server would not say

    def __str__(self) -> str:
        return f"{self.server} {self.version or '(version unknown)'}"

    @property
    def supported(self) -> bool:
        found = _VERSION.match(self.version.encode())
        return found is not None and (int(found[1]), int(found[2])) >= MIN_VERSION


def _field(reply: Any, name: bytes) -> bytes | None:
    """A field of HELLO's reply: a map under RESP3, a flat [name, value, ...] list under RESP2."""
    if isinstance(reply, dict):
        value = reply.get(name)
    elif isinstance(reply, list):
        value = dict(zip(reply[::2], reply[1::2], strict=False)).get(name)
    else:
        value = None
    return value.encode() if isinstance(value, str) else value


def info_fields(text: bytes | str) -> dict[str, str]:
    """INFO's text reply as name -> value."""
    lines = (text.decode(errors="replace") if isinstance(text, bytes) else text).splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines) if value}


def version_from(hello: Any = None, info: Mapping[str, Any] | None = None) -> ServerVersion:
    """The server's name and version from HELLO's reply (6.2+), else from INFO server's fields."""
    version = _field(hello, b"version")
    if version:
        server = (_field(hello, b"server") or b"redis").decode(errors="replace")
        return ServerVersion(server.capitalize(), version.decode(errors="replace"))
    if info and info.get("valkey_version"):
        return ServerVersion("Valkey", str(info["valkey_version"]))
    return ServerVersion("Redis", str((info or {}).get("redis_version") or ""))


async def _ask(connection: AbstractConnection, *args: str) -> Any:
    await connection.send_command(*args, check_health=False)
    return await connection.read_response()


async def _version(connection: AbstractConnection) -> ServerVersion:
    try:  # HELLO without arguments changes nothing and is allowed to every user; Redis 6.2 added that form
        return version_from(hello=await _ask(connection, "HELLO"))
    except redis_errors.ResponseError:
        pass
    try:
        return version_from(info=info_fields(await _ask(connection, "INFO", "server")))
    except redis_errors.ResponseError:
        return ServerVersion("Redis", "")


async def _missing_commands(connection: AbstractConnection, names: Sequence[str]) -> list[str]:
    """The commands of `names` the server does not have (COMMAND INFO answers nil); none when COMMAND is refused."""
    try:
        replies = await _ask(connection, "COMMAND", "INFO", *names)
    except redis_errors.ResponseError as exc:
        log.warning("redis refuses COMMAND INFO; the commands the pipeline needs are not checked", error=str(exc))
        return []
    return [name for name, reply in zip(names, replies, strict=False) if not reply]


def _address(connection: AbstractConnection) -> str:
    host, port = getattr(connection, "host", None), getattr(connection, "port", None)
    return f"{host}:{port}" if host is not None else str(getattr(connection, "path", "?"))


async def check_server(connection: AbstractConnection) -> ServerVersion:
    """Raise UnsupportedServer unless the server is 6.2+ and has every command of REQUIRED_COMMANDS."""
    address = _address(connection)
    found = await _version(connection)
    if not found.supported:
        raise UnsupportedServer(
            f"{found} at {address} is not supported: the pipeline needs Redis 6.2 or later "
            "(REDIS_HOST/REDIS_PORT name the server)"
        )
    missing = await _missing_commands(connection, REQUIRED_COMMANDS)
    if missing:
        raise UnsupportedServer(
            f"{found} at {address} lacks commands the pipeline needs: {', '.join(missing)} "
            "(renamed or disabled on the server?)"
        )
    return found


async def check_on_connect(connection: AbstractConnection) -> None:
    """redis-py's `redis_connect_func`: the usual handshake, then `check_server` on a server not checked yet."""
    await connection.on_connect()
    address = _address(connection)
    if address in _checked:
        return
    try:
        found = await check_server(connection)
    except UnsupportedServer:
        await connection.disconnect()
        raise
    _checked.add(address)
    log.info("redis server checked", server=str(found), address=address)


# --- durability ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Durability:
    """What an acknowledged write survives: `mode` for people, `warning` when weaker than the docs recommend."""

    mode: str  # "AOF, appendfsync always" | "AOF, appendfsync everysec" | "AOF on" | "AOF off" | "unknown (managed)"
    source: str  # where it was read: "CONFIG GET", "INFO persistence", ""
    warning: str = ""


def durability_from(config: dict[str, str] | None, persistence: dict[str, Any] | None) -> Durability:
    """The durability from `CONFIG GET appendonly appendfsync` (None: refused), else `INFO persistence`."""
    if config and "appendonly" in config:
        if config["appendonly"] != "yes":
            return Durability("AOF off", "CONFIG GET", f"acknowledged writes are lost if Redis dies; set {RECOMMENDED}")
        policy = config.get("appendfsync", "")
        weaker = "" if policy == "always" else (
            f"appendfsync {policy}: up to a second of acknowledged writes is lost if Redis dies; set {RECOMMENDED}"
        )  # fmt: skip
        return Durability(f"AOF, appendfsync {policy}", "CONFIG GET", weaker)
    if persistence and "aof_enabled" in persistence:
        if not int(persistence["aof_enabled"]):
            return Durability("AOF off", "INFO persistence",
                              f"acknowledged writes are lost if Redis dies; ask for {RECOMMENDED}")  # fmt: skip
        return Durability("AOF on", "INFO persistence", "appendfsync unknown (CONFIG GET refused): ask the provider "
                          "whether each write is fsynced before the reply")  # fmt: skip
    return Durability("unknown (managed)", "", "the server tells nothing of its persistence; ask the provider")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def read_durability(redis: aioredis.Redis) -> Durability:
    """`durability_from` what this server lets us read. Raises redis-py's errors for an unreachable server."""
    config: dict[str, str] | None = None
    persistence: dict[str, Any] | None = None
    try:
        reply = await redis.config_get("append*")
        config = {_text(key): _text(value) for key, value in reply.items()}
    except redis_errors.ResponseError:  # NOPERM, or CONFIG renamed away (managed services)
        with contextlib.suppress(redis_errors.ResponseError):
            persistence = await redis.info("persistence")
    return durability_from(config, persistence)


async def connected_replicas(redis: aioredis.Redis) -> int:
    """Replicas of this primary that are in sync (INFO replication's `slaveN` with `state=online`: one still
    loading its first copy acknowledges nothing); 0 where INFO is refused (managed services)."""
    try:
        info = await redis.info("replication")
    except redis_errors.ResponseError:
        return 0
    replicas = [info.get(f"slave{n}") for n in range(int(info.get("connected_slaves") or 0))]
    return sum(1 for replica in replicas if isinstance(replica, dict) and replica.get("state") == "online")


async def read_version(redis: aioredis.Redis) -> ServerVersion:
    """The server's name and version (HELLO, else INFO server)."""
    try:
        return version_from(hello=await redis.execute_command("HELLO"))
    except redis_errors.ResponseError:
        return version_from(info=await redis.info("server"))
