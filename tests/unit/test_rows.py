"""Stream payloads to ClickHouse rows: Gamma's JSON-encoded strings, its date formats, poison, and the trades that
`order_filled_events` (a view, tests/integration/test_fills_view.py) can give their fill back from."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from msgspec.structs import astuple

from common import keys
from common.clickhouse import load_migrations
from common.errors import PoisonMessage
from common.pages import page
from common.payloads import (
    UINT64_MAX,
    MarketRef,
    OrderEvent,
    decode_order_event,
    decode_trade,
    encode_order_event,
    encode_trade,
    fill_id,
)
from common.position_ids import decode_position_id
from processors.rows import (
    EVENT_COLUMNS,
    MARKET_COLUMNS,
    STREAMS,
    TABLES,
    TRADE_COLUMNS,
    TableSpec,
    check_amount,
    check_trade,
    event_row,
    market_row,
)
from processors.trades import derive_trade

NOW = datetime(2026, 11, 25, tzinfo=UTC)
ORDER_EVENT_COLUMNS = (*OrderEvent.__struct_fields__, "ingested_at")  # the columns of order_filled_events


def order_event_row(data: bytes, ingested_at: datetime) -> tuple[object, ...]:
    """The `order_filled_events` row of a `stream:order_events` entry, straight from its decoded fields, as the table
    held it (tests/integration/test_fills_view.py checks the view against the same rows)."""
    return (*astuple(decode_order_event(data)), ingested_at)


def rows_of(columns: list[list[object]]) -> list[tuple[object, ...]]:
    return list(zip(*columns, strict=True))


(MARKETS_STREAM, _, TRADES_STREAM) = STREAMS


def trade_row(data: bytes) -> tuple[object, ...]:
    """The `trades` row of one `stream:trades` item, through the stream's own conversion."""
    converted = TRADES_STREAM.convert([page([data])], NOW)
    if converted.poison:
        raise PoisonMessage(converted.poison[0][3])
    (row,) = rows_of(converted.columns)
    return row


ADD_COLUMN = r"ALTER TABLE db\.(\w+) ADD COLUMN IF NOT EXISTS (\w+) .*?(?: AFTER (\w+))?$"


def migration_columns() -> dict[str, tuple[str, ...]]:
    """Table -> its column names, in order, as the migrations create them and then add to them (`AFTER`)."""
    tables: dict[str, list[str]] = {}
    for migration in load_migrations(database="db"):
        for statement in migration.statements:
            if found := re.search(r"CREATE TABLE IF NOT EXISTS db\.(\w+)\s*\((.*?)\)\s*ENGINE", statement, re.DOTALL):
                lines = (line.strip() for line in found.group(2).splitlines())
                tables[found.group(1)] = [line.split()[0] for line in lines if line]
            if added := re.search(ADD_COLUMN, statement):
                table, column, after = added.groups()
                columns = tables[table]
                columns.insert(columns.index(after) + 1 if after else len(columns), column)
    return {table: tuple(columns) for table, columns in tables.items()}


@pytest.mark.parametrize("spec", TABLES, ids=lambda spec: spec.table)
def test_row_columns_are_the_columns_of_the_table_in_its_order(spec: TableSpec) -> None:
    assert spec.columns == migration_columns()[spec.table]


# A real Gamma market object (docs/upstream.md §1.3), trimmed to the fields the row uses.
MARKET = {
    "id": "1066851", "question": "Bitcoin Up or Down - December 31, 12:00PM-12:15PM ET",
    "conditionId": "0x2e6af11e4b853b05ba7135239b21d77e808889b6ce1e735de856c94c4e5b5fce",
    "slug": "btc-updown-15m-1767200400", "endDate": "2025-12-31T17:15:00Z", "liquidity": "20579.7452",
    "startDate": "2025-12-30T17:10:15.861305Z", "outcomes": "[\"Up\", \"Down\"]",
    "outcomePrices": "[\"0.585\", \"0.415\"]", "volume": "92509.470055", "active": True, "closed": False,
    "createdAt": "2025-12-30T17:01:49.027357Z", "updatedAt": "2025-12-31T17:07:53.929803Z", "archived": False,
    "clobTokenIds": "[\"8851848546962572193739008211889046036776198486765606333032192644001246174440\", "
                    "\"10181859819235412241349111952383458602722012323104397550162049365057126390549\"]",
    "negRisk": False, "events": [{"id": "26359"}],
}  # fmt: skip


