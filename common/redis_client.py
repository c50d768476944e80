"""The Redis connection factory and the translation of redis-py's errors at the boundary."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from common.config import RedisSettings
from common.errors import TransientSinkError


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


@contextlib.asynccontextmanager
async def map_redis_errors(what: str) -> AsyncIterator[None]:
    """Connection loss and timeouts become TransientSinkError; the caller backs off and retries."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError) as exc:
        raise TransientSinkError(f"redis {what}: {type(exc).__name__}: {exc}") from None
