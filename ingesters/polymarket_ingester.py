"""Gamma markets -> `stream:markets`, the token -> market map, and token lookups for the trade processor.

Writes: `stream:markets` (each entry the Gamma market object as compact JSON, unmodified), `stream:dlq`
(malformed markets, with the raw object and the reason), `markets:content_hash` (market id -> digest of the
content last appended), `markets:by_token` (token id -> MarketRef JSON: market_id, condition_id,
outcome, outcome_index, question), the cursor `state:polymarket_offset`, heartbeat `service:polymarket_ingester`.
Reads and empties: `markets:token_lookups` (SET of token ids the trade processor could not resolve).

Cursor: see `ingesters/gamma.py` (`keyset closed=false after=<next_cursor>`, `offset closed=true after=1500`, or
`synced`). Full sync: open markets, then closed ones; afterwards open markets are re-listed every
MARKETS_REFRESH_S, which also brings new markets (they are born open); a market that leaves that listing is
fetched by id with `closed=true`, so its resolved state is appended too. Only markets whose content hash changed
are appended, with their hash and token map in the same script as the cursor: a crash before that script
refetches the page, after it resumes on the next one; nothing is appended twice.
Token lookups: take up to TOKEN_LOOKUP_BATCH ids, ask Gamma with `closed=false` then `closed=true` (its
implicit default hides closed markets), append what changed (always refreshing the token map), then remove
the ids from the set. A crash between the append and the removal only repeats the lookup.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

import structlog
from pydantic import Field

from common import keys
from common.config import HttpSettings, PipelineSettings, RedisSettings, SourceSettings, load
from common.errors import PermanentSourceError, PoisonMessage
from common.gamma_fields import parse_json_list
from common.payloads import MarketRef, encode_market_ref
from common.redis_client import map_redis_errors
from common.service import Service, poll_forever, run_worker, service_main
from ingesters.gamma import (
    GammaClient,
    GammaSync,
    HashItems,
    Resource,
    append_changed,
    open_gamma,
    validate_market,
)

NAME = "polymarket_ingester"
log = structlog.get_logger()


class MarketsSettings(PipelineSettings):
    markets_refresh_s: float = Field(60.0, gt=0)
    markets_page_limit: int = Field(500, ge=1, le=1000)  # keyset pages may hold fewer (100 on Gamma today)
    markets_listing: Literal["keyset", "offset", "auto"] = "auto"
    # Gamma publishes 300 requests / 10 s for /markets; stay well under it.
    gamma_rate_per_s: float = Field(10.0, gt=0, le=30)
    # ~77-character ids: 40 per request keeps the URL far below Gamma's ~8 KB limit.
    token_lookup_batch: int = Field(40, ge=1, le=50)
    token_lookup_interval_s: float = Field(1.0, gt=0)


def market_tokens(market: Any) -> list[str]:
    """clobTokenIds of a market as returned by Gamma, [] when unreadable."""
    try:
        return [str(t) for t in parse_json_list(market.get("clobTokenIds"), "clobTokenIds")]
    except (PoisonMessage, AttributeError):
        return []


def token_index(market: dict[str, Any]) -> HashItems:
    """`markets:by_token` fields of one validated market: every clobTokenIds[i] -> its market and outcome i."""
    outcomes = parse_json_list(market.get("outcomes"), "outcomes")
    market_id, condition_id = str(market["id"]), str(market.get("conditionId") or "")
    question = str(market.get("question") or "")
    return {
        keys.MARKETS_BY_TOKEN: {
            token: encode_market_ref(
                MarketRef(
                    market_id=market_id,
                    condition_id=condition_id,
                    question=question,
                    outcome_index=i,
                    outcome=str(outcomes[i]) if i < len(outcomes) else "",
                )
            )
            for i, token in enumerate(market_tokens(market))
        }
    }


MARKETS = Resource(
    name="markets",
    stream=keys.STREAM_MARKETS,
    cursor_key=keys.STATE_POLYMARKET_OFFSET,
    hash_key=keys.MARKETS_CONTENT_HASH,
    validate=validate_market,
    index=token_index,
)


async def fetch_markets_by_tokens(gamma: GammaClient, token_ids: list[str], *, closed: bool) -> list[Any]:
    """`GET /markets?clob_token_ids=a&clob_token_ids=b&closed=...` (repeated keys)."""
    closed_text = str(closed).lower()
    params = [("clob_token_ids", t) for t in token_ids] + [("closed", closed_text), ("limit", str(len(token_ids)))]
    body = await gamma.get("/markets", params, what=f"gamma markets by token closed={closed_text}")
    return body if isinstance(body, list) else []


async def resolve_token_lookups(service: Service, gamma: GammaClient, batch: int) -> bool:
    """One batch of pending token lookups; True when there may be more right away."""
    async with map_redis_errors("take token lookups"):
        token_ids = sorted(t.decode() for t in await service.redis.srandmember(keys.TOKEN_LOOKUPS, batch))
    if not token_ids:
        return False
    found: list[Any] = []
    try:
        if wanted := [t for t in token_ids if t.isdigit()]:  # anything else cannot be a token id
            found = await fetch_markets_by_tokens(gamma, wanted, closed=False)
        if missing := sorted(set(wanted).difference(*(market_tokens(m) for m in found))):
            found += await fetch_markets_by_tokens(gamma, missing, closed=True)  # Gamma hides closed ones otherwise
    except PermanentSourceError as exc:  # Gamma refuses this batch for good: don't let it block the others
        log.error("token lookup refused; dropping the batch", tokens=len(token_ids), error=str(exc))
    page = await append_changed(service.redis, MARKETS, found, None, index_unchanged=True)
    # Dying here repeats this lookup on restart; the append above is idempotent through the content hash.
    async with map_redis_errors("remove token lookups"):
        await service.redis.srem(keys.TOKEN_LOOKUPS, *token_ids)
    resolved = len(set(token_ids) & set(page.hash_items.get(keys.MARKETS_BY_TOKEN, {})))
    service.count("token_lookups", len(token_ids))
    service.count("appended", len(page.entries))
    log.info("token lookups", tokens=len(token_ids), resolved=resolved, markets=len(found), appended=len(page.entries))
    return len(token_ids) == batch


async def run(
    settings: MarketsSettings,
    redis_settings: RedisSettings,
    http_settings: HttpSettings,
    source_settings: SourceSettings,
    *,
    once: bool = False,
) -> Service:
    """Full sync, then refresh passes and token lookups, until stopped (`once`: full sync + lookups, then exit)."""

    async def body(service: Service) -> None:
        async with open_gamma(http_settings, source_settings, settings.gamma_rate_per_s) as gamma:
            sync = GammaSync(
                service,
                MARKETS,
                gamma,
                listing=settings.markets_listing,
                page_limit=settings.markets_page_limit,
                refresh_s=settings.markets_refresh_s,
            )

            async def step() -> bool:
                lookups_left = await resolve_token_lookups(service, gamma, settings.token_lookup_batch)
                return await sync.step() or lookups_left

            interval_s = min(settings.token_lookup_interval_s, settings.markets_refresh_s)
            await poll_forever(service, step, interval_s=interval_s, once=once)

    return await run_worker(NAME, redis_settings, body)


async def start(args: argparse.Namespace) -> None:
    settings = load(MarketsSettings)
    await run(settings, load(RedisSettings), load(HttpSettings), load(SourceSettings), once=args.once)


def main(argv: list[str] | None = None) -> int:
    return service_main(NAME, start, "Gamma markets -> stream:markets, token map and token lookups.", argv)


if __name__ == "__main__":
    raise SystemExit(main())