def test_market_row_parses_json_encoded_strings_and_dates() -> None:
    data = orjson.dumps(MARKET)
    row = dict(zip(MARKET_COLUMNS, market_row(data, NOW), strict=True))
    assert row["outcomes"] == ["Up", "Down"]
    assert row["outcome_prices"] == [0.585, 0.415]
    assert row["clob_token_ids"][1].startswith("1018185981923541224")
    assert row["volume"] == 92509.470055 and row["liquidity"] == 20579.7452
    assert row["updated_at"] == datetime(2025, 12, 31, 17, 7, 53, 929803, tzinfo=UTC)
    assert row["event_ids"] == ["26359"]
    assert row["raw"] == data.decode()
    assert row["active"] is True and row["closed"] is False


def test_a_v2_market_row_keeps_its_version_and_native_position_ids() -> None:
    position_id = "452312848583266388373324160190187140051835877600158453279131187530910662657"
    v2 = {**MARKET, "version": "v2", "positionIds": [position_id]}
    row = dict(zip(MARKET_COLUMNS, market_row(orjson.dumps(v2), NOW), strict=True))
    assert row["version"] == "v2" and row["position_ids"] == v2["positionIds"]
    row = dict(zip(MARKET_COLUMNS, market_row(orjson.dumps(MARKET), NOW), strict=True))
    assert row["version"] == "" and row["position_ids"] == []


def test_market_without_updated_at_is_versioned_by_ingest_time() -> None:
    row = dict(zip(MARKET_COLUMNS, market_row(orjson.dumps({"id": "1"}), NOW), strict=True))
    assert row["updated_at"] == NOW and row["outcomes"] == [] and row["start_date"] is None


def test_event_row_keeps_tags_and_market_ids() -> None:
    event = {"id": "26359", "title": "Nationals vs. Mets", "volume": 12.5, "liquidity": 3, "openInterest": 0,
             "updatedAt": "2025-06-09T09:08:23.303814Z", "closedTime": "2025-06-10 23:10:00+00",
             "tags": [{"id": "1", "label": "Sports", "slug": "sports"}, {"id": "2", "label": "MLB", "slug": "mlb"}],
             "markets": [{"id": "550834"}, {"id": "550835"}]}  # fmt: skip
    row = dict(zip(EVENT_COLUMNS, event_row(orjson.dumps(event), NOW), strict=True))
    assert row["tag_labels"] == ["Sports", "MLB"] and row["tag_slugs"] == ["sports", "mlb"]
    assert row["market_ids"] == ["550834", "550835"]
    assert row["volume"] == 12.5 and row["open_interest"] == 0.0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "invalid JSON"),
        (b"[1, 2]", "not an object with an id"),
        (orjson.dumps({"id": "1", "outcomes": "Yes,No"}), "outcomes is not a JSON-encoded list"),
        (orjson.dumps({"id": "1", "volume": "lots"}), "volume is not a number"),
        (orjson.dumps({"id": "1", "endDate": "tomorrow"}), "unparseable date"),
    ],
)
def test_malformed_markets_are_poison_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        market_row(payload, NOW)


def order_event(**overrides: object) -> bytes:
    tx, order = "0x" + "ab" * 32, "0x" + "cd" * 32
    fields = dict(id=fill_id(tx, order), source="goldsky", exchange="", block_number=0, log_index=None, tx_hash=tx,
                  order_hash=order, timestamp=1_700_000_000, maker="0x1", taker="0x2", maker_asset_id="0",
                  taker_asset_id="123", maker_amount=10, taker_amount=20, fee=0)  # fmt: skip
    fields.update(overrides)
    return orjson.dumps(fields)


