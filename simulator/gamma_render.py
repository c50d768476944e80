"""Catalogue objects -> Gamma JSON, with Gamma's types (docs/upstream.md §1.3).

Quirks kept on purpose: `outcomes`, `outcomePrices`, `clobTokenIds`, `umaResolutionStatuses` are JSON-encoded
strings while `positionIds` (V2 markets, docs/upstream.md §1.4) is a native array (or, for some, a JSON-encoded
string); a market's `version` is "v1", "v2" or absent, an event's "v1" or "v2"; market `volume`/`liquidity` are
strings (with `volumeNum`/`liquidityNum` numbers) while event `volume`, `liquidity`, `openInterest` are numbers;
`closedTime` and tag `publishedAt` are not strict ISO. Today's changes (docs/upstream-gamma.md): `marketMakerAddress`
only on legacy AMM markets; V2 markets carry `resolutionStatus`, `onchainEventId`, `requestId` and `questionId`;
the rarer real shapes of `gamma_shapes.py`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any

from simulator.catalogue import SERIES, TAGS, Catalogue, Event, Market

IMAGE = "https://polymarket-upload.s3.us-east-2.amazonaws.com/simulated.png"


def iso_us(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_fraction(seconds: float, digits: int) -> str:
    """ISO time with `digits` digits of fractions of a second (Gamma sends 3 to 6)."""
    return iso_us(seconds)[: 20 + digits] + "Z"


def iso_s(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def pg_time(seconds: float) -> str:
    """Postgres-style text Gamma uses for closedTime: "2025-06-10 23:10:00+00"."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def price_text(price: float) -> str:
    return format(round(price, 4), "g")


def outcome_prices(market: Market) -> list[str]:
    if market.gamma_shape == "long_prices":  # 34 significant digits, as 2020 markets' prices
        with localcontext(prec=40):
            first = Decimal(f"{market.price:.4f}") + Decimal("1e-34")
            return [str(first), str(1 - first)]
    return [price_text(market.price), price_text(1.0 - market.price)]


def event_version(event: Event, catalogue: Catalogue) -> str:
    return "v2" if catalogue.markets[event.market_indexes[0]].version == "v2" else "v1"


def slim_event(event: Event, catalogue: Catalogue) -> dict[str, Any]:
    """The parent event as nested in a market (no markets/tags)."""
    data = {
        "id": event.id,
        "ticker": event.slug,
        "slug": event.slug,
        "title": event.title,
        "description": event.description,
        "startDate": iso_us(event.created_s + 120),
        "creationDate": iso_s(event.created_s),
        "endDate": iso_s(event.end_s),
        "image": IMAGE,
        "icon": IMAGE,
        "active": True,
        "closed": event.closed,
        "archived": False,
        "new": False,
        "featured": False,
        "restricted": True,
        "liquidity": round(sum(catalogue.markets[i].liquidity for i in event.market_indexes), 4),
        "volume": round(sum(catalogue.markets[i].volume for i in event.market_indexes), 6),
        "openInterest": 0,
        "createdAt": iso_us(event.created_s),
        "updatedAt": iso_us(event.updated_s),
        "competitive": 0.9,
        "volume24hr": 0,
        "volume1wk": 0,
        "volume1mo": 0,
        "volume1yr": 0,
        "enableOrderBook": True,
        "liquidityClob": 0,
        "negRisk": event.neg_risk,
        "commentCount": 0,
        "cyom": False,
        "showAllOutcomes": True,
        "showMarketImages": True,
        "enableNegRisk": event.neg_risk,
        "automaticallyActive": True,
        "negRiskAugmented": False,
        "pendingDeployment": False,
        "deploying": False,
        "requiresTranslation": False,
        "version": event_version(event, catalogue),
    }
    if event.neg_risk:
        data["negRiskMarketID"] = event.neg_risk_market_id
    if event.series_index is not None:
        data["seriesSlug"] = SERIES[event.series_index][2]
    if event.closed:
        data["closedTime"] = pg_time(event.updated_s)
    return data


