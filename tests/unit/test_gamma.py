"""Pure Gamma logic: positions, JSON-string fields, validation, content hashes, page preparation, paging."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from common import keys
from common.config import HttpSettings
from common.errors import PermanentSourceError, PoisonMessage, TransientSourceError
from common.gamma_fields import parse_json_list
from common.http import RateLimiter
from ingesters.gamma import Resource, content_hash, item_key, prepare_page, validate_event
from ingesters.gamma_listing import (
    SYNCED,
    GammaClient,
    Position,
    fetch_page,
    keyset_unavailable,
    sync_state_after,
    synced,
    synced_versions,
)
from ingesters.polymarket_ingester import MARKETS, market_outcome_ids, markets_of, token_index, validate_market

TOKEN_A = "8851848546962572193739008211889046036776198486765606333032192644001246174440"
TOKEN_B = "10181859819235412241349111952383458602722012323104397550162049365057126390549"
BOTH = ("v1", "v2")
POSITIONS = [str((1 << 248) | (0xBEEF << 120) | (2 << 104) | i) for i in range(2)]  # a Binary market's ids


def market(**changes: Any) -> dict[str, Any]:
    data = {
        "id": "1066851",
        "question": 'Bitcoin "Up" or Down?',
        "conditionId": "0x2e6af11e4b853b05ba7135239b21d77e808889b6ce1e735de856c94c4e5b5fce",
        "outcomes": '["Up", "Down"]',
        "outcomePrices": '["0.585", "0.415"]',
        "clobTokenIds": f'["{TOKEN_A}", "{TOKEN_B}"]',
        "volume": "92509.470055",
        "closed": False,
    }
    return data | changes


# --- positions -------------------------------------------------------------------------------------------------


def test_position_round_trips_through_its_readable_text_with_its_versions() -> None:
    for position in (Position("keyset", False), Position("keyset", True, "WzEsIDJd", BOTH),
                     Position("offset", True, "1500", ("v2",))):  # fmt: skip
        assert Position.decode(position.encode()) == position
    assert Position("offset", True, "1500", BOTH).encode() == "offset closed=true versions=v1,v2 after=1500"


def test_a_position_or_synced_state_stored_before_versions_were_named_means_gammas_default_v1() -> None:
    assert Position.decode("offset closed=true after=1500") == Position("offset", True, "1500", ("v1",))
    assert synced_versions(SYNCED) == ("v1",)
    assert synced_versions(synced(BOTH)) == BOTH and synced(BOTH) == "synced versions=v1,v2"
    assert synced_versions("keyset closed=false after=") is None and synced_versions(None) is None


REFUSED = ["", "17", "keyset closed=maybe after=", "offset closed=true after=abc", SYNCED,
           "keyset closed=false versions=v3 after=", "keyset closed=false versions= after="]  # fmt: skip


@pytest.mark.parametrize("text", REFUSED)
def test_position_refuses_text_it_did_not_write(text: str) -> None:
    with pytest.raises(ValueError):
        Position.decode(text)


def test_sync_goes_open_pass_then_closed_pass_then_synced_keeping_the_versions() -> None:
    open_pass = Position("keyset", closed=False, after="c1", versions=BOTH)
    assert sync_state_after(open_pass, "c2") == "keyset closed=false versions=v1,v2 after=c2"
    assert sync_state_after(open_pass, None) == "keyset closed=true versions=v1,v2 after="
    assert sync_state_after(Position("offset", True, "500", BOTH), None) == "synced versions=v1,v2"
    next_page = sync_state_after(Position("offset", True, "500", ("v1",)), "1000")
    assert next_page == "offset closed=true versions=v1 after=1000"


# --- JSON-string fields and validation -------------------------------------------------------------------------


def test_parse_json_list_reads_gamma_encoded_strings_and_real_lists() -> None:
    assert parse_json_list('["Yes", "No"]', "outcomes") == ["Yes", "No"]
    assert parse_json_list(["Yes", "No"], "outcomes") == ["Yes", "No"]
    assert parse_json_list(["1", "2"], "positionIds") == ["1", "2"]  # v2 markets send a native array
    assert parse_json_list(None, "outcomes") == []
    assert parse_json_list("", "outcomes") == []


@pytest.mark.parametrize("value", ["[Yes, No", '{"a": 1}', "0.5", 7, {"a": 1}])
def test_parse_json_list_refuses_anything_else_as_poison_naming_the_field(value: Any) -> None:
    with pytest.raises(PoisonMessage, match="outcomes is not a JSON-encoded list"):
        parse_json_list(value, "outcomes")


def test_a_real_market_is_valid() -> None:
    validate_market(market())
    validate_market(market(id=1066851, clobTokenIds=None, outcomes=None))  # legacy market without tokens


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ([1, 2], "not an object"),
        ({"question": "no id"}, "no id"),
        (market(id=""), "no id"),
        (market(clobTokenIds="8851,1018"), "clobTokenIds is not a JSON-encoded list"),
        (market(clobTokenIds='{"a": 1}'), "clobTokenIds is not a JSON-encoded list"),
        (market(clobTokenIds='[1.5, "x"]'), "decimal strings"),
        (market(outcomes='["Up"]'), "2 clobTokenIds for 1 outcomes"),
        (market(version="v2", positionIds=POSITIONS[:1]), "1 positionIds for 2 outcomes"),
        (market(version="v2", positionIds=[1, 2]), "positionIds holds something other than decimal strings"),
        (market(outcomePrices="0.5"), "outcomePrices"),
        (market(conditionId=7), "conditionId"),
    ],
)
def test_malformed_markets_are_refused_with_a_reason(item: Any, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        validate_market(item)


def test_event_validation_checks_tags_and_markets() -> None:
    validate_event({"id": "31000", "tags": [{"id": "2", "label": "Politics"}], "markets": [{"id": "1"}]})
    validate_event({"id": "31000"})
    with pytest.raises(PoisonMessage, match="tags"):
        validate_event({"id": "31000", "tags": "politics"})
    with pytest.raises(PoisonMessage, match="markets"):
        validate_event({"id": "31000", "markets": [{"question": "no id"}]})


def test_content_hash_ignores_key_order_but_not_values() -> None:
    a = market()
    b = dict(reversed(list(a.items())))
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(market(volume="92510"))
    assert item_key(a) == "1066851" and item_key({"id": 7}) == "7"
    assert item_key("junk").startswith("invalid:")


# --- token map -------------------------------------------------------------------------------------------------


def test_token_index_maps_every_token_to_its_market_and_outcome() -> None:
    index = token_index(market())[keys.MARKETS_BY_TOKEN]
    assert orjson.loads(index[TOKEN_B]) == {
        "market_id": "1066851",
        "condition_id": market()["conditionId"],
        "question": 'Bitcoin "Up" or Down?',
        "outcome": "Down",
        "outcome_index": 1,
    }
    assert orjson.loads(index[TOKEN_A])["outcome_index"] == 0
    assert market_outcome_ids(market(clobTokenIds="garbage")) == [] and market_outcome_ids("junk") == []


@pytest.mark.parametrize("version", ["v1", None])
def test_a_v1_or_unversioned_market_trades_its_clob_token_ids(version: str | None) -> None:
    assert market_outcome_ids(market(version=version, positionIds=POSITIONS)) == [TOKEN_A, TOKEN_B]


def test_a_v2_market_trades_its_position_ids_even_when_it_also_has_clob_token_ids() -> None:
    v2 = market(version="v2", positionIds=POSITIONS)  # clobTokenIds too, with other ids: `version` decides
    validate_market(v2)
    assert market_outcome_ids(v2) == POSITIONS
    index = token_index(v2)[keys.MARKETS_BY_TOKEN]
    assert set(index) == set(POSITIONS) and orjson.loads(index[POSITIONS[1]])["outcome"] == "Down"


def test_lookup_replies_of_both_listings_give_their_markets() -> None:
    assert markets_of([{"id": "1"}]) == [{"id": "1"}] and markets_of({"markets": [{"id": "2"}]}) == [{"id": "2"}]
    assert markets_of({"error": "x"}) == [] and markets_of(None) == []


# --- page preparation ------------------------------------------------------------------------------------------


def test_prepare_page_appends_changed_items_and_dead_letters_malformed_ones() -> None:
    unchanged, changed, new = market(id="1"), market(id="2", volume="5"), market(id="3")
    bad = market(id="4", clobTokenIds="not json")
    known = {"1": content_hash(unchanged), "2": content_hash(market(id="2"))}
    page = prepare_page(MARKETS, [unchanged, changed, new, bad, "junk", new], known)

    assert [orjson.loads(e)["id"] for e in page.entries] == ["2", "3"]
    assert page.entries[0] == orjson.dumps(changed)  # the Gamma object itself, unmodified
    assert page.unchanged == 2  # "1", and "3" repeated within the page
    letters = [orjson.loads(d) for d in page.dead_letters]
    assert [(d["stream"], d["id"], d["deliveries"]) for d in letters] == [("stream:markets", None, 0)] * 2
    assert orjson.loads(letters[0]["payload"]) == bad
    assert "clobTokenIds is not a JSON-encoded list" in letters[0]["error"]
    assert letters[1]["payload"] == '"junk"' and "not an object" in letters[1]["error"]
    hashes = page.hash_items[keys.MARKETS_CONTENT_HASH]
    assert set(hashes) == {"2", "3", "4", item_key("junk")}  # a malformed item is dead-lettered once
    assert set(page.hash_items[keys.MARKETS_BY_TOKEN]) == {TOKEN_A, TOKEN_B}


def test_prepare_page_can_rewrite_the_token_map_of_unchanged_markets() -> None:
    item = market()
    known = {"1066851": content_hash(item)}
    assert keys.MARKETS_BY_TOKEN not in prepare_page(MARKETS, [item], known).hash_items
    page = prepare_page(MARKETS, [item], known, index_unchanged=True)
    assert page.entries == [] and set(page.hash_items[keys.MARKETS_BY_TOKEN]) == {TOKEN_A, TOKEN_B}


def test_events_have_no_token_map() -> None:
    events = Resource("events", keys.STREAM_EVENTS, keys.STATE_POLYMARKET_EVENTS_OFFSET, "h", validate_event)
    page = prepare_page(events, [{"id": "1", "tags": []}], {})
    assert len(page.entries) == 1 and set(page.hash_items) == {"h"}


# --- paging over HTTP ------------------------------------------------------------------------------------------


def test_keyset_unavailable_recognises_the_documented_refusals() -> None:
    assert keyset_unavailable(PermanentSourceError("gamma: HTTP 404 not found", status=404))
    assert keyset_unavailable(PermanentSourceError("gamma: HTTP 501 not implemented", status=501))
    assert not keyset_unavailable(PermanentSourceError("gamma: HTTP 422 offset is not allowed", status=422))
    assert keyset_unavailable(TransientSourceError("gamma: HTTP 503 keyset pagination is not configured", status=503))
    assert not keyset_unavailable(TransientSourceError("gamma: HTTP 503 Service Unavailable", status=503))
    assert not keyset_unavailable(TransientSourceError("gamma: timeout (ReadTimeout)"))


def gamma_client(handler: Any) -> GammaClient:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://gamma")
    return GammaClient(client, HttpSettings(max_attempts=1), RateLimiter(1000))


async def test_keyset_pages_end_only_without_next_cursor() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if request.url.params.get("after_cursor") == "c1":
            return httpx.Response(200, json={"markets": [market(id="3")]})
        return httpx.Response(200, json={"markets": [market(id="1")], "next_cursor": "c1"})  # short but not last

    gamma = gamma_client(handler)
    first = await fetch_page(gamma, "markets", Position("keyset", True), limit=500)
    last = await fetch_page(gamma, "markets", Position("keyset", True, first.next_after or ""), limit=500)
    await gamma.client.aclose()
    assert (first.next_after, last.next_after) == ("c1", None)
    assert seen[0].path == "/markets/keyset" and seen[0].params["closed"] == "true"
    assert "after_cursor" not in seen[0].params and "offset" not in seen[0].params


async def test_offset_pages_end_on_an_empty_page_not_a_short_one() -> None:
    rows = [market(id=str(i)) for i in range(5)]

    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        assert request.url.params["closed"] == "false" and request.url.params["order"] == "id"
        return httpx.Response(200, json=rows[offset : offset + 2])  # the server caps the page at 2 rows

    gamma = gamma_client(handler)
    position, pages = Position("offset", False), 0
    while True:
        page = await fetch_page(gamma, "markets", position, limit=500)
        pages += 1
        if page.next_after is None:
            break
        position = Position("offset", False, page.next_after)
    await gamma.client.aclose()
    assert pages == 4 and position.after == "5"  # rows 0-1, 2-3, 4, then the empty page at 5


async def test_a_reply_of_the_wrong_shape_is_transient() -> None:
    gamma = gamma_client(lambda request: httpx.Response(200, json={"data": []}))
    with pytest.raises(TransientSourceError, match="no 'events' list"):
        await fetch_page(gamma, "events", Position("keyset", False), limit=500)
    await gamma.client.aclose()


@pytest.mark.parametrize(("name", "setting"), [("markets", "MARKETS_LISTING"), ("events", "EVENTS_LISTING")])
async def test_gammas_offset_cap_is_an_error_naming_the_setting_and_the_reason(name: str, setting: str) -> None:
    error = {"error": f"offset too large, use /{name}/keyset for deeper pagination"}
    gamma = gamma_client(lambda request: httpx.Response(422, json=error))
    with pytest.raises(PermanentSourceError) as refused:
        await fetch_page(gamma, name, Position("offset", False, "2000"), limit=100)
    await gamma.client.aclose()
    text = str(refused.value)
    assert error["error"] in text and setting in text and "refused offset 2000" in text and "not complete" in text
    assert refused.value.status == 422
