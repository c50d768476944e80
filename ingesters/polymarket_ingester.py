"""Gamma markets -> `stream:markets`, the token -> market map, and token lookups for the trade processor.

Writes: `stream:markets` (each entry the Gamma market object as compact JSON, unmodified), `stream:dlq`
(malformed markets, with the raw object and the reason), `markets:content_hash` (market id -> digest of the
content last appended), `markets:by_token` (outcome id -> MarketRef JSON: market_id, condition_id,
outcome, outcome_index, question), the cursor `state:polymarket_offset`, heartbeat `service:polymarket_ingester`.
Reads and empties: `markets:token_lookups` (SET of ids the trade processor could not resolve).

Outcome ids (docs/upstream.md §1.4): a market's fills carry the ids its `version` names, even when it has both fields:
"v2" -> `positionIds` (a native array of Protocol V2 position ids), "v1" or none -> `clobTokenIds` (CTF token ids,
a JSON-encoded string); id i is outcome i. Both kinds go into `markets:by_token`.

Cursor: see `ingesters/gamma.py` (`keyset closed=false after=<next_cursor>`, `offset closed=true after=1500`, or
`synced`). Full sync: open markets, then closed ones; afterwards open markets are re-listed every
MARKETS_REFRESH_S, which also brings new markets (they are born open); a market that leaves that listing is
fetched by id with `closed=true`, so its resolved state is appended too. Only markets whose content hash changed
are appended, with their hash and token map in the same script as the cursor: a crash before that script
refetches the page, after it resumes on the next one; nothing is appended twice.
Token lookups: take up to TOKEN_LOOKUP_BATCH ids, ask Gamma with the filter of each id's kind
(`/markets?clob_token_ids=` for CTF token ids, `/markets/keyset?position_ids=` for position ids, since plain
`/markets` ignores that filter), `closed=false` then `closed=true` (its implicit default hides closed markets),
and the GAMMA_VERSIONS selection (without it Gamma hides every V2 market, so a position id would find nothing);
an id of a kind whose version is not selected is not asked for. Append what changed (always refreshing the token
map), then remove the ids from the set. A crash between the append and the removal only repeats the lookup.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Literal

import structlog
from pydantic import Field

from common import keys
from common.config import PipelineSettings, load
from common.errors import PermanentSourceError, PoisonMessage
from common.gamma_fields import outcome_id_version, outcome_refs, parse_json_list, version_params
from common.payloads import encode_market_ref
from common.position_ids import is_v2_position_id
from common.redis_client import map_redis_errors
from common.service import Service, service_main
from ingesters.gamma import Connections, HashItems, Resource, SyncKnobs, append_changed, require_id, run_sync
from ingesters.gamma_listing import GammaClient

NAME = "polymarket_ingester"
log = structlog.get_logger()


class MarketsSettings(PipelineSettings):
    markets_refresh_s: float = Field(60.0, gt=0)
    markets_page_limit: int = Field(100, ge=1, le=1000)  # Gamma's keyset cap; offset pages may be larger
    markets_listing: Literal["keyset", "offset", "auto"] = "auto"
    # Gamma publishes 300 requests / 10 s for /markets; stay well under it.
    gamma_rate_per_s: float = Field(10.0, gt=0, le=30)
    # ~77-character ids: 40 per request keeps the URL far below Gamma's ~8 KB limit.
    token_lookup_batch: int = Field(40, ge=1, le=50)
    # Every 2 s: the tokens asked for meanwhile go in one Gamma request rather than one each second (the demo's
    # unlisted tokens come due one by one); a token is found at most a second later.
    token_lookup_interval_s: float = Field(2.0, gt=0)


def outcome_ids_field(market: dict[str, Any]) -> str:
    """The field holding the ids a market's fills carry, chosen by `version` even when both are present."""
    return "positionIds" if market.get("version") == "v2" else "clobTokenIds"


def market_outcome_ids(market: Any) -> list[str]:
    """The outcome ids of a market as returned by Gamma (id i is outcome i), [] when unreadable."""
    try:
        field = outcome_ids_field(market)
        return [str(t) for t in parse_json_list(market.get(field), field)]
    except (PoisonMessage, AttributeError):
        return []


