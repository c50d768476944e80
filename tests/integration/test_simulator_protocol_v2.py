"""Today's Polymarket over HTTP: Gamma's offset cap and keyset rules (docs/upstream.md §1.2) on a 2,700-market world,
the `position_ids` filter, ExchangeV3 logs that decode with eth-abi to the truth's position ids, a live fill of a
V2 market listed later, and the switches a `pipeline doctor` probes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from eth_abi import decode

from simulator.constants import EXCHANGE_ADDRESSES, EXCHANGE_V3_START_BLOCK
from tests.fixtures.helpers import wait_until
from tests.integration.test_simulator_rpc import V1_TOPIC, V2_DATA, V2_TOPIC, rpc

EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"
BOTH = {"version": ["v1", "v2"]}  # Gamma serves v1 items only to a request naming no version
V2_WORLD = dict(seed=17, markets=120, history_fills=9_000, v2_fills=4_000, v2_market_share=0.3, combo_share=0.05)


def keyset_rows(client: httpx.Client, url: str, name: str, params: dict[str, Any]) -> tuple[list[dict], int]:
    rows: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        body = client.get(url, params={**params, **({"after_cursor": cursor} if cursor else {})}).json()
        rows, pages, cursor = rows + body[name], pages + 1, body.get("next_cursor")
        if cursor is None:
            return rows, pages


def test_a_2700_market_world_syncs_by_keyset_while_offset_stops_at_2000(simulator) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    sim = simulator(seed=4, markets=2_700, history_fills=3_000, late_listing_delay_s=3600)
    assert time.monotonic() - started < 10
    listed = [m for m in sim.world.catalogue.markets if m.listing == "listed"]
    with httpx.Client(base_url=sim.gamma_url) as client:
        markets: list[dict[str, Any]] = []
        for closed in ("false", "true"):
            rows, pages = keyset_rows(client, "/markets/keyset", "markets", {"limit": 500, "closed": closed, **BOTH})
            assert pages >= len(rows) // 100 and all(r["closed"] == (closed == "true") for r in rows)
            markets += rows
        assert sorted(m["id"] for m in markets) == sorted(m.id for m in listed) and len(listed) > 2_500
        events, _ = keyset_rows(client, "/events/keyset", "events", {"limit": 500, **BOTH})
        first = client.get("/events/keyset", params={"limit": 500, **BOTH}).json()
        assert len(first["events"]) == 500 and len(events) > 500  # events pages hold up to 500
        assert len(client.get("/markets/keyset", params={"limit": 500}).json()["markets"]) == 100

        open_count = sum(1 for m in listed if not m.closed)
        offset_page = client.get("/markets", params={"offset": 1_500, "limit": 1000, **BOTH}).json()
        assert len(offset_page) == open_count - 1_500
        assert client.get("/markets", params={"offset": 2_000, "closed": "true"}).status_code == 200
        for name in ("markets", "events"):
            capped = client.get(f"/{name}", params={"offset": 2_001})
            assert capped.status_code == 422
            assert capped.json() == {"error": f"offset too large, use /{name}/keyset for deeper pagination"}


def test_keyset_ignores_cursor_rejects_offset_and_omits_next_cursor_on_the_last_page(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(seed=4, markets=250, history_fills=2_000, gamma_offset_cap=None)
    with httpx.Client(base_url=sim.gamma_url) as client:
        first = client.get("/markets/keyset", params={"limit": 100}).json()
        again = client.get("/markets/keyset", params={"limit": 100, "cursor": first["next_cursor"]}).json()
        assert again == first  # `cursor=` is not `after_cursor=`: page 1 forever
        for name in ("markets", "events"):
            rejected = client.get(f"/{name}/keyset", params={"offset": 0})
            assert (
                rejected.status_code == 422 and rejected.json()["error"] == "offset is not allowed on keyset endpoints"
            )
        closed_rows, _ = keyset_rows(client, "/markets/keyset", "markets", {"limit": 7, "closed": "true"})
        assert closed_rows and all(r["closed"] for r in closed_rows)  # the filter is re-applied on every page
        last = client.get("/markets/keyset", params={"limit": len(closed_rows) + 1, "closed": "true"}).json()
        assert "next_cursor" not in last and len(last["markets"]) == len(closed_rows)
        assert client.get("/markets", params={"offset": 5_000}).json() == []  # no cap configured


def test_position_ids_filter_finds_v2_markets_by_their_position_ids_only(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(**V2_WORLD)
    markets = sim.world.catalogue.markets
    v2 = [m for m in markets if m.version == "v2" and m.listing == "listed"]
    both = next(m for m in v2 if m.shows_clob_token_ids)
    only = next(m for m in v2 if not m.shows_clob_token_ids)
    v1 = next(m for m in markets if m.version != "v2" and m.listing == "listed")

    def ids(
        path: str, params: list[tuple[str, str]], market: Any, versions: tuple[str, ...] = ("v1", "v2")
    ) -> list[str]:
        query = [*params, ("closed", str(market.closed).lower()), *(("version", v) for v in versions)]
        body = httpx.get(f"{sim.gamma_url}{path}", params=query).json()
        return sorted(m["id"] for m in (body["markets"] if isinstance(body, dict) else body))

    for market in (both, only):
        wanted = [("position_ids", market.position_ids[1])]
        assert ids("/markets/keyset", wanted, market) == [market.id]
        assert ids("/markets/keyset", wanted, market, ("v2",)) == [market.id]
        assert ids("/markets/keyset", wanted, market, ()) == []  # Gamma's default hides every V2 market
        row = httpx.get(f"{sim.gamma_url}/markets/{market.id}").json()
        assert row["version"] == "v2" and row["positionIds"] == list(market.position_ids)
        assert ids("/markets", [("clob_token_ids", market.position_ids[0])], market) == []
    pair = [next(m for m in v2 if m.closed == only.closed and m.id != only.id), only]
    comma = [("position_ids", f"{pair[0].position_ids[0]},{pair[1].position_ids[1]}")]
    assert ids("/markets/keyset", comma, only) == sorted(m.id for m in pair)
    repeated = [("position_ids", pair[0].position_ids[0]), ("position_ids", pair[1].position_ids[0])]
    assert ids("/markets/keyset", repeated, only) == sorted(m.id for m in pair)
    assert ids("/markets", [("clob_token_ids", both.token_ids[0])], both) == [both.id]  # both id fields shown
    assert ids("/markets/keyset", [("position_ids", v1.token_ids[0])], v1) == []  # v1 ids are not position ids
    combos = sim.truth(fills=False)["combo_position_ids"]
    for closed in ("true", "false"):
        response = httpx.get(f"{sim.gamma_url}/markets/keyset", params={"position_ids": combos[0], "closed": closed})
        assert response.json()["markets"] == []  # no Gamma market owns a Combo position


def test_exchange_v3_logs_decode_to_the_truths_position_ids(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(**V2_WORLD)
    truth = {f["id"]: f for f in sim.truth()["fills"]}
    finalized = int(rpc(sim.rpc_url, "eth_getBlockByNumber", "finalized", False)["number"], 16)
    logs: list[dict[str, Any]] = []
    for start in range(EXCHANGE_V3_START_BLOCK - 50, finalized + 1, 2000):
        span = {"fromBlock": hex(start), "toBlock": hex(min(start + 1999, finalized))}
        logs += rpc(sim.rpc_url, "eth_getLogs", {**span, "address": EXCHANGE_V3, "topics": [[V1_TOPIC, V2_TOPIC]]})
    assert logs and all(log["address"] == EXCHANGE_V3.lower() and log["topics"][0] == V2_TOPIC for log in logs)
    assert min(int(log["blockNumber"], 16) for log in logs) >= EXCHANGE_V3_START_BLOCK
    modules = set()
    for log in logs:
        side, token, maker_amount, taker_amount, fee, _builder, _metadata = decode(
            V2_DATA, bytes.fromhex(log["data"][2:])
        )
        fill = truth[f"{log['transactionHash']}_{log['topics'][1]}"]
        assert fill["family"] == "v3" and fill["token_id"] == str(token)
        assert (fill["maker_asset_id"] == "0") == (side == 0)
        assert (fill["maker_amount"], fill["taker_amount"], fill["fee"]) == (maker_amount, taker_amount, fee)
        assert (token >> 40) & ((1 << 64) - 1) == 0 and fill["outcome_index"] == token & 0xFF
        modules.add(token >> 248)
        assert (fill["market_id"] == "") == (token >> 248 == 3)  # Combos: no Gamma market
    assert modules == {1, 2, 3}
    v3_rows = [f for f in truth.values() if f["family"] == "v3" and f["block_number"] <= finalized]
    assert len(v3_rows) == len(logs)
    taker_rows = [log for log in logs if log["topics"][3] == "0x" + "0" * 24 + EXCHANGE_V3.lower()[2:]]
    assert taker_rows and all(truth[f"{r['transactionHash']}_{r['topics'][1]}"]["is_taker_side"] for r in taker_rows)


def test_doctor_switches_turn_off_keyset_the_finalized_tag_and_exchange_v3_logs(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(**V2_WORLD)
    span = {"fromBlock": hex(EXCHANGE_V3_START_BLOCK), "toBlock": hex(EXCHANGE_V3_START_BLOCK + 1999)}
    every_log = rpc(sim.rpc_url, "eth_getLogs", span)
    assert any(log["address"] == EXCHANGE_V3.lower() for log in every_log)

    sim.set_switches(keyset_off=True, finalized_tag_off=True, exchange_v3_logs_off=True)
    for name in ("markets", "events"):
        off = httpx.get(f"{sim.gamma_url}/{name}/keyset", params={"limit": 5})
        assert off.status_code == 503 and off.json() == {"error": "keyset pagination is not configured"}
    assert httpx.get(f"{sim.gamma_url}/markets", params={"limit": 5}).status_code == 200
    for tag in ("finalized", "safe"):
        with pytest.raises(RuntimeError) as no_tag:
            rpc(sim.rpc_url, "eth_getBlockByNumber", tag, False)
        assert no_tag.value.args[0]["code"] == -32602
    assert rpc(sim.rpc_url, "eth_getBlockByNumber", "latest", False)["number"] == hex(sim.world.head_block)
    without_v3 = rpc(sim.rpc_url, "eth_getLogs", span)
    assert without_v3 == [log for log in every_log if log["address"] != EXCHANGE_V3.lower()]
    assert rpc(sim.rpc_url, "eth_getLogs", {**span, "address": EXCHANGE_V3}) == []
    assert sim.config()["config"]["faults"]["keyset_off"] is True

    sim.set_switches(keyset_off=False, finalized_tag_off=False, exchange_v3_logs_off=False)
    assert httpx.get(f"{sim.gamma_url}/markets/keyset").status_code == 200
    assert rpc(sim.rpc_url, "eth_getBlockByNumber", "finalized", False) is not None
    assert rpc(sim.rpc_url, "eth_getLogs", span) == every_log


def test_range_too_large_names_the_largest_accepted_span(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(seed=4, markets=20, history_fills=6_000, max_block_range=750)
    start = sim.world.first_block
    assert isinstance(rpc(sim.rpc_url, "eth_getLogs", {"fromBlock": hex(start), "toBlock": hex(start + 749)}), list)
    with pytest.raises(RuntimeError) as too_wide:
        rpc(sim.rpc_url, "eth_getLogs", {"fromBlock": hex(start), "toBlock": hex(start + 750)})
    assert too_wide.value.args[0] == {"code": -32005, "message": "block range is too large (max 750 blocks)"}


def test_a_live_exchange_v3_fill_precedes_the_listing_of_its_v2_market(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(**{**V2_WORLD, "live_block_interval_s": 0.05, "late_listing_delay_s": 6.0})
    history = sim.truth(fills=False)
    late_v2 = set(history["late_market_ids"]) & set(history["v2_market_ids"])
    assert late_v2
    sim.set_rate(1_000)

    def live_late_v2_fill() -> dict[str, Any] | None:
        count = sim.truth(fills=False)["count"]
        fills = sim.truth(offset=history["count"], limit=count - history["count"])["fills"]
        return next((f for f in fills if f["market_id"] in late_v2), None)

    fill = wait_until(live_late_v2_fill, "a live fill of the late V2 market", timeout_s=5.0)
    sim.set_rate(0)
    assert fill["family"] == "v3" and fill["first_visible_at"] < history["started_at"] + 6.0
    market = next(m for m in sim.world.catalogue.markets if m.id == fill["market_id"])
    lookup = {"position_ids": fill["token_id"], "closed": str(market.closed).lower(), "version": "v2"}
    if sim.truth(fills=False)["late_listed_at"] is None:
        assert httpx.get(f"{sim.gamma_url}/markets/keyset", params=lookup).json()["markets"] == []
    wait_until(lambda: sim.truth(fills=False)["late_listed_at"], "the late market listed", timeout_s=10.0)
    rows = httpx.get(f"{sim.gamma_url}/markets/keyset", params=lookup).json()["markets"]
    assert [r["id"] for r in rows] == [fill["market_id"]]
    assert rows[0]["positionIds"][fill["outcome_index"]] == fill["token_id"]
    assert EXCHANGE_ADDRESSES[4] == EXCHANGE_V3.lower()
