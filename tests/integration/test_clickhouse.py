"""common.clickhouse against the embedded ClickHouse: migrations, dedup tokens, rejected rows."""

from __future__ import annotations

import gc
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from common.clickhouse import (
    apply_migrations,
    batch_token,
    describe_columns,
    insert_batch,
    insert_columns,
    insert_columns_isolating_rejects,
    make_client,
    wire_columns,
)
from common.config import ClickHouseSettings
from common.errors import TransientSinkError
from tests.fixtures.clickhouse_server import REPO_ROOT


@pytest.fixture
def ch(ch_settings):
    apply_migrations(ch_settings)
    client = make_client(ch_settings)
    yield client
    client.close()


def test_migrations_create_the_contract_tables_once(ch_settings, ch) -> None:
    db = ch_settings.database  # a database of its own (the shared fixture drops it)
    tables = {row[0] for row in ch.query(f"SHOW TABLES FROM {db}").result_rows}
    assert {"markets", "events", "order_filled_events", "trades", "schema_migrations"} <= tables
    assert apply_migrations(ch_settings) == []  # second start: nothing to do
    versions = ch.query(f"SELECT version, name FROM {db}.schema_migrations ORDER BY version").result_rows
    assert versions == [(1, "tables"), (2, "views"), (3, "market_versions"), (4, "unique_keys"), (5, "gamma_2026_12"),
                        (6, "unresolved_index"), (7, "fills_view")]  # fmt: skip
    engine = ch.query(f"SELECT engine_full FROM system.tables WHERE database='{db}' AND name='trades'").result_rows
    assert "ReplacingMergeTree" in engine[0][0] and "non_replicated_deduplication_window = 10000" in engine[0][0]


def test_markets_written_without_the_v2_columns_read_as_v1_with_no_position_ids(ch) -> None:
    # a writer from before migration 003 names only the old columns
    ch.insert("markets", [["7", "q", 1_777_000_000, "{}", 1_777_000_000_000]],
              column_names=["id", "question", "updated_at", "raw", "ingested_at"])  # fmt: skip
    assert ch.query("SELECT version, position_ids FROM markets WHERE id = '7'").result_rows == [("", [])]


async def test_resent_batch_with_same_token_adds_no_rows(ch) -> None:
    types = describe_columns(ch, "trades")
    data = trade_columns(["1.500000"] * 1000, datetime.now(UTC))
    column_types = [types[c] for c in TRADE_COLUMNS]
    token = batch_token("stream:trades", [f"1-{i}" for i in range(1000)])

    await insert_batch(ch, "trades", TRADE_COLUMNS, data, token, column_types=column_types)
    await insert_batch(ch, "trades", TRADE_COLUMNS, data, token, column_types=column_types)
    assert ch.command("SELECT count() FROM trades") == 1000

    # the same rows under another token are a different batch, and go in (the table's key dedups on merge)
    await insert_batch(ch, "trades", TRADE_COLUMNS, data, token + "-other")
    assert ch.command("SELECT count() FROM trades") == 2000
    assert ch.command("SELECT count() FROM trades FINAL") == 1000


async def test_rejected_rows_are_isolated_and_the_rest_inserted(ch) -> None:
    columns = ["id", "question", "updated_at", "raw", "ingested_at"]
    rows = [[str(i), "q", 1_777_000_000, "{}", 1_777_000_000_000] for i in range(9)]
    rows[4][2] = "not a date"  # refused while serializing
    data = [list(column) for column in zip(*rows, strict=True)]
    rejected = await insert_columns_isolating_rejects(ch, "markets", columns, data, "tok-1")
    assert [index for index, _ in rejected] == [4]
    assert sorted(int(row[0]) for row in ch.query("SELECT id FROM markets").result_rows) == [0, 1, 2, 3, 5, 6, 7, 8]


def test_unreachable_clickhouse_is_a_transient_error() -> None:
    settings = ClickHouseSettings(host="127.0.0.1", port=1, connect_timeout_s=1)
    with pytest.raises(TransientSinkError, match="unreachable"):
        make_client(settings)


TRADE_COLUMNS = ["id", "timestamp", "token_id", "usd_amount", "token_amount", "ingested_at"]


def trade_columns(amounts: list[str], ingested_at: datetime) -> list[list[object]]:
    """Trades of these amounts, in TRADE_COLUMNS order, as columns."""
    count = len(amounts)
    return [[f"t{i}" for i in range(count)], [1_777_000_000 + i for i in range(count)], ["tok"] * count, amounts,
            amounts, [ingested_at] * count]  # fmt: skip


async def test_text_amounts_and_one_ingested_at_are_stored_as_the_table_types(ch) -> None:
    types = describe_columns(ch, "trades")
    ingested_at = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    amounts = ["0.000001", "123456789012.123456", "1.5", "7"]
    columns = trade_columns(amounts, ingested_at)
    await insert_batch(ch, "trades", TRADE_COLUMNS, columns, "tok-amounts",
                       column_types=[types[c] for c in TRADE_COLUMNS])  # fmt: skip
    stored = ch.query("SELECT usd_amount, token_amount, ingested_at FROM trades ORDER BY id").result_rows
    expected_at = ingested_at.replace(microsecond=123000, tzinfo=None)  # milliseconds; read back as naive UTC
    assert stored == [(Decimal(a), Decimal(a), expected_at) for a in amounts]


