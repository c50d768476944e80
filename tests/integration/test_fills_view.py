"""`order_filled_events` as a view over `trades` (migration 007) on the embedded ClickHouse: the same columns, types
and rows the table held when the writer stored each fill twice, the upgrade that keeps that table's rows, and what
`verify` and `replay` read from it.

The rows the table held are the fills' own fields: the writer stored each fill from `stream:order_events`, and later
rebuilt it from its trade, a conversion whose unit test compared it with exactly these rows over every edge
(`old_fill_row`). They go into the kept table, whose DDL is the old table's (it is the old table, renamed).
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from msgspec.structs import astuple

from common import deployment, exchanges, tables
from common.clickhouse import (
    apply_migrations,
    batch_token,
    describe_columns,
    insert_batch,
    load_migrations,
    make_client,
    run_migration_statement,
)
from common.config import ClickHouseSettings
from common.errors import TransientSinkError
from common.pages import page
from common.payloads import MarketRef, OrderEvent, encode_trade
from pipeline.ops import replay as ops_replay
from pipeline.ops import verify as ops_verify
from processors.rows import STREAMS, TRADE_COLUMNS
from processors.trades import derive_trade
from tests.fixtures.dashboard_world import run_command, set_pipeline_env
from tests.unit.test_rows import varied_fills

(STREAM_TRADES_SPEC,) = [spec for spec in STREAMS if spec.table.table == tables.TRADES]
OLD_COLUMNS = (*OrderEvent.__struct_fields__, "ingested_at")  # order_filled_events, in its order
DECIMAL_18_6_MAX = 10**18 - 1  # micros: the largest amount `trades` holds (Decimal(18, 6))
START_TS = 1_700_000_000
INGESTED_AT = datetime(2026, 12, 6, 23, 0, 0, 123000, tzinfo=UTC)
MARKET = MarketRef(market_id="7", condition_id="0x2e", outcome="Up", outcome_index=1)
# Queries analysts run on fills, answered by the table before and by the view now ({t}: either).
QUERIES = (
    "SELECT * FROM {t} ORDER BY id",
    "SELECT maker_asset_id = '0' AS maker_buys, count(), sum(maker_amount), sum(taker_amount), max(maker_amount) "
    "FROM {t} GROUP BY maker_buys ORDER BY maker_buys",
    "SELECT source, exchange, count(), sum(fee) FROM {t} GROUP BY source, exchange ORDER BY source, exchange",
    "SELECT id, log_index FROM {t} WHERE log_index IS NULL AND taker_asset_id = '0' ORDER BY id",
    "SELECT count(), uniqExact(id), min(timestamp), max(ingested_at) FROM {t}",
    "SELECT id FROM {t} WHERE timestamp BETWEEN toDateTime(1700003000) AND toDateTime(1700050000) "
    "AND maker_amount >= 1000000000000 ORDER BY id",
)


def old_fill_row(fill: OrderEvent) -> tuple[Any, ...]:
    """The row the writer stored in the table `order_filled_events` for `fill` before migration 007."""
    return (*astuple(fill), INGESTED_AT)


def storable_fills(count: int) -> list[OrderEvent]:
    """Fills of both directions and sources, every exchange (and the subgraph's ''), log_index NULL or set, amounts
    from 0 to the largest `trades` holds (10^12 micros and 10^18 - 1 among them, half of the fills at such edges),
    one a minute from 2023-11-14: trades `trades` can hold, in few partitions."""
    edges = [0, 1, 10**12, 10**12 + 1, DECIMAL_18_6_MAX]
    addresses = ["", *(exchange.address for exchange in exchanges.EXCHANGES)]
    fills = []
    for n, fill in enumerate(varied_fills(random.Random(7), count)):
        at_edges = n % 4 < 2  # varied_fills alternates the direction: both get edges
        maker, taker = (edges[n % 5], edges[n // 5 % 5]) if at_edges else (fill.maker_amount, fill.taker_amount)
        fills.append(msgspec.structs.replace(
            fill, exchange=addresses[n % len(addresses)], timestamp=START_TS + 60 * n,
            maker_amount=min(maker, DECIMAL_18_6_MAX), taker_amount=min(taker, DECIMAL_18_6_MAX),
        ))  # fmt: skip
    return fills


async def insert_trades(client: Any, fills: list[OrderEvent]) -> None:
    """The trades of `fills` through the writer's own conversion and wire types (half without a market)."""
    data = [encode_trade(derive_trade(fill, MARKET if n % 2 else None)) for n, fill in enumerate(fills)]
    converted = STREAM_TRADES_SPEC.convert([page(data)], INGESTED_AT)
    assert converted.poison == []
    types = describe_columns(client, tables.TRADES)
    await insert_batch(client, tables.TRADES, TRADE_COLUMNS, converted.columns,
                       batch_token("test:trades", [fill.id for fill in fills]),
                       column_types=[types[c] for c in TRADE_COLUMNS])  # fmt: skip


async def insert_old_fills(client: Any, table: str, fills: list[OrderEvent]) -> None:
    """`fills` as the writer stored them in the table `order_filled_events` (now `table`)."""
    types = describe_columns(client, table)
    columns = [list(column) for column in zip(*map(old_fill_row, fills), strict=True)]
    await insert_batch(client, table, OLD_COLUMNS, columns, batch_token("test:fills", [fill.id for fill in fills]),
                       column_types=[types[c] for c in OLD_COLUMNS])  # fmt: skip


def describe(client: Any, table: str) -> list[tuple[str, str]]:
    return list(describe_columns(client, table).items())


def migrate_to(settings: ClickHouseSettings, last: int) -> None:
    """The database as a release whose newest migration was `last` left it (apply_migrations, stopped there)."""
    profile = deployment.PROFILES[settings.deployment]
    client = make_client(settings, database="default")
    client.command(profile.create_database(settings.database, settings.cluster))
    client.command(profile.render(deployment.SCHEMA_MIGRATIONS_DDL, settings.database))
    for migration in load_migrations(database=settings.database, profile=profile):
        if migration.version <= last:
            for statement in migration.statements:
                client.command(statement)
            client.insert(f"{settings.database}.schema_migrations", [[migration.version, migration.name,
                          datetime.now(UTC)]], column_names=["version", "name", "applied_at"])  # fmt: skip
    client.close()


def engines(client: Any, database: str) -> dict[str, str]:
    rows = client.query("SELECT name, engine FROM system.tables WHERE database = {db:String} AND name LIKE 'order%'",
                        parameters={"db": database}).result_rows  # fmt: skip
    return dict(rows)


# The check of docs/operations.md ("The fills table kept by the upgrade"): kept fills without a trade.
KEPT_WITHOUT_TRADE = (
    f"SELECT id FROM {tables.FILLS_BEFORE_VIEW} WHERE id NOT IN (SELECT id FROM {tables.TRADES}) ORDER BY id"
)


async def test_the_view_answers_the_queries_of_the_table_with_the_same_results(ch_settings) -> None:
    apply_migrations(ch_settings)
    client = make_client(ch_settings)
    # a fresh install ends with the view too (and the table it renamed, empty)
    assert engines(client, ch_settings.database) == {tables.ORDER_FILLED_EVENTS: "View",
                                                     tables.FILLS_BEFORE_VIEW: "ReplacingMergeTree"}  # fmt: skip
    assert client.command(f"SELECT count() FROM {tables.FILLS_BEFORE_VIEW}") == 0
    fills = storable_fills(1500)
    assert {(f.maker_asset_id == "0", f.log_index is None, f.source) for f in fills} == {
        (buys, null, source) for buys in (True, False) for null in (True, False) for source in ("goldsky", "chain")
    }
    assert {f.exchange for f in fills} == {"", *exchanges.ALL_EXCHANGES}
    assert {10**12, DECIMAL_18_6_MAX} <= {f.maker_amount for f in fills} & {f.taker_amount for f in fills}
    await insert_old_fills(client, tables.FILLS_BEFORE_VIEW, fills)
    await insert_trades(client, fills)

    assert describe(client, tables.ORDER_FILLED_EVENTS) == describe(client, tables.FILLS_BEFORE_VIEW)
    assert [name for name, _ in describe(client, tables.ORDER_FILLED_EVENTS)] == list(OLD_COLUMNS)
    rows = client.query(f"SELECT * FROM {tables.ORDER_FILLED_EVENTS} ORDER BY id").result_rows
    assert [(row[0], row[10], row[11], row[12], row[13]) for row in rows] == sorted(
        (f.id, f.maker_asset_id, f.taker_asset_id, f.maker_amount, f.taker_amount) for f in fills)  # fmt: skip
    for query in QUERIES:
        view = client.query(query.format(t=tables.ORDER_FILLED_EVENTS))
        table = client.query(query.format(t=tables.FILLS_BEFORE_VIEW))
        assert view.result_rows == table.result_rows, query
        assert [t.name for t in view.column_types] == [t.name for t in table.column_types], query
    assert client.query(KEPT_WITHOUT_TRADE).result_rows == []
    client.close()


async def test_the_upgrade_keeps_every_stored_fill_and_the_view_answers_them(ch_settings) -> None:
    migrate_to(ch_settings, 6)
    client = make_client(ch_settings)
    fills = storable_fills(600)
    # stored by the writer before the upgrade: each fill twice; the last one's trade never made it (its insert
    # refused, or a crash between the two inserts and no redelivery yet)
    await insert_old_fills(client, tables.ORDER_FILLED_EVENTS, fills)
    await insert_trades(client, fills[:-1])
    before = client.query(f"SELECT * FROM {tables.ORDER_FILLED_EVENTS} ORDER BY id").result_rows
    trades_before = client.query(f"SELECT * FROM {tables.TRADES} ORDER BY id").result_rows

    results: list[Any] = []

    def migrate() -> None:
        try:
            results.append(apply_migrations(ch_settings))
        except Exception as exc:  # reported below
            results.append(exc)

    services = [threading.Thread(target=migrate) for _ in range(2)]  # two services start with the new release
    for service in services:
        service.start()
    for service in services:
        service.join(120)
    assert sorted(map(str, results)) in (["[7]", "[7]"], ["[7]", "[]"]), results
    assert engines(client, ch_settings.database) == {tables.ORDER_FILLED_EVENTS: "View",
                                                     tables.FILLS_BEFORE_VIEW: "ReplacingMergeTree"}  # fmt: skip
    assert client.query(f"SELECT * FROM {tables.FILLS_BEFORE_VIEW} ORDER BY id").result_rows == before
    assert client.query(f"SELECT * FROM {tables.TRADES} ORDER BY id").result_rows == trades_before
    assert client.query(f"SELECT * FROM {tables.ORDER_FILLED_EVENTS} ORDER BY id").result_rows == [
        row for row in before if row[0] != fills[-1].id]  # fmt: skip
    assert client.query(KEPT_WITHOUT_TRADE).result_rows == [(fills[-1].id,)]

    # a run that stopped after the statements and before recording the migration runs them again: nothing changes
    (migration,) = [m for m in load_migrations(database=ch_settings.database) if m.version == 7]
    raw = make_client(ch_settings, database="default")
    for statement in migration.statements:
        run_migration_statement(raw, statement)
    raw.close()
    assert engines(client, ch_settings.database)[tables.ORDER_FILLED_EVENTS] == "View"
    assert apply_migrations(ch_settings) == []
    client.close()


def test_a_table_in_the_way_of_the_rename_stops_the_migration_saying_why(ch_settings) -> None:
    migrate_to(ch_settings, 6)
    client = make_client(ch_settings)
    client.command(f"CREATE TABLE {tables.FILLS_BEFORE_VIEW} (id String) ENGINE = MergeTree ORDER BY id")
    with pytest.raises(TransientSinkError, match="order_filled_events is still a table"):
        apply_migrations(ch_settings)
    assert engines(client, ch_settings.database)[tables.ORDER_FILLED_EVENTS] == "ReplacingMergeTree"  # untouched
    client.close()


async def test_verify_and_replay_read_the_kept_fills_and_refill_a_trade_they_lack(
    ch_settings, redis_settings, monkeypatch, capsys
) -> None:
    migrate_to(ch_settings, 6)
    client = make_client(ch_settings)
    fills = sorted(storable_fills(40), key=lambda fill: fill.id)  # the first three: by id, as verify lists them
    await insert_old_fills(client, tables.ORDER_FILLED_EVENTS, fills)
    await insert_trades(client, fills[3:])  # three fills stored without their trade before the upgrade
    apply_migrations(ch_settings)
    set_pipeline_env(monkeypatch, redis_settings, ch_settings)
    window = ("--from", str(START_TS), "--to", str(START_TS + 60 * len(fills)))

    assert await run_command(ops_verify.main, *window) == 1
    report = capsys.readouterr().out
    assert "missing             3" in report and all(fill.id in report for fill in fills[:3])
    assert await run_command(ops_replay.main, *window, "--force") == 0  # no service runs: nothing in flight
    assert "3 fill(s) in range without a trade" in capsys.readouterr().out
    assert client.query(KEPT_WITHOUT_TRADE).result_rows == []
    assert await run_command(ops_verify.main, *window) == 0
    # the trades replay made give back the fills the table held (replay's own ingested_at aside)
    view, kept = (client.query(f"SELECT * EXCEPT (ingested_at) FROM {table} ORDER BY id").result_rows
                  for table in (tables.ORDER_FILLED_EVENTS, tables.FILLS_BEFORE_VIEW))  # fmt: skip
    assert view == kept and len(view) == len(fills)

    client.command(f"DROP TABLE {tables.FILLS_BEFORE_VIEW}")  # the operator, once satisfied
    assert await run_command(ops_replay.main, *window, "--force") == 0
    assert "0 fill(s) in range without a trade" in capsys.readouterr().out
    assert await run_command(ops_verify.main, *window) == 0
    client.close()