def validate_market(item: Any) -> None:
    """What the ClickHouse writer and the trade processor rely on; raises PoisonMessage with the reason."""
    require_id(item)
    if not isinstance(item.get("conditionId", ""), str):
        raise PoisonMessage("conditionId is not a string")
    outcomes = parse_json_list(item.get("outcomes"), "outcomes")
    parse_json_list(item.get("outcomePrices"), "outcomePrices")
    for field in ("clobTokenIds", "positionIds"):  # the markets table keeps both
        if not all(isinstance(i, str) and i.isdigit() for i in parse_json_list(item.get(field), field)):
            raise PoisonMessage(f"{field} holds something other than decimal strings")
    field = outcome_ids_field(item)
    ids = parse_json_list(item.get(field), field)
    if ids and outcomes and len(ids) != len(outcomes):
        raise PoisonMessage(f"{len(ids)} {field} for {len(outcomes)} outcomes")


def token_index(market: dict[str, Any]) -> HashItems:
    """`markets:by_token` fields of one validated market: every outcome id i -> its market and outcome i."""
    outcomes = parse_json_list(market.get("outcomes"), "outcomes")
    market_id, condition_id, question = str(market["id"]), str(market.get("conditionId") or ""), market.get("question")
    refs = outcome_refs(market_id, condition_id, str(question or ""), outcomes, market_outcome_ids(market))
    return {keys.MARKETS_BY_TOKEN: {token: encode_market_ref(ref) for token, ref in refs.items()}}


MARKETS = Resource(
    name="markets",
    stream=keys.STREAM_MARKETS,
    cursor_key=keys.STATE_POLYMARKET_OFFSET,
    hash_key=keys.MARKETS_CONTENT_HASH,
    validate=validate_market,
    index=token_index,
)


async def fetch_markets_by_ids(gamma: GammaClient, ids: list[str], *, closed: bool) -> list[Any]:
    """The markets owning `ids` (repeated keys): `GET /markets?clob_token_ids=` for CTF token ids and
    `GET /markets/keyset?position_ids=` for position ids (plain `/markets` ignores `position_ids`)."""
    closed_text = str(closed).lower()
    positions = [i for i in ids if is_v2_position_id(i)]
    by_filter = (("/markets", "clob_token_ids", sorted(set(ids) - set(positions))),
                 ("/markets/keyset", "position_ids", positions))  # fmt: skip
    found: list[Any] = []
    for path, name, group in by_filter:
        if group:
            params = [(name, i) for i in group] + [("closed", closed_text), ("limit", str(len(group)))]
            params += version_params(gamma.versions)
            body = await gamma.get(path, params, what=f"gamma markets by {name} closed={closed_text}")
            found += gamma.selected(markets_of(body))
    return found


def markets_of(body: Any) -> list[Any]:
    """The markets of a listing reply: `/markets` answers a list, `/markets/keyset` a `{"markets": [...]}`."""
    if isinstance(body, dict):
        body = body.get("markets")
    return body if isinstance(body, list) else []


async def resolve_token_lookups(service: Service, gamma: GammaClient, batch: int) -> bool:
    """One batch of pending token lookups; True when there may be more right away."""
    async with map_redis_errors("take token lookups"):
        token_ids = sorted(t.decode() for t in await service.redis.srandmember(keys.TOKEN_LOOKUPS, batch))
    if not token_ids:
        return False
    found: list[Any] = []
    try:
        # anything not a number cannot be a token id; an id of a version not selected is not asked for
        if wanted := [t for t in token_ids if t.isdigit() and outcome_id_version(t) in gamma.versions]:
            found = await fetch_markets_by_ids(gamma, wanted, closed=False)
        if missing := sorted(set(wanted).difference(*(market_outcome_ids(m) for m in found))):
            found += await fetch_markets_by_ids(gamma, missing, closed=True)  # Gamma hides closed ones otherwise
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
    settings: MarketsSettings, connections: Connections, *, once: bool = False, stop: asyncio.Event | None = None
) -> Service:
    """Full sync, then refresh passes and token lookups, until stopped (`once`: full sync + lookups, then exit)."""
    knobs = SyncKnobs(
        listing=settings.markets_listing,
        page_limit=settings.markets_page_limit,
        refresh_s=settings.markets_refresh_s,
        rate_per_s=settings.gamma_rate_per_s,
        interval_s=min(settings.token_lookup_interval_s, settings.markets_refresh_s),
    )

    async def lookups(service: Service, gamma: GammaClient) -> bool:
        return await resolve_token_lookups(service, gamma, settings.token_lookup_batch)

    return await run_sync(NAME, MARKETS, knobs, connections, once=once, stop=stop, also=lookups)


async def start(args: argparse.Namespace) -> None:
    await run(load(MarketsSettings), Connections.load(), once=args.once)


def main(argv: list[str] | None = None) -> int:
    return service_main(NAME, start, "Gamma markets -> stream:markets, token map and token lookups.", argv)


if __name__ == "__main__":
    raise SystemExit(main())
