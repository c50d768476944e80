"""The sticky (timestamp, id) cursor, page planning, fill normalization and GraphQL error classification."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from common.errors import PermanentSourceError, PoisonMessage, TransientSourceError
from common.payloads import decode_dead_letter, decode_order_event, fill_id
from ingesters.backfill import split_range
from ingesters.fetch_ahead import FetchAhead
from ingesters.goldsky_pages import (
    Cursor,
    build_request,
    build_where,
    decode_reply,
    extract_rows,
    graphql_error,
    is_second_complete,
    normalize_fill,
    normalize_rows,
    parse_cursor,
    plan_page,
    start_cursor,
)


def make_row(ts: int, n: int) -> dict[str, Any]:
    tx, order = f"0x{n:064x}", f"0x{(n * 7919) % 2**64:064x}"
    return {
        "id": fill_id(tx, order),
        "transactionHash": tx,
        "timestamp": str(ts),
        "orderHash": order,
        "maker": "0x" + "ab" * 20,
        "taker": "0x" + "CD" * 20,
        "makerAssetId": "0",
        "takerAssetId": "123456789",
        "makerAmountFilled": "5000000",
        "takerAmountFilled": "10000000",
        "fee": "0",
    }


def serve(rows: list[dict[str, Any]], where: dict[str, str], first: int) -> list[dict[str, Any]]:
    """A tiny subgraph: the where operators the pager uses, ordered by (timestamp, id), `first` rows."""

    def keep(row: dict[str, Any]) -> bool:
        ts, rid = int(row["timestamp"]), row["id"]
        checks = {
            "timestamp": lambda v: ts == int(v),
            "timestamp_gt": lambda v: ts > int(v),
            "timestamp_lte": lambda v: ts <= int(v),
            "id_gt": lambda v: rid > v,
        }
        return all(checks[key](value) for key, value in where.items())

    selected = sorted((r for r in rows if keep(r)), key=lambda r: (int(r["timestamp"]), r["id"]))
    return selected[:first]


def walk(rows: list[dict[str, Any]], first_ts: int, last_ts: int | None, page_size: int) -> tuple[list[str], int]:
    """Page a range to the end the way the ingester does; returns the written ids and the request count."""
    cursor, complete, written, requests = start_cursor(first_ts), None, [], 0
    while True:
        second_complete = is_second_complete(cursor, first_ts, complete)
        where = build_where(cursor, second_complete=second_complete, last_ts=last_ts)
        page = plan_page(
            serve(rows, where, page_size), cursor=cursor, second_complete=second_complete, page_size=page_size
        )
        requests += 1
        assert page.cursor.key() >= cursor.key(), "the cursor never moves back"
        written += [r["id"] for r in page.rows]
        cursor, complete = page.cursor, (page.cursor if page.second_complete else None)
        if page.exhausted:
            return written, requests


def bursty_rows(seed: int, page_size: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows, n = [], 0
    for ts in range(1000, 1060):
        count = rng.choice([0, 0, 1, 3, page_size - 1, page_size, page_size + 1, 2 * page_size + 3, 5])
        for _ in range(count):
            n += 1
            rows.append(make_row(ts, n))
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_walk_returns_every_fill_once_for_any_burst_size(seed: int) -> None:
    rows = bursty_rows(seed, page_size=10)
    written, _ = walk(rows, 1000, None, page_size=10)
    assert sorted(written) == sorted(r["id"] for r in rows)
    assert len(written) == len(set(written))


def test_plain_timestamp_gt_paging_would_skip_a_burst() -> None:
    # Given a burst larger than a page, When paging with timestamp_gt only, Then fills are lost (the bug we avoid).
    rows = [make_row(1000, n) for n in range(25)] + [make_row(1001, 100)]
    page = serve(rows, {"timestamp_gt": "999"}, 10)
    next_page = serve(rows, {"timestamp_gt": page[-1]["timestamp"]}, 10)
    assert len(page) + len(next_page) < len(rows)
    written, _ = walk(rows, 1000, None, page_size=10)
    assert len(written) == len(rows)


@pytest.mark.parametrize("parts", [1, 2, 4, 7])
def test_split_ranges_walked_separately_give_the_same_set(parts: int) -> None:
    rows = bursty_rows(42, page_size=10)
    ranges = split_range(1000, 1059, parts)
    written = [fid for first, last in ranges for fid in walk(rows, first, last, page_size=10)[0]]
    assert sorted(written) == sorted(r["id"] for r in rows)


def test_walk_resumes_from_any_stored_cursor_without_gap_or_duplicate() -> None:
    rows = bursty_rows(7, page_size=10)
    everything = sorted((int(r["timestamp"]), r["id"]) for r in rows)
    for ts, rid in everything[::37]:
        # A restart knows only the stored (T, ID): the first query is sticky on T.
        cursor = parse_cursor(str(ts), rid, 1000)
        assert not is_second_complete(cursor, 1000, None)
        rest = [r for r in rows if (int(r["timestamp"]), r["id"]) > (ts, rid)]
        written, _ = walk_from(rows, cursor, 1000)
        assert sorted(written) == sorted(r["id"] for r in rest)


def walk_from(rows: list[dict[str, Any]], cursor: Cursor, first_ts: int) -> tuple[list[str], int]:
    complete, written, requests = None, [], 0
    while True:
        second_complete = is_second_complete(cursor, first_ts, complete)
        where = build_where(cursor, second_complete=second_complete, last_ts=None)
        page = plan_page(serve(rows, where, 10), cursor=cursor, second_complete=second_complete, page_size=10)
        requests += 1
        written += [r["id"] for r in page.rows]
        cursor, complete = page.cursor, (page.cursor if page.second_complete else None)
        if page.exhausted:
            return written, requests


def test_one_request_per_page_outside_bursts() -> None:
    rows = [make_row(1000 + i // 3, i) for i in range(300)]  # 3 fills per second, no burst
    written, requests = walk(rows, 1000, None, page_size=100)
    assert len(written) == 300
    assert requests <= 5  # ~300 / (100 - 3) pages plus the final short page


def test_full_page_spanning_seconds_drops_the_last_second() -> None:
    rows = [make_row(1000, 1), make_row(1000, 2), make_row(1001, 3), make_row(1001, 4)]
    page = plan_page(rows, cursor=Cursor(999, ""), second_complete=True, page_size=4)
    assert [r["timestamp"] for r in page.rows] == ["1000", "1000"]
    assert page.cursor == Cursor(1000, max(rows[0]["id"], rows[1]["id"]))
    assert page.second_complete and not page.exhausted


def test_full_page_inside_one_second_goes_sticky() -> None:
    rows = [make_row(1001, n) for n in range(4)]
    page = plan_page(rows, cursor=Cursor(1000, ""), second_complete=True, page_size=4)
    assert len(page.rows) == 4 and not page.second_complete and not page.exhausted
    where = build_where(page.cursor, second_complete=False, last_ts=2000)
    assert where == {"timestamp": "1001", "id_gt": max(r["id"] for r in rows)}


def test_request_body_carries_bounds_as_bigint_strings() -> None:
    body = build_request(Cursor(99, ""), second_complete=True, last_ts=200, page_size=1000)
    assert body["variables"] == {"first": 1000, "where": {"timestamp_gt": "99", "timestamp_lte": "200"}}
    assert "orderBy: timestamp" in body["query"]
    assert parse_cursor(None, None, 100) == Cursor(99, "")


def test_normalize_fill_maps_every_field() -> None:
    raw = make_row(1700000000, 5)
    event = normalize_fill(raw)
    assert event.id == raw["id"] and event.source == "goldsky" and event.exchange == ""
    assert event.block_number == 0 and event.log_index is None
    assert event.taker == "0x" + "cd" * 20
    assert (event.maker_amount, event.taker_amount, event.fee, event.timestamp) == (5000000, 10000000, 0, 1700000000)
    assert (event.maker_asset_id, event.taker_asset_id) == ("0", "123456789")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"fee": None}, "fee"),
        ({"makerAmountFilled": "12.5"}, "invalid literal"),
        ({"takerAssetId": "0"}, "exactly one asset id"),
        ({"id": "0xdead_0xbeef"}, "id is not"),
        ({"makerAmountFilled": str(2**70)}, "maker_amount"),
    ],
)
def test_malformed_fill_is_poison_with_a_reason(change: dict[str, Any], reason: str) -> None:
    raw = make_row(1700000000, 9)
    for key, value in change.items():
        if value is None:
            del raw[key]
        else:
            raw[key] = value
    with pytest.raises(PoisonMessage, match=reason):
        normalize_fill(raw)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Sorry, you've surpassed your query allowance. Please try again - limits reset every 10 seconds.", "t"),
        ("subgraph is still indexing", "t"),
        ("Query timed out", "t"),
        ("bad indexers: BadResponse(...)", "t"),
        ('Field "foo" is not defined by type "OrderFilledEvent_filter".', "p"),
        ("The `first` argument must be between 0 and 1000, but is 5000", "p"),
    ],
)
def test_graphql_errors_are_classified(message: str, kind: str) -> None:
    error = graphql_error([{"message": message}])
    assert isinstance(error, TransientSourceError if kind == "t" else PermanentSourceError)
    with pytest.raises(type(error)):
        extract_rows({"errors": [{"message": message}], "data": None})


def test_allowance_error_asks_for_the_published_reset_window() -> None:
    error = graphql_error([{"message": "you've surpassed your query allowance"}])
    assert isinstance(error, TransientSourceError) and error.retry_after_s == 10.0


def test_split_range_is_adjacent_and_covering() -> None:
    assert split_range(0, 9, 3) == [(0, 2), (3, 5), (6, 9)]
    assert split_range(5, 6, 4) == [(5, 5), (6, 6)]
    with pytest.raises(ValueError):
        split_range(3, 2, 1)


async def test_fetch_ahead_answers_only_the_request_it_was_made_for() -> None:
    calls: list[int] = []

    async def fetch(request: int) -> int:
        calls.append(request)
        return request * 10

    ahead = FetchAhead(fetch)
    ahead.start(1)
    assert await ahead.get(1) == 10 and calls == [1]  # used
    ahead.start(2)
    assert await ahead.get(3) == 30  # a different request: the early one is dropped, a fresh one made
    assert calls[-1] == 3
    ahead.start(4)
    ahead.close()
    assert await ahead.get(4) == 40


def reply_rows(rows: list[dict[str, Any]]) -> list[Any]:
    return extract_rows(decode_reply(orjson.dumps({"data": {"orderFilledEvents": rows}})))


def test_a_reply_of_the_subgraph_shape_gives_the_same_events_typed_as_from_plain_json() -> None:
    rows = [make_row(1700000000 + n // 3, n) for n in range(9)]
    typed = reply_rows(rows)
    assert not any(isinstance(row, dict) for row in typed)
    assert normalize_rows(typed) == normalize_rows(rows)
    page = plan_page(typed, cursor=Cursor(1699999999, ""), second_complete=True, page_size=9)
    plain = plan_page(rows, cursor=Cursor(1699999999, ""), second_complete=True, page_size=9)
    assert page.cursor == plain.cursor and len(page.rows) == len(plain.rows) == 6
    assert [decode_order_event(e).id for e in normalize_rows(page.rows)[0]] == [r["id"] for r in plain.rows]


def test_an_item_of_another_shape_sends_the_reply_to_plain_json_and_only_that_item_to_the_dlq() -> None:
    rows = [make_row(1700000000, n) for n in range(4)]
    del rows[1]["fee"]
    rows[2]["makerAmountFilled"] = 5000000  # a number, not the subgraph's BigInt string: still read
    parsed = reply_rows(rows)
    assert all(isinstance(row, dict) for row in parsed)
    entries, dead = normalize_rows(parsed)
    assert len(entries) == 3 and len(dead) == 1
    letter = decode_dead_letter(dead[0])
    assert "missing field fee" in letter.error and orjson.loads(letter.payload) == rows[1]


def test_a_typed_item_that_fails_validation_is_dead_lettered_as_the_subgraph_sent_it() -> None:
    rows = [make_row(1700000000, n) for n in range(3)]
    rows[1]["takerAssetId"] = "0"  # both legs USDC
    rows[2]["fee"] = "-1"
    typed = reply_rows(rows)
    assert not any(isinstance(row, dict) for row in typed)
    entries, dead = normalize_rows(typed)
    assert len(entries) == 1 and len(dead) == 2
    letters = [decode_dead_letter(letter) for letter in dead]
    assert [orjson.loads(letter.payload) for letter in letters] == rows[1:]
    assert "exactly one asset id" in letters[0].error and "fee" in letters[1].error


def test_graphql_errors_and_a_reply_without_data_raise_from_a_typed_reply_too() -> None:
    with pytest.raises(TransientSourceError, match="indexing"):
        extract_rows(decode_reply(b'{"errors": [{"message": "subgraph is still indexing"}], "data": null}'))
    with pytest.raises(TransientSourceError, match="without data"):
        extract_rows(decode_reply(b'{"data": null}'))
    with pytest.raises(ValueError):
        decode_reply(b'{"data": {"orderFilledEvents": [{"id": "0x')
