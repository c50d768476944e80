"""The Redis connection factory and the translation of redis-py's errors at the boundary."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from common.config import RedisSettings
from common.errors import SinkCommandError, TransientSinkError
from common.redis_probe import check_on_connect


def make_redis(settings: RedisSettings) -> aioredis.Redis:
    """Bytes in, bytes out (`decode_responses=False`): payloads go straight to orjson without a decode. The first
    connection to a server checks it (`common.redis_probe.check_on_connect`): too old or lacking a command needed,
    the call raises `UnsupportedServer`, a ConfigError."""
    return aioredis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        password=settings.password.get_secret_value() if settings.password else None,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=min(10.0, settings.socket_timeout_s),
        health_check_interval=30,
        decode_responses=False,
        redis_connect_func=check_on_connect,
    )


# Replies that mean "not now", not "this command is wrong": out of memory (OOM), a read-only replica (READONLY), a
# failover or resharding under way (MASTERDOWN is a ClusterDownError, TRYAGAIN, CLUSTERDOWN). LOADING arrives as
# BusyLoadingError, a ConnectionError. redis-py has no class for BUSY (a script running too long): its code stays
# at the start of the message.
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


def _unwrapped(exc: redis_errors.RedisError | OSError) -> redis_errors.RedisError | OSError:
    """A transient error a script's command met, as Redis 7 would reply it; any other error as it is."""
    wrapped = _SCRIPT_CALL_ERROR.match(str(exc)) if isinstance(exc, redis_errors.ResponseError) else None
    if wrapped and wrapped[1] in _WRAPPED_TRANSIENT:
        return _WRAPPED_TRANSIENT[wrapped[1]](str(exc))
    return exc


def _is_transient(exc: redis_errors.RedisError | OSError) -> bool:
    """True for connection loss, timeouts and the replies that mean the server cannot take the command now."""
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, *TRANSIENT_REPLIES)):
        return True
    return isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("BUSY ")


@contextlib.asynccontextmanager
async def map_redis_errors(what: str) -> AsyncIterator[None]:
    """Every redis-py error becomes a SinkError(sink="redis"): TransientSinkError when the server is unreachable
    or cannot take the command now (the caller keeps its data pending and retries), SinkCommandError otherwise."""
    try:
        yield
    except (redis_errors.RedisError, OSError) as raised:
        exc = _unwrapped(raised)
        message = f"redis {what}: {type(exc).__name__}: {exc}"
        if _is_transient(exc):
            raise TransientSinkError(message, sink="redis") from None
        raise SinkCommandError(message, sink="redis") from None
