"""Secrets never reach a page, a JSON answer or a terminal: every configured secret value is masked in the bytes."""

from __future__ import annotations

from common.config import ClickHouseSettings, RedisSettings, SourceSettings, load

MASK = "**********"


def secret_values(redis: RedisSettings, clickhouse: ClickHouseSettings, *extra: str) -> tuple[str, ...]:
    """The configured secrets: the passwords, the URLs that may carry one, the RPC URL (which usually embeds a key)
    and `extra`."""
    secrets = (redis.password, redis.url, redis.sentinel_password, clickhouse.password, clickhouse.url)
    hidden = [s.get_secret_value() for s in secrets if s]
    hidden.append(load(SourceSettings).polygon_rpc_url.get_secret_value())
    return (*extra, *hidden)


def redact(body: bytes, hidden: tuple[str, ...]) -> bytes:
    """Mask every configured secret (longest first, so a URL goes before the key inside it)."""
    for value in sorted((v for v in hidden if len(v) >= 4), key=len, reverse=True):
        body = body.replace(value.encode(), MASK.encode())
    return body