def render_market(market: Market, catalogue: Catalogue) -> dict[str, Any]:
    event = catalogue.events[market.event_index]
    volume, liquidity = round(market.volume, 6), round(market.liquidity, 4)
    spread = market.tick
    data: dict[str, Any] = {
        "id": market.id,
        "question": market.question,
        "conditionId": market.condition_id,
        "slug": market.slug,
        "resolutionSource": "https://data.chain.link/streams/btc-usd",
        "endDate": iso_s(market.end_s),
        "liquidity": str(liquidity),
        "startDate": iso_us(market.created_s + 30),
        "image": IMAGE,
        "icon": IMAGE,
        "description": event.description,
        "outcomes": json.dumps(list(market.outcomes), ensure_ascii=False),
        "outcomePrices": json.dumps(outcome_prices(market)),
        "volume": str(volume),
        "active": True,
        "closed": market.closed,
        "createdAt": iso_us(market.created_s),
        "updatedAt": iso_us(market.updated_s),
        "new": False,
        "featured": False,
        "archived": False,
        "restricted": True,
        "groupItemTitle": market.group_item_title,
        "groupItemThreshold": "0",
        "questionID": market.question_id,
        "enableOrderBook": True,
        "orderPriceMinTickSize": market.tick,
        "orderMinSize": 5,
        "volumeNum": volume,
        "liquidityNum": liquidity,
        "endDateIso": iso_date(market.end_s),
        "startDateIso": iso_date(market.created_s),
        "hasReviewedDates": True,
        "volume24hr": round(volume / 50, 6),
        "volume1wk": round(volume / 7, 6),
        "volume1mo": round(volume / 2, 6),
        "volume1yr": volume,
        "clobTokenIds": json.dumps(list(market.token_ids)),
        "volume24hrClob": round(volume / 50, 6),
        "volume1wkClob": round(volume / 7, 6),
        "volume1moClob": round(volume / 2, 6),
        "volume1yrClob": volume,
        "volumeClob": volume,
        "liquidityClob": liquidity,
        "acceptingOrders": not market.closed,
        "negRisk": market.neg_risk,
        "events": [slim_event(event, catalogue)],
        "ready": False,
        "funded": False,
        "acceptingOrdersTimestamp": iso_s(market.created_s + 60),
        "cyom": False,
        "competitive": 0.95,
        "pagerDutyNotificationEnabled": False,
        "approved": True,
        "rewardsMinSize": 0,
        "rewardsMaxSpread": 0,
        "spread": spread,
        "lastTradePrice": round(market.price, 4),
        "bestBid": round(max(market.price - spread, 0), 4),
        "bestAsk": round(min(market.price, 1.0), 4),
        "automaticallyActive": True,
        "clearBookOnStart": False,
        "showGmpSeries": False,
        "showGmpOutcome": False,
        "manualActivation": False,
        "negRiskOther": False,
        "umaResolutionStatuses": "[]",
        "pendingDeployment": False,
        "deploying": False,
        "rfqEnabled": False,
        "holdingRewardsEnabled": False,
        "feesEnabled": market.fee_bps > 0,
        "requiresTranslation": False,
    }
    if market.version is not None:
        data["version"] = market.version
    if market.version == "v2":
        data["positionIds"] = list(market.position_ids)
        data["resolutionStatus"] = "resolved" if market.closed else "active"
        data["onchainEventId"] = event.neg_risk_market_id or market.condition_id
        data["requestId"] = market.condition_id
        data["questionId"] = market.question_id
    if not market.shows_clob_token_ids:
        del data["clobTokenIds"]
    if market.neg_risk:
        data["negRiskMarketID"] = market.neg_risk_market_id
        data["negRiskRequestID"] = market.question_id
    if market.closed:
        data["closedTime"] = pg_time(market.updated_s)
        data["umaResolutionStatuses"] = json.dumps(["proposed", "resolved"])
    apply_shape(market, data)
    return data


def apply_shape(market: Market, data: dict[str, Any]) -> None:
    """The market's rarer real shape (`gamma_shapes.py`), applied to its rendered JSON."""
    shape = market.gamma_shape
    if shape == "no_volume":
        for key in ("volume", "liquidity", "volumeNum", "liquidityNum"):
            del data[key]
    elif shape == "no_neg_risk":
        del data["negRisk"]
    elif shape == "no_start_date":
        del data["startDate"]
    elif shape == "amm":
        data["marketMakerAddress"] = "0xFeEd0000aBcDeF" + market.condition_id[-26:].upper()
        data["fpmmLive"] = True
    elif shape == "scalar":
        data.update(marketType="scalar", lowerBound="8000000000", upperBound="20000000000")
    elif shape == "short_fraction":
        digits = 3 + market.index % 3
        for key, seconds in (("createdAt", market.created_s), ("updatedAt", market.updated_s),
                             ("startDate", market.created_s + 30)):  # fmt: skip
            data[key] = iso_fraction(seconds, digits)
    elif shape == "position_ids_text":
        data["positionIds"] = json.dumps(data["positionIds"])


def render_tag(index: int) -> dict[str, Any]:
    tag_id, label, slug = TAGS[index]
    return {
        "id": tag_id,
        "label": label,
        "slug": slug,
        "forceShow": False,
        "publishedAt": "2023-11-02 21:46:19.507+00",
        "createdAt": "2023-11-02T21:46:19.507Z",
        "updatedAt": "2026-03-09T22:25:02.420693Z",
    }


def render_series(index: int) -> dict[str, Any]:
    series_id, title, slug, recurrence = SERIES[index]
    return {
        "id": series_id,
        "ticker": slug,
        "slug": slug,
        "title": title,
        "seriesType": "single",
        "recurrence": recurrence,
        "active": True,
        "closed": False,
        "archived": False,
        "new": False,
        "featured": False,
        "restricted": True,
        "image": IMAGE,
        "icon": IMAGE,
        "layout": "default",
        "publishedAt": "2022-10-13 00:37:11.511+00",
        "createdBy": "15",
        "updatedBy": "15",
        "createdAt": "2022-10-13T00:37:01.013Z",
        "updatedAt": "2025-06-09T09:08:24.39418Z",
        "commentsEnabled": False,
        "competitive": "0",
        "volume24hr": 0,
        "volume": 179054.060267,
        "liquidity": 174569.53159,
        "startDate": "2021-01-01T17:00:00Z",
        "commentCount": 2003,
    }


def render_event(event: Event, catalogue: Catalogue, markets: list[dict[str, Any]]) -> dict[str, Any]:
    data = slim_event(event, catalogue)
    data["markets"] = markets
    data["tags"] = [render_tag(i) for i in event.tag_indexes]
    data["series"] = [render_series(event.series_index)] if event.series_index is not None else []
    return data
