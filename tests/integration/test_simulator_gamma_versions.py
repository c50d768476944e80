"""Gamma's version default in the simulator (no `version` -> v1 only), and the ingesters working whichever way the
offset listings treat `version` (unverified upstream: honoured, ignored, or v1 only whatever is asked)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from common import keys
from common.config import GammaSettings, RedisSettings, SourceSettings
from ingesters import polymarket_events_ingester as events_ingester
from ingesters import polymarket_ingester as markets_ingester
from ingesters.gamma import Connections
from tests.integration.test_gamma_ingesters import HTTP, stream_ids
from tests.integration.test_ops_doctor import WORLD as DOCTOR_WORLD
from tests.integration.test_ops_doctor import point_at, run_doctor

WORLD = {"seed": 8, "markets": 60, "history_fills": 300, "late_listing_delay_s": 3600.0}


def ids(sim: Any, path: str, params: list[tuple[str, str]]) -> Counter[str]:
    """Item id -> version of one listing page, both `closed` values."""
    found: Counter[str] = Counter()
    for closed in ("false", "true"):
        response = httpx.get(f"{sim.gamma_url}{path}", params=[*params, ("closed", closed), ("limit", "500")])
        response.raise_for_status()
        body = response.json()
        items = body if isinstance(body, list) else body[path.split("/")[1]]
        found.update(item.get("version") or "v1" for item in items)
    return found


def test_every_listing_serves_v1_only_unless_asked_and_refuses_an_unknown_version(simulator: Any) -> None:
    sim = simulator(**WORLD)
    markets = [m for m in sim.world.catalogue.markets if m.listing == "listed"]
    counts = Counter(m.version or "v1" for m in markets)
    assert counts["v1"] and counts["v2"]
    for path in ("/markets", "/markets/keyset"):
        assert ids(sim, path, []) == Counter({"v1": counts["v1"]})
        assert ids(sim, path, [("version", "v2")]) == Counter({"v2": counts["v2"]})
        assert ids(sim, path, [("version", "v1"), ("version", "v2")]) == counts
        assert ids(sim, path, [("version", "v1,v2")]) == counts
        refused = httpx.get(f"{sim.gamma_url}{path}", params={"version": "v3"})
        assert refused.status_code == 422 and "v3" in refused.json()["error"]
    for path in ("/events", "/events/keyset"):
        assert set(ids(sim, path, [])) == {"v1"} and set(ids(sim, path, [("version", "v2")])) == {"v2"}
    v2 = next(m for m in markets if m.version == "v2" and m.shows_clob_token_ids)
    lookup = [("position_ids", v2.position_ids[0]), ("closed", str(v2.closed).lower())]
    assert httpx.get(f"{sim.gamma_url}/markets/keyset", params=lookup).json()["markets"] == []  # the default hides it
    found = httpx.get(f"{sim.gamma_url}/markets/keyset", params=[*lookup, ("version", "v2")]).json()["markets"]
    assert [m["id"] for m in found] == [v2.id]


@pytest.mark.parametrize("mode", ["honour", "ignore", "v1_only"])
def test_the_offset_listings_treat_version_as_configured_and_keyset_always_honours_it(simulator: Any, mode: str):
    sim = simulator(**WORLD, gamma_offset_versions=mode)
    counts = Counter(m.version or "v1" for m in sim.world.catalogue.markets if m.listing == "listed")
    offset = ids(sim, "/markets", [("version", "v2")])
    assert (
        offset
        == {"honour": Counter({"v2": counts["v2"]}), "ignore": counts, "v1_only": Counter({"v1": counts["v1"]})}[mode]
    )
    assert ids(sim, "/markets/keyset", [("version", "v2")]) == Counter({"v2": counts["v2"]})


@pytest.mark.parametrize(("mode", "versions"), [("ignore", ("v1",)), ("ignore", ("v2",)), ("honour", ("v1", "v2")),
                                                ("ignore", ("v1", "v2"))])  # fmt: skip
async def test_an_offset_sync_stores_exactly_the_selected_versions_whether_or_not_gamma_honours_version(
    simulator: Any, redis_client: aioredis.Redis, redis_settings: RedisSettings, mode: str, versions: tuple[str, ...]
) -> None:
    sim = simulator(**WORLD, gamma_offset_versions=mode)
    connections = Connections(redis_settings, HTTP, SourceSettings(gamma_api_url=sim.gamma_url),
                              GammaSettings(versions=versions))  # fmt: skip
    await markets_ingester.run(markets_ingester.MarketsSettings(markets_listing="offset", gamma_rate_per_s=30),
                               connections, once=True)  # fmt: skip
    await events_ingester.run(events_ingester.EventsSettings(events_listing="offset", gamma_rate_per_s=30),
                              connections, once=True)  # fmt: skip
    markets = [m for m in sim.world.catalogue.markets if m.listing == "listed" and (m.version or "v1") in versions]
    events = {sim.world.catalogue.events[m.event_index].id for m in markets}
    assert await stream_ids(redis_client, keys.STREAM_MARKETS) == Counter(m.id for m in markets)
    assert await stream_ids(redis_client, keys.STREAM_EVENTS) == Counter(events)
    tokens = {t.decode() for t in await redis_client.hkeys(keys.MARKETS_BY_TOKEN)}
    assert tokens == {t for m in markets for t in m.traded_ids}


async def test_doctor_shows_an_offset_listing_that_serves_no_v2_although_asked(
    simulator: Any, redis_server: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = simulator(**DOCTOR_WORLD, gamma_offset_versions="v1_only")
    point_at(sim, redis_server, monkeypatch)

    assert await run_doctor("--json") == 0

    gamma = next(c for c in orjson.loads(capsys.readouterr().out)["checks"] if c["name"] == "gamma")
    listings = gamma["data"]["listings"]
    assert gamma["data"]["versions"] == ["v1", "v2"]
    assert listings["markets keyset"]["v2_share"] > 0 and listings["events keyset"]["v2_share"] > 0
    assert listings["markets offset"]["v2_share"] == listings["events offset"]["v2_share"] == 0
    assert "markets offset" in gamma["detail"] and "0% version v2" in gamma["detail"]
