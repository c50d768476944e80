"""Token -> market lookups for the trade processor: a local cache in front of the `markets:by_token` hash."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
import structlog

from common import keys
from common.errors import PoisonMessage
from common.payloads import MarketRef, decode_market_ref
from common.redis_client import map_redis_errors

log = structlog.get_logger()

# Outcome names and indexes of a token never change, so a cached entry never goes stale; the bound is for memory.
CACHE_MAX_TOKENS = 500_000


class MarketsCache:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        max_tokens: int = CACHE_MAX_TOKENS,
        wanted: Callable[[str], bool] = lambda _: True,
        lookup_repeat_s: float = 0.0,
    ) -> None:
        self.redis = redis
        self.max_tokens = max_tokens
        self.wanted = wanted  # which unknown tokens to ask the markets ingester for
        self.lookup_repeat_s = lookup_repeat_s
        self._cache: dict[str, MarketRef] = {}
        self._asked_at: dict[str, float] = {}  # unknown token -> monotonic time it was last asked for

    async def resolve(self, tokens: Iterable[str]) -> dict[str, MarketRef]:
        """The markets of `tokens` that are known; unknown `wanted` tokens are asked of the markets ingester."""
        found = {token: self._cache[token] for token in tokens if token in self._cache}
        missing = [token for token in tokens if token not in found]
        if missing:
            async with map_redis_errors("read markets:by_token"):
                values = await self.redis.hmget(keys.MARKETS_BY_TOKEN, missing)
            for token, value in zip(missing, values, strict=True):
                if value is None:
                    continue
                try:
                    found[token] = self._remember(token, decode_market_ref(value))
                except PoisonMessage as exc:
                    log.error("bad markets:by_token value", token=token, error=str(exc))
            await self.request_lookups(token for token in missing if token not in found and self.wanted(token))
        return found

    async def request_lookups(self, tokens: Iterable[str]) -> None:
        """Ask the markets ingester for the markets of `tokens`, each at most every `lookup_repeat_s`."""
        now = time.monotonic()
        due = [token for token in tokens if now - self._asked_at.get(token, -math.inf) >= self.lookup_repeat_s]
        if not due:
            return
        async with map_redis_errors("request token lookups"):
            await self.redis.sadd(keys.TOKEN_LOOKUPS, *due)
        if len(self._asked_at) >= self.max_tokens:
            self._asked_at.clear()
        self._asked_at.update(dict.fromkeys(due, now))

    def _remember(self, token: str, market: MarketRef) -> MarketRef:
        if len(self._cache) >= self.max_tokens:
            self._cache.clear()  # rare; simpler and cheaper than LRU bookkeeping on the hot path
        self._cache[token] = market
        return market
