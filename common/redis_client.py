"""The Redis connection factory and the translation of redis-py's errors at the boundary.

`make_redis` is the one place a Redis client is built, for every service, the dashboard and the ops commands
(`make_sync_redis`, the same client in redis-py's blocking flavour, for the launcher's probe and the harness):
standalone (REDIS_URL or REDIS_HOST/REDIS_PORT), Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_MASTER: the client asks
the Sentinels for the primary and asks again after a failover) or Redis Cluster (REDIS_CLUSTER=true: the address is
any node; redis-py follows MOVED/ASK and re-reads the slot map after a failover). TLS and the ACL user apply to all
three. With REDIS_CLUSTER every key a script gets must share one slot: REDIS_KEY_PREFIX gives them a hash tag.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel
import redis.sentinel
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.config import RedisSettings, sentinel_addresses
from common.errors import SinkCommandError, TransientSinkError
from common.redis_probe import check_on_connect


def make_redis(settings: RedisSettings) -> aioredis.Redis:
    """Bytes in, bytes out (`decode_responses=False`): payloads go straight to orjson without a decode. A
    `redis.asyncio.RedisCluster` when REDIS_CLUSTER is set (same commands; see `is_cluster`). The first connection to
    a server checks it (`common.redis_probe.check_on_connect`): too old or lacking a command needed, the call raises
    `UnsupportedServer`, a ConfigError."""
    client: aioredis.Redis = _connect(
        aioredis, settings, timeout_s=settings.socket_timeout_s, redis_connect_func=check_on_connect
    )
    return client


def make_sync_redis(settings: RedisSettings, *, timeout_s: float, retry: bool = True) -> redis.Redis:
    """The same client, blocking: for the launcher's probe (`retry=False`: a silent server costs one timeout) and
    the harness."""
    options = {} if retry else {"retry": Retry(NoBackoff(), 0)}
    client: redis.Redis = _connect(redis, settings, timeout_s=timeout_s, **options)
    return client


def _connect(library: ModuleType, settings: RedisSettings, *, timeout_s: float, **extra: Any) -> Any:
    """`library` is `redis` or `redis.asyncio`: both name their clients, cluster client and Sentinel alike."""
    options: dict[str, Any] = {
        "username": settings.username,
        "password": settings.password.get_secret_value() if settings.password else None,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": min(10.0, timeout_s),
        "health_check_interval": 30,
        "decode_responses": False,
        **tls_options(settings),
        **extra,
    }
    if settings.sentinels:
        sentinel_options = {key: value for key, value in options.items() if key.startswith(("socket_", "ssl"))}
        if settings.sentinel_password:
            sentinel_options["password"] = settings.sentinel_password.get_secret_value()
        sentinel = library.sentinel.Sentinel(
            sentinel_addresses(settings.sentinels), sentinel_kwargs=sentinel_options, db=settings.db, **options
        )
        return sentinel.master_for(settings.sentinel_master)
    if settings.cluster:
        on_connect = options.pop("redis_connect_func", None)
        cluster = library.RedisCluster(host=settings.host, port=settings.port, **options)
        if on_connect is not None:
            # RedisCluster takes no connect hook: hand it to every node's connections, as redis-py itself does for
            # its own per-connection settings (the shared template, and the startup nodes built before it)
            cluster.nodes_manager.connection_kwargs["redis_connect_func"] = on_connect
            for node in cluster.nodes_manager.startup_nodes.values():
                node.connection_kwargs["redis_connect_func"] = on_connect
        return cluster
    return library.Redis(host=settings.host, port=settings.port, db=settings.db, **options)


def tls_options(settings: RedisSettings) -> dict[str, Any]:
    """redis-py's ssl_* arguments: verification on unless REDIS_TLS_VERIFY=false."""
    if not settings.tls:
        return {}
    return {
        "ssl": True,
        "ssl_ca_certs": settings.tls_ca_file,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if settings.tls_verify else ssl.CERT_NONE,
        "ssl_check_hostname": settings.tls_verify,
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
    }


def is_cluster(client: Any) -> bool:
    """A Redis Cluster client (async or blocking): no connection pool, one slot per script call."""
    return isinstance(client, (aioredis.RedisCluster, redis.RedisCluster))


# Replies that mean "not now", not "this command is wrong": out of memory (OOM), a read-only replica (READONLY), a
# failover or resharding under way (MASTERDOWN is a ClusterDownError, TRYAGAIN, CLUSTERDOWN). LOADING arrives as
# BusyLoadingError, a ConnectionError. redis-py has no class for BUSY (a script running too long) or NOREPLICAS (a
# primary cut off from its replicas refusing writes): their code stays at the start of the message.
TRANSIENT_REPLIES = (
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
)


# Redis 6.2 wraps the error of a command a script called in the script's own error ("Error running script (call to
# f_...): @user_script:65: @user_script: 65: -OOM command not allowed ..."); Redis 7 replies with the command's error.
_SCRIPT_CALL_ERROR = re.compile(r"^Error running script .*?: -([A-Z]+) ")
_WRAPPED_TRANSIENT = {
    "OOM": redis_errors.OutOfMemoryError,
    "READONLY": redis_errors.ReadOnlyError,
    "TRYAGAIN": redis_errors.TryAgainError,
    "CLUSTERDOWN": redis_errors.ClusterDownError,
    "MASTERDOWN": redis_errors.ClusterDownError,
    "LOADING": redis_errors.BusyLoadingError,
}


RedisFailure: TypeAlias = redis_errors.RedisError | redis_errors.RedisClusterException | OSError


def _unwrapped(exc: RedisFailure) -> RedisFailure:
    """A transient error a script's command met, as Redis 7 would reply it; any other error as it is."""
    wrapped = _SCRIPT_CALL_ERROR.match(str(exc)) if isinstance(exc, redis_errors.ResponseError) else None
    if wrapped and wrapped[1] in _WRAPPED_TRANSIENT:
        return _WRAPPED_TRANSIENT[wrapped[1]](str(exc))
    return exc


def _is_transient(exc: RedisFailure) -> bool:
    """True for connection loss, timeouts and the replies that mean the server cannot take the command now. A
    cluster client raises RedisClusterException (not a RedisError) when no node answers and SlotNotCoveredError
    while a failover is under way."""
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, *TRANSIENT_REPLIES)):
        return True
    if isinstance(exc, redis_errors.SlotNotCoveredError) or str(exc).startswith("Redis Cluster cannot be connected"):
        return True
    # BUSY: a script running too long; NOREPLICAS: a primary with `min-replicas-to-write` and no replica in reach
    return isinstance(exc, redis_errors.ResponseError) and str(exc).startswith(("BUSY ", "NOREPLICAS "))


@contextlib.asynccontextmanager
async def map_redis_errors(what: str) -> AsyncIterator[None]:
    """Every redis-py error becomes a SinkError(sink="redis"): TransientSinkError when the server is unreachable
    or cannot take the command now (the caller keeps its data pending and retries), SinkCommandError otherwise."""
    try:
        yield
    except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as raised:
        exc = _unwrapped(raised)
        message = f"redis {what}: {type(exc).__name__}: {exc}"
        if _is_transient(exc):
            raise TransientSinkError(message, sink="redis") from None
        raise SinkCommandError(message, sink="redis") from None