def test_order_event_row_round_trips() -> None:
    tx, order = "0x" + "ab" * 32, "0x" + "cd" * 32
    event = OrderEvent(id=fill_id(tx, order), source="chain", exchange="0xe1", block_number=5, log_index=3,
                       tx_hash=tx, order_hash=order, timestamp=1, maker="0xa", taker="0xb", maker_asset_id="9",
                       taker_asset_id="0", maker_amount=1, taker_amount=2, fee=3)  # fmt: skip
    row = dict(zip(ORDER_EVENT_COLUMNS, order_event_row(encode_order_event(event), NOW), strict=True))
    assert row["log_index"] == 3 and row["maker_asset_id"] == "9" and row["ingested_at"] == NOW


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"maker_amount": "12x"}, "invalid order event"),
        ({"taker_asset_id": "0"}, "exactly one asset id must be '0'"),
        ({"maker_asset_id": "5", "taker_asset_id": "7"}, "exactly one asset id must be '0'"),
        ({"fee": -1}, "Expected `int` >= 0"),
        ({"taker_asset_id": "12ab"}, "taker_asset_id not 1 to 78 decimal digits"),
        ({"id": "0xwrong"}, "id is not"),
    ],
)
def test_poison_fills_are_rejected_with_a_reason(overrides: dict, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        order_event_row(order_event(**overrides), NOW)


def test_amount_beyond_uint64_is_poison() -> None:
    payload = order_event(maker_amount=123456789).replace(b"123456789", str(2**64).encode())
    with pytest.raises(PoisonMessage, match="maker_amount beyond UInt64"):
        order_event_row(payload, NOW)


def test_fill_with_a_missing_field_is_poison() -> None:
    payload = orjson.loads(order_event())
    del payload["taker_amount"]
    with pytest.raises(PoisonMessage, match="taker_amount"):
        order_event_row(orjson.dumps(payload), NOW)


def test_trade_row_is_the_trade_in_column_order_with_exact_decimal_amounts() -> None:
    event = decode_order_event(order_event(maker_amount=5_850_000, taker_amount=10_000_001, fee=3))
    trade = derive_trade(event, MarketRef(market_id="7", condition_id="0x2e", outcome="Up", outcome_index=0))
    row = dict(zip(TRADE_COLUMNS, trade_row(encode_trade(trade)), strict=True))
    # the exact text clickhouse-connect scales into Decimal(18, 6) (no float, no Decimal round trip here)
    assert row["usd_amount"] == "5.850000" and row["token_amount"] == "10.000001"
    assert Decimal(row["usd_amount"]) == Decimal("5.85") and Decimal(row["token_amount"]) == Decimal("10.000001")
    assert (row["id"], row["market_id"], row["token_id"], row["fee"]) == (event.id, "7", "123", 3)
    assert row["log_index"] is None
    assert row["price"] == trade.price and row["maker_direction"] == "BUY" and row["ingested_at"] == NOW


def test_malformed_trade_is_poison() -> None:
    with pytest.raises(PoisonMessage, match="invalid trade"):
        trade_row(b'{"id": "x"}')


def position_id(rng: random.Random) -> str:
    """A Protocol V2 position id: module, base hash, arity, zero reserved bits, resolution chain, condition and
    outcome index (common/position_ids.py)."""
    value = (rng.randint(1, 3) << 248 | rng.getrandbits(128) << 120 | rng.randint(1, 8) << 104
             | rng.getrandbits(16) << 24 | rng.getrandbits(16) << 8 | rng.randint(0, 7))  # fmt: skip
    assert decode_position_id(value) is not None
    return str(value)


def varied_fills(rng: random.Random, count: int) -> list[OrderEvent]:
    """Fills over the shapes a trade must carry back exactly: both directions, amounts at 0, 1, around a whole
    USDC and at UInt64's maximum, v1 token ids and position ids, log_index None or set, both sources."""
    edges = [0, 1, 999_999, 1_000_000, 1_000_001, UINT64_MAX - 1, UINT64_MAX]
    fills = []
    for n in range(count):
        tx, order = f"0x{rng.getrandbits(256):064x}", f"0x{rng.getrandbits(256):064x}"
        token = position_id(rng) if n % 3 == 0 else str(rng.getrandbits(256) | 1 << 255 if n % 2 else 1 + n)
        maker_buys = n % 2 == 0
        usd, tokens = (rng.choice(edges) if rng.random() < 0.3 else rng.randint(0, 10**14) for _ in range(2))
        fills.append(OrderEvent(
            id=fill_id(tx, order), source=rng.choice(["goldsky", "chain"]), exchange=rng.choice(["", "0xe1"]),
            block_number=rng.choice([0, rng.randint(1, UINT64_MAX)]),
            log_index=rng.choice([None, 0, rng.randint(1, 4000)]),
            tx_hash=tx, order_hash=order, timestamp=rng.randint(0, 2**32), maker=f"0x{rng.getrandbits(160):040x}",
            taker=f"0x{rng.getrandbits(160):040x}", maker_asset_id="0" if maker_buys else token,
            taker_asset_id=token if maker_buys else "0", maker_amount=usd if maker_buys else tokens,
            taker_amount=tokens if maker_buys else usd, fee=rng.choice([0, UINT64_MAX, rng.randint(1, 10**9)]),
        ))  # fmt: skip
    return fills


def varied_trades(rng: random.Random, count: int) -> tuple[list[OrderEvent], list[bytes]]:
    """`varied_fills` and their `stream:trades` entries, half with a market and half without."""
    market = MarketRef(market_id="7", condition_id="0x2e", outcome="Up", outcome_index=1)
    fills = varied_fills(rng, count)
    return fills, [encode_trade(derive_trade(fill, market if fill.timestamp % 2 else None)) for fill in fills]


def test_the_trade_rows_are_the_trades_in_column_order() -> None:
    fills, trades = varied_trades(random.Random(14), 3000)
    assert {(f.maker_asset_id == "0", f.log_index is None) for f in fills} == {(a, b) for a in (0, 1) for b in (0, 1)}
    converted = TRADES_STREAM.convert([page(trades[:1000]), page(trades[1000:])], NOW)
    assert converted.entry_rows == [1000, 2000] and converted.poison == []
    assert rows_of(converted.columns) == [(*astuple(decode_trade(data)), NOW) for data in trades]


def test_poison_trades_are_named_by_their_entry_and_item_and_their_page_mates_converted() -> None:
    good = [encode_trade(derive_trade(event, None)) for event in varied_fills(random.Random(3), 4)]
    wrong_direction = good[1].replace(b'"maker_direction":"', b'"maker_direction":"x')
    entries = [b"[not json", page([good[0], wrong_direction, *good[2:], b'{"id":"x"}']), good[1]]
    converted = TRADES_STREAM.convert(entries, NOW)
    assert converted.entry_rows == [0, 3, 1] and [list(kept) for kept in converted.kept] == [[], [0, 2, 3], [0]]
    assert [(index, item, reason.split(":")[0]) for index, item, _, reason in converted.poison] == [
        (0, None, "invalid JSON page"), (1, 1, f"trade {decode_trade(good[1]).id}"), (1, 4, "invalid trade")
    ]  # fmt: skip
    assert converted.poison[1][2] == wrong_direction and converted.poison[2][2] == b'{"id":"x"}'
    expected = [(*astuple(decode_trade(data)), NOW) for data in (good[0], *good[2:], good[1])]
    assert rows_of(converted.columns) == expected
    assert [converted.origin(row) for row in range(4)] == [(1, 0), (1, 2), (1, 3), (2, 0)]
    assert converted.row_ids(["1-0", "2-0", "3-0"]) == ["2-0", "2-0", "2-0", "3-0"]


def test_a_batch_of_poison_only_gives_empty_columns_of_the_table() -> None:
    converted = TRADES_STREAM.convert([b"[{}]"], NOW)
    assert converted.entry_rows == [0] and len(converted.poison) == 1
    assert converted.columns == [[] for _ in TRADES_STREAM.table.columns]
    markets = MARKETS_STREAM.convert([b"[[]]"], NOW)
    assert markets.columns == [[] for _ in MARKET_COLUMNS]
    assert markets.poison == [(0, 0, b"[]", "not an object with an id")]


def test_gamma_streams_give_their_rows_as_columns_and_name_their_poison() -> None:
    items = [orjson.dumps(MARKET), b'"not an object"', orjson.dumps({**MARKET, "id": "2"})]
    converted = MARKETS_STREAM.convert([page(items), items[0]], NOW)  # a page, and an entry from before pages
    assert [list(kept) for kept in converted.kept] == [[0, 2], [0]]
    assert [(index, item) for index, item, _, _ in converted.poison] == [(0, 1)]
    expected = [market_row(items[0], NOW), market_row(items[2], NOW), market_row(items[0], NOW)]
    assert rows_of(converted.columns) == expected


def test_the_trades_stream_fills_trades_alone() -> None:
    (spec,) = [spec for spec in STREAMS if spec.stream == keys.STREAM_TRADES]
    assert spec.table.table == "trades"  # order_filled_events is a view over it
    assert {stream.stream for stream in STREAMS} == {keys.STREAM_MARKETS, keys.STREAM_EVENTS, keys.STREAM_TRADES}


@pytest.mark.parametrize("amount", ["0.000000", "1.500000", "18446744073709.551615"])
def test_exact_6_decimal_text_is_an_amount(amount: str) -> None:
    check_amount(amount)


@pytest.mark.parametrize(
    "amount",
    [
        "1.5",
        ".000000",
        "-1.000000",
        "1_0.000000",
        "1.50000x",
        " 1.000000",
        "",
        "١.000000",
        "1.2.000000",
        "1.000000.000000",
        "0.0000015",
    ],
)
def test_amount_text_that_is_not_6_decimals_is_poison(amount: str) -> None:
    with pytest.raises(PoisonMessage, match="not a decimal with 6 decimals"):
        check_amount(amount)


def test_a_trade_whose_fill_the_view_cannot_give_back_is_poison() -> None:
    event = decode_order_event(order_event())
    trade = derive_trade(event, None)
    with pytest.raises(PoisonMessage, match="neither BUY nor SELL"):
        check_trade(decode_trade(encode_trade(trade).replace(b'"maker_direction":"BUY"', b'"maker_direction":"buy"')))
    with pytest.raises(PoisonMessage, match="not a decimal with 6 decimals"):
        trade_row(encode_trade(trade).replace(b'"usd_amount":"0.000010"', b'"usd_amount":"0.00001"'))
