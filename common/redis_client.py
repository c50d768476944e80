"""The Redis connection factory and the translation of redis-py's errors at the boundary."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from common.config import RedisSettings
from common.errors import SinkCommandError, TransientSinkError


def make_redis(settings: RedisSettings) -> aioredis.Redis:
    """Bytes in, bytes out (`decode_responses=False`): payloads go straight to orjson without a decode."""
    return aioredis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        password=settings.password.get_secret_value() if settings.password else None,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=min(10.0, settings.socket_timeout_s),
        health_check_interval=30,
        decode_responses=False,
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
    except (redis_errors.RedisError, OSError) as exc:
        message = f"redis {what}: {type(exc).__name__}: {exc}"
        if _is_transient(exc):
            raise TransientSinkError(message, sink="redis") from None
        raise SinkCommandError(message, sink="redis") from None
