"""Gamma REST stand-in driven with httpx: shapes and types of the reference's real examples, the offset and
keyset contracts, Gamma's implicit closed=false and v1-only default, late and unlisted markets."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

# Types of every field of a real Gamma market object (docs/upstream.md §1.3), by JSON type.
MARKET_FIELD_TYPES = {
    **dict.fromkeys(
        [
            "id",
            "question",
            "conditionId",
            "slug",
            "resolutionSource",
            "endDate",
            "liquidity",
            "startDate",
            "image",
            "icon",
            "description",
            "outcomes",
            "outcomePrices",
            "volume",
            "createdAt",
            "updatedAt",
            "groupItemThreshold",
            "questionID",
            "endDateIso",
            "startDateIso",
            "clobTokenIds",
            "acceptingOrdersTimestamp",
            "umaResolutionStatuses",
        ],
        str,
    ),
    **dict.fromkeys(
        [
            "active",
            "closed",
            "new",
            "featured",
            "archived",
            "restricted",
            "enableOrderBook",
            "hasReviewedDates",
            "acceptingOrders",
            "negRisk",
            "ready",
            "funded",
            "cyom",
            "pagerDutyNotificationEnabled",
            "approved",
            "automaticallyActive",
            "clearBookOnStart",
            "showGmpSeries",
            "showGmpOutcome",
            "manualActivation",
            "negRiskOther",
            "pendingDeployment",
            "deploying",
            "rfqEnabled",
            "holdingRewardsEnabled",
            "feesEnabled",
            "requiresTranslation",
        ],
        bool,
    ),
    **dict.fromkeys(
        [
            "orderPriceMinTickSize",
            "orderMinSize",
            "volumeNum",
            "liquidityNum",
            "volume24hr",
            "volume1wk",
            "volume1mo",
            "volume1yr",
            "volume24hrClob",
            "volume1wkClob",
            "volume1moClob",
            "volume1yrClob",
            "volumeClob",
            "liquidityClob",
            "competitive",
            "rewardsMinSize",
            "rewardsMaxSpread",
            "spread",
            "lastTradePrice",
            "bestBid",
            "bestAsk",
        ],
        (int, float),
    ),
}
# The reference's Event example (as nested in a market) and the full-event extras.
EVENT_FIELD_TYPES = {
    **dict.fromkeys(
        [
            "id",
            "ticker",
            "slug",
            "title",
            "description",
            "startDate",
            "creationDate",
            "endDate",
            "image",
            "icon",
            "createdAt",
            "updatedAt",
        ],
        str,
    ),
    **dict.fromkeys(
        [
            "active",
            "closed",
            "archived",
            "new",
            "featured",
            "restricted",
            "negRisk",
            "cyom",
            "enableNegRisk",
            "negRiskAugmented",
            "showAllOutcomes",
            "showMarketImages",
        ],
        bool,
    ),
    **dict.fromkeys(["liquidity", "volume", "openInterest", "commentCount", "volume24hr"], (int, float)),
    "version": str,
}
BOTH = {"version": ["v1", "v2"]}  # httpx repeats the key: version=v1&version=v2
TAG_FIELD_TYPES = {"id": str, "label": str, "slug": str, "forceShow": bool, "createdAt": str, "updatedAt": str}


def check_types(row: dict[str, object], types: dict[str, object]) -> None:
    for field, expected in types.items():
        assert field in row, field
        assert isinstance(row[field], expected), (field, row[field])  # type: ignore[arg-type]
        if expected is not bool:
            assert not isinstance(row[field], bool), field


def check_market_types(market: dict[str, object]) -> None:
    """v1 markets carry `clobTokenIds`; V2 ones a native `positionIds` array, and `clobTokenIds` only sometimes."""
    types = dict(MARKET_FIELD_TYPES)
    if market.get("version") == "v2":
        types |= dict.fromkeys(("resolutionStatus", "onchainEventId", "requestId", "questionId"), str)
        types["positionIds"] = list
        if "clobTokenIds" not in market:
            types.pop("clobTokenIds")
    check_types(market, types)
    assert "marketMakerAddress" not in market  # omitted since 2026-08 for every market but legacy AMM ones


def outcome_ids(market: dict[str, Any]) -> list[str]:
    """The ids a market's fills carry, chosen by `version` (docs/upstream.md §1.4)."""
    return market["positionIds"] if market.get("version") == "v2" else json.loads(market["clobTokenIds"])


