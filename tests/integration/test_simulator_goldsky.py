"""Goldsky orderbook-subgraph stand-in driven with `gql` (as the ingester does) and raw httpx: schema field
types, `first` limits, Graph filter semantics, the sticky cursor over bursts, and the cutover."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport

from simulator.constants import CUTOVER_TIMESTAMP

FIELDS = (
    "id transactionHash timestamp orderHash maker taker makerAssetId takerAssetId makerAmountFilled "
    "takerAmountFilled fee"
)
EXCHANGES_V1 = {"0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e", "0xc5d563a36ae78145c45a50134d48a1215220f80a"}


@pytest.fixture
def sim(simulator):  # type: ignore[no-untyped-def]
    return simulator(seed=4, markets=30, history_fills=8_000, v2_fills=1_000)


def fills_query(where: str, first: int = 1000, order_by: str = "timestamp", extra: str = "") -> str:
    return (
        f"{{ orderFilledEvents(first: {first}, orderBy: {order_by}, orderDirection: asc, where: {{{where}}}"
        f"{extra}) {{ {FIELDS} }} }}"
    )


def post(sim, query: str, variables: dict[str, object] | None = None) -> dict[str, object]:  # type: ignore[no-untyped-def]
    response = httpx.post(sim.goldsky_url, json={"query": query, "variables": variables or {}})
    assert response.status_code == 200
    return response.json()


async def test_gql_client_reads_fills_with_the_schema_types(sim) -> None:  # type: ignore[no-untyped-def]
    async with Client(transport=HTTPXAsyncTransport(url=sim.goldsky_url)) as session:
        result = await session.execute(GraphQLRequest(fills_query('timestamp_gt: "0"', first=300)))
    rows = result["orderFilledEvents"]
    assert len(rows) == 300
    for row in rows:
        assert all(isinstance(row[f], str) for f in FIELDS.split())  # BigInt as JSON strings, Bytes as hex
        assert row["id"] == f"{row['transactionHash']}_{row['orderHash']}"
        assert len(row["transactionHash"]) == 66 and row["transactionHash"] == row["transactionHash"].lower()
        assert row["maker"].startswith("0x") and len(row["maker"]) == 42
        assert "0" in (row["makerAssetId"], row["takerAssetId"])
        assert int(row["makerAmountFilled"]) > 0 and int(row["fee"]) >= 0
    takers = [r for r in rows if r["taker"] in EXCHANGES_V1]
    assert takers and len(takers) < len(rows)
    keys = [(int(r["timestamp"]), r["id"]) for r in rows]
    assert keys == sorted(keys)  # orderBy timestamp, ties broken by id


async def test_gql_variables_aliases_single_entity_and_meta(sim) -> None:  # type: ignore[no-untyped-def]
    query = """query Page($ts: BigInt!, $n: Int!) {
      page: orderFilledEvents(first: $n, orderBy: timestamp, where: {timestamp_gte: $ts}) { id ts: timestamp }
      _meta { block { number timestamp } }
    }"""
    first_ts = int(sim.world.timestamps(np.array([0]))[0])
    async with Client(transport=HTTPXAsyncTransport(url=sim.goldsky_url)) as session:
        result = await session.execute(GraphQLRequest(query, variable_values={"ts": str(first_ts), "n": 5}))
        fill_id = result["page"][0]["id"]
        single = await session.execute(GraphQLRequest(f'{{ orderFilledEvent(id: "{fill_id}") {{ id fee }} }}'))
        missing = await session.execute(GraphQLRequest('{ orderFilledEvent(id: "0xdead_0xbeef") { id } }'))
    assert len(result["page"]) == 5 and result["page"][0]["ts"] == str(first_ts)
    assert result["_meta"]["block"]["number"] == sim.world.head_block
    assert isinstance(result["_meta"]["block"]["timestamp"], int)
    assert single["orderFilledEvent"]["id"] == fill_id and missing["orderFilledEvent"] is None


async def test_first_above_1000_and_bad_input_are_graph_errors(sim) -> None:  # type: ignore[no-untyped-def]
    async with Client(transport=HTTPXAsyncTransport(url=sim.goldsky_url)) as session:
        with pytest.raises(TransportQueryError, match="between 0 and 1000"):
            await session.execute(GraphQLRequest(fills_query('timestamp_gt: "0"', first=1001)))
    for bad in (
        "{ orderFilledEvents { nope } }",
        "{ orderFilledEvents(where: {bogus_gt: 1}) { id } }",
        "{ orderFilledEvents(first: 1",
        '{ orderFilledEvents(where: {timestamp_gt: "x"}) { id } }',
    ):
        body = post(sim, bad)
        assert set(body) == {"errors"} and isinstance(body["errors"][0]["message"], str)


def test_naive_timestamp_gt_cursor_misses_burst_fills_but_sticky_cursor_gets_all(sim) -> None:  # type: ignore[no-untyped-def]
    truth = sim.truth()
    v1_ids = {f["id"] for f in truth["fills"] if "goldsky" in f["sources"]}
    assert len(v1_ids) == truth["per_source"]["goldsky"] == 7_000

    naive: set[str] = set()
    last_ts = 0
    while True:
        rows = post(sim, fills_query(f'timestamp_gt: "{last_ts}"'))["data"]["orderFilledEvents"]
        if not rows:
            break
        naive |= {r["id"] for r in rows}
        last_ts = int(rows[-1]["timestamp"])
    assert naive < v1_ids and len(v1_ids - naive) > 0  # the burst second's tail is skipped

    sticky: set[str] = set()
    last_ts, last_id = 0, ""
    while True:  # (timestamp, id) cursor: finish the boundary second by id, then move past it
        rows = post(sim, fills_query(f'timestamp: "{last_ts}", id_gt: "{last_id}"'))["data"]["orderFilledEvents"]
        if len(rows) < 1000:
            rows += post(sim, fills_query(f'timestamp_gt: "{last_ts}"', first=1000 - len(rows)))["data"][
                "orderFilledEvents"
            ]
        if not rows:
            break
        sticky |= {r["id"] for r in rows}
        last_ts, last_id = int(rows[-1]["timestamp"]), rows[-1]["id"]
    assert sticky == v1_ids

    one_query: list[str] = []
    last_ts, last_id = 0, ""
    while True:  # the same cursor as one `or` filter (graph-node >= 0.30)
        where = f'or: [{{timestamp_gt: "{last_ts}"}}, {{timestamp: "{last_ts}", id_gt: "{last_id}"}}]'
        rows = post(sim, fills_query(where))["data"]["orderFilledEvents"]
        if not rows:
            break
        one_query += [r["id"] for r in rows]
        last_ts, last_id = int(rows[-1]["timestamp"]), rows[-1]["id"]
    assert len(one_query) == len(v1_ids) and set(one_query) == v1_ids
    mixed = post(sim, fills_query('timestamp_gt: "0", or: [{timestamp: "1"}]'))
    assert "or" in mixed["errors"][0]["message"]


def test_where_filters_follow_graph_semantics(sim) -> None:  # type: ignore[no-untyped-def]
    w = sim.world
    ts = w.timestamps(slice(0, w.v1_count))
    lo, hi = int(ts[100]), int(ts[400])
    for op_lo, op_hi, expected in (("gte", "lte", (ts >= lo) & (ts <= hi)), ("gt", "lt", (ts > lo) & (ts < hi))):
        rows = post(sim, fills_query(f'timestamp_{op_lo}: "{lo}", timestamp_{op_hi}: {hi}'))["data"][
            "orderFilledEvents"
        ]
        assert len(rows) == int(expected.sum())
        assert all(lo <= int(r["timestamp"]) <= hi for r in rows)
    rows = post(sim, fills_query(f'timestamp_in: ["{lo}", "{hi}"]'))["data"]["orderFilledEvents"]
    assert len(rows) == int(((ts == lo) | (ts == hi)).sum())
    by_id = post(sim, fills_query("", first=50, order_by="id"))["data"]["orderFilledEvents"]
    ids = [r["id"] for r in by_id]
    assert ids == sorted(ids)
    after = post(sim, fills_query(f'id_gt: "{ids[9]}"', first=5, order_by="id"))["data"]["orderFilledEvents"]
    assert [r["id"] for r in after] == ids[10:15]
    skipped = post(sim, fills_query("", first=5, order_by="id", extra=", skip: 10"))["data"]["orderFilledEvents"]
    assert [r["id"] for r in skipped] == ids[10:15]
    desc = post(sim, "{ orderFilledEvents(first: 3, orderBy: timestamp, orderDirection: desc) { timestamp id } }")
    last = desc["data"]["orderFilledEvents"]
    assert int(last[0]["timestamp"]) == int(ts.max()) and last[0]["timestamp"] >= last[-1]["timestamp"]
    maker = by_id[0]["maker"]
    mine = post(sim, fills_query(f'maker: "{maker}", timestamp_gte: "0"'))["data"]["orderFilledEvents"]
    assert mine and all(r["maker"] == maker for r in mine)
    assert len(mine) == sum(1 for a in w.address_hex(w.col("maker")[: w.v1_count]) if a == maker)


def test_subgraph_serves_only_fills_before_the_cutover(sim) -> None:  # type: ignore[no-untyped-def]
    rows = post(sim, "{ orderFilledEvents(first: 1, orderBy: timestamp, orderDirection: desc) { timestamp } }")
    assert int(rows["data"]["orderFilledEvents"][0]["timestamp"]) < CUTOVER_TIMESTAMP
    after = post(sim, fills_query(f'timestamp_gte: "{CUTOVER_TIMESTAMP}"'))["data"]["orderFilledEvents"]
    assert after == []