async def test_a_bad_amount_text_is_rejected_by_the_server_and_isolated(ch) -> None:
    types = describe_columns(ch, "trades")
    columns = trade_columns(["1.5", "2.5", "not a number", "4.5", "99999999999999.5"], datetime.now(UTC))
    rejected = await insert_columns_isolating_rejects(ch, "trades", TRADE_COLUMNS, columns, "tok-bad",
                                                      column_types=[types[c] for c in TRADE_COLUMNS])  # fmt: skip
    assert [index for index, _ in rejected] == [2, 4]  # unparseable; beyond Decimal(18, 6)
    assert [row[0] for row in ch.query("SELECT id FROM trades ORDER BY id").result_rows] == ["t0", "t1", "t3"]


def test_wire_columns_changes_only_what_the_server_converts_exactly() -> None:
    at = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    types = ["Decimal(18, 6)", "Decimal(18, 6)", "DateTime64(3, 'UTC')", "DateTime64(6, 'UTC')", "String"]
    data = [["1.5"], [Decimal("1.5")], [at, at], [at, datetime(2026, 5, 1, tzinfo=UTC)], ["a"]]
    wire_types, wire_data = wire_columns(types, data)
    assert wire_types == ["String", "Decimal(18, 6)", "DateTime64(3, 'UTC')", "DateTime64(6, 'UTC')", "String"]
    assert wire_data[2] == [int(at.timestamp() * 1000)] * 2  # one datetime throughout: its ticks, once
    assert wire_data[3] is data[3] and wire_data[0] is data[0]  # different datetimes: left to the client


def test_inserts_and_queries_leave_pandas_numpy_and_pyarrow_unimported(clickhouse_server) -> None:
    # a fresh interpreter, as a service starts: clickhouse-connect would import all three on the first insert
    program = f"""
import sys
from common.clickhouse import apply_migrations, describe_columns, make_client, insert_columns
from common.config import ClickHouseSettings
settings = ClickHouseSettings(host="127.0.0.1", port={clickhouse_server.port}, database="no_pandas")
apply_migrations(settings)
client = make_client(settings)
types = describe_columns(client, "markets")
insert_columns(client, "markets", ["id", "outcomes", "updated_at"], [["1"], [["Yes", "No"]], [1_777_000_000]],
               "tok-no-pandas", column_types=[types["id"], types["outcomes"], types["updated_at"]])
assert client.query("SELECT id, outcomes FROM markets").result_rows == [("1", ["Yes", "No"])]
client.command("DROP DATABASE no_pandas")
print(sorted({{"pandas", "numpy", "pyarrow"}} & set(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("typed", [True, False])
def test_an_insert_keeps_no_reference_to_its_columns(ch, typed: bool) -> None:
    # clickhouse-connect's insert context is a reference cycle: whatever it still holds lives until a collection
    types = describe_columns(ch, "markets")
    ids, questions = ["1", "2"], ["q1", "q2"]
    held_before = sys.getrefcount(ids), sys.getrefcount(questions)
    gc.disable()
    try:
        insert_columns(ch, "markets", ["id", "question"], [ids, questions], f"tok-refs-{typed}",
                       column_types=[types["id"], types["question"]] if typed else None)  # fmt: skip
        held_after = sys.getrefcount(ids), sys.getrefcount(questions)
    finally:
        gc.enable()
    assert held_after == held_before
    assert ch.query("SELECT id, question FROM markets ORDER BY id").result_rows == [("1", "q1"), ("2", "q2")]


def test_batch_tokens_without_row_keys_are_those_earlier_versions_sent() -> None:
    # the stream ids alone hash to what earlier versions computed (sha1 of the source, then "," + id for each id)
    ids = ["1777000000000-0", "1777000000000-1", "1777000000001-0"]
    assert (
        batch_token("stream:trades", ids) == "stream:trades:1777000000000-0:3:5341de7043095f23ddf523f8b90a01ba6eed53c4"
    )
    assert batch_token("stream:trades>order_filled_events", []) == (
        "stream:trades>order_filled_events::0:4d6b367cdf263e3be0d7787ba2ca78285cc6084a"
    )


def test_two_batches_with_the_same_stream_ids_get_different_tokens_and_a_batch_always_its_own() -> None:
    # a new primary whose clock lags re-issues stream ids a lost primary had used, for other entries
    ids = ["1777000000000-0", "1777000000000-1", "1777000000001-0"]
    lost_primary_rows, new_primary_rows = ["0xa_0x1", "0xb_0x2", "0xc_0x3"], ["0xd_0x4", "0xe_0x5", "0xf_0x6"]
    token = batch_token("stream:trades", ids, lost_primary_rows)
    assert token == "stream:trades:1777000000000-0:3:406c522b0a069a62b339a91400f4274b89c0c69d"  # pinned: replays
    assert batch_token("stream:trades", list(ids), list(lost_primary_rows)) == token
    assert batch_token("stream:trades", ids, new_primary_rows) != token
    assert batch_token("stream:trades", ids, lost_primary_rows[::-1]) != token  # the rows' order counts too
    assert batch_token("stream:trades", ids) != token