@pytest.fixture
def sim(simulator):  # type: ignore[no-untyped-def]
    """Without the rarer real shapes (`test_simulator_gamma_shapes.py` covers them): every field is here."""
    return simulator(seed=3, markets=300, history_fills=3_000, late_listing_delay_s=3600, gamma_shape_share=0)


def all_pages(client: httpx.Client, url: str, params: dict[str, object]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    offset = 0
    while True:
        page = client.get(url, params={**params, "offset": offset}).json()
        if not page:
            return rows
        rows += page
        offset += len(page)


def test_market_fields_have_the_reference_types_and_json_encoded_strings(sim) -> None:  # type: ignore[no-untyped-def]
    markets = httpx.get(f"{sim.gamma_url}/markets", params={"limit": 50, **BOTH}).json()
    assert isinstance(markets, list) and len(markets) == 50
    for market in markets:
        check_market_types(market)
        tokens, outcomes = outcome_ids(market), json.loads(market["outcomes"])
        prices = json.loads(market["outcomePrices"])
        assert len(tokens) == len(outcomes) == len(prices) == 2
        assert all(isinstance(t, str) and t.isdigit() and len(t) >= 75 for t in tokens)  # position ids >= 2^248
        assert all(isinstance(p, str) for p in prices) and abs(sum(map(float, prices)) - 1) < 1e-9
        assert float(market["volume"]) == market["volumeNum"]
        assert market["createdAt"].endswith("Z") and len(market["createdAt"]) == len("2025-12-30T17:01:49.027357Z")
        check_types(market["events"][0], EVENT_FIELD_TYPES)
        assert "markets" not in market["events"][0]
    assert '"[\\"' in httpx.get(f"{sim.gamma_url}/markets", params={"limit": 1}).text  # a string, not an array
    assert {m.get("version") for m in markets} == {"v1", "v2", None}  # `version` decides which ids a market uses


def test_markets_listing_applies_gammas_implicit_closed_false(sim) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client() as client:
        default = all_pages(client, f"{sim.gamma_url}/markets", {"limit": 40, **BOTH})
        open_ = all_pages(client, f"{sim.gamma_url}/markets", {"limit": 40, "closed": "false", **BOTH})
        closed = all_pages(client, f"{sim.gamma_url}/markets", {"limit": 40, "closed": "true", **BOTH})
    assert [m["id"] for m in default] == [m["id"] for m in open_]
    assert closed and all(m["closed"] for m in closed) and not any(m["closed"] for m in default)
    listed = [m for m in sim.world.catalogue.markets if m.listing == "listed"]
    assert len(default) + len(closed) == len(listed)
    assert len({m["id"] for m in default + closed}) == len(listed)  # offset paging: no gaps, no duplicates
    assert all(m["closedTime"].endswith("+00") for m in closed)
    assert json.loads(closed[0]["outcomePrices"]) in (["1", "0"], ["0", "1"])


def test_offset_listing_orders_by_requested_field(sim) -> None:  # type: ignore[no-untyped-def]
    rows = httpx.get(
        f"{sim.gamma_url}/markets", params={"limit": 500, "order": "volumeNum", "ascending": "false", **BOTH}
    ).json()
    volumes = [m["volumeNum"] for m in rows]
    assert volumes == sorted(volumes, reverse=True) and len(rows) > 20
    default = httpx.get(f"{sim.gamma_url}/markets").json()
    assert len(default) == 20 and [int(m["id"]) for m in default] == sorted(int(m["id"]) for m in default)


def test_keyset_pages_follow_next_cursor_and_reject_offset(sim) -> None:  # type: ignore[no-untyped-def]
    url = f"{sim.gamma_url}/markets/keyset"
    seen, cursor, pages = [], None, 0
    with httpx.Client() as client:
        while True:
            params: dict[str, object] = {"limit": 500, "closed": "false"}
            if cursor:
                params["after_cursor"] = cursor
            body = client.get(url, params=params).json()
            pages += 1
            assert set(body) <= {"markets", "next_cursor"}
            assert len(body["markets"]) <= 100  # the keyset hard cap, whatever `limit` says
            seen += [m["id"] for m in body["markets"]]
            cursor = body.get("next_cursor")
            if cursor is None:
                break
            assert len(body["markets"]) == 100  # next_cursor only on a full page
        expected = all_pages(client, f"{sim.gamma_url}/markets", {"limit": 1000})
    assert seen == [m["id"] for m in expected] and pages >= 2
    response = httpx.get(url, params={"offset": 10})
    assert response.status_code == 422 and "offset" in response.json()["error"]
    assert httpx.get(f"{sim.gamma_url}/events/keyset", params={"limit": 501}).status_code == 422
    assert httpx.get(url, params={"after_cursor": "not-a-cursor!"}).status_code == 422


def test_keyset_cursor_returns_rows_created_after_it(sim) -> None:  # type: ignore[no-untyped-def]
    url = f"{sim.gamma_url}/markets/keyset"
    late_ids = {m.id for m in sim.world.catalogue.markets if m.listing == "late"}
    seen: set[str] = set()
    last_cursor, cursor = None, None
    while True:
        page = httpx.get(url, params={"limit": 100, **BOTH, **({"after_cursor": cursor} if cursor else {})}).json()
        seen |= {m["id"] for m in page["markets"]}
        if "next_cursor" not in page:
            break
        last_cursor = cursor = page["next_cursor"]
    assert last_cursor is not None and late_ids and not late_ids & seen
    sim.list_late_markets()
    again = httpx.get(url, params={"limit": 100, "after_cursor": last_cursor, **BOTH}).json()
    assert late_ids <= {m["id"] for m in again["markets"]}


def test_events_carry_nested_markets_tags_series_and_numeric_volume(sim) -> None:  # type: ignore[no-untyped-def]
    events = httpx.get(f"{sim.gamma_url}/events", params={"limit": 200, **BOTH}).json()
    assert events
    for event in events:
        check_types(event, EVENT_FIELD_TYPES)
        assert isinstance(event["markets"], list) and event["markets"]
        assert isinstance(event["series"], list) and isinstance(event["tags"], list) and event["tags"]
        for tag in event["tags"]:
            check_types(tag, TAG_FIELD_TYPES)
        for market in event["markets"]:
            check_market_types(market)
            assert market["negRisk"] == event["negRisk"]
            assert (market.get("version") or "v1") == event["version"]  # an event is one version, as its markets
    neg_risk = [e for e in events if e["negRisk"]]
    assert neg_risk and all(len(e["markets"]) >= 3 and e["negRiskMarketID"].startswith("0x") for e in neg_risk)
    assert any(e["series"] for e in events) and {e["version"] for e in events} == {"v1", "v2"}
    keyset = httpx.get(f"{sim.gamma_url}/events/keyset", params={"limit": 5}).json()
    assert len(keyset["events"]) == 5 and "next_cursor" in keyset


def test_lookup_by_token_id_finds_listed_but_never_unlisted_markets(sim) -> None:  # type: ignore[no-untyped-def]
    truth = sim.truth(fills=False)
    market = sim.world.catalogue.markets[0]
    rows = httpx.get(
        f"{sim.gamma_url}/markets",
        params=[("clob_token_ids", market.token_ids[1]), ("closed", str(market.closed).lower())],
    ).json()
    assert [r["id"] for r in rows] == [market.id]
    for token in truth["unlisted_token_ids"] + truth["late_token_ids"]:
        for closed in ("true", "false"):
            params = {"clob_token_ids": token, "closed": closed}
            assert httpx.get(f"{sim.gamma_url}/markets", params=params).json() == []
    assert httpx.get(f"{sim.gamma_url}/markets/{truth['unlisted_market_ids'][0]}").status_code == 404
    assert httpx.get(f"{sim.gamma_url}/markets/{market.id}").json()["id"] == market.id
    sim.list_late_markets()
    late = httpx.get(f"{sim.gamma_url}/markets", params={"clob_token_ids": truth["late_token_ids"][0]}).json()
    assert [m["id"] for m in late] == [truth["late_market_ids"][0]]
