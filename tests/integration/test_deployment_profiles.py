"""Deployment profiles on the real engine (the embedded chDB 26.9) and the refusals, for real where they can be.

What cannot run here, and so is covered on paper in docs/operations.md ("Test plan for a real cluster and for
Cloud"): Replicated tables (chDB leaves them read-only), ON CLUSTER (disabled in chDB), SharedMergeTree (Cloud
only), a lagging replica. The last one has a test double at the one seam where the check asks ClickHouse
(`LaggingReplica`); everything else here talks to the real engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from common import deployment, keys
from common.clickhouse import INSERT_SETTINGS, InsertStatusUnknown, apply_migrations, make_client
from common.config import ClickHouseSettings
from common.errors import ConfigError, TransientSinkError
from common.unique_insert import UniqueKey, UniqueTarget, insert_unique
from pipeline.ops import migrate
from processors import clickhouse_writer
from tests.fixtures.clickhouse_server import ClickHouseServer, clickhouse_env, free_port
from tests.fixtures.helpers import FAST_STREAMS, items_in
from tests.integration.test_gamma_ingesters import run_events, run_markets
from tests.integration.test_unique_inserts import ingest_both_sources_over_v1, run_processor_and_writer
from tests.unit.test_deployment import statements

# Names the embedded engine cannot know: Cloud's engines. No profile names one today (Cloud converts
# ReplacingMergeTree itself); a profile that ever does is checked against this list instead.
CLOUD_ONLY_ENGINES = frozenset({"SharedMergeTree", "SharedReplacingMergeTree"})
ENGINE = re.compile(r"ENGINE\s*=\s*(\w+)")
TABLE_SETTINGS = re.compile(r"\)\s*ENGINE\s*=.*?\bSETTINGS\s+(.+)$", re.S)  # the SETTINGS of a CREATE TABLE
MODIFY_SETTING = re.compile(r"MODIFY SETTING\s+(.+)$", re.S)
QUERY_SETTINGS = re.compile(r"^(?:ALTER|INSERT|SELECT|DELETE)\b.*?\bSETTINGS\s+(.+)$", re.S)


def setting_names(clause: str) -> set[str]:
    return set(re.findall(r"(\w+)\s*=", clause))


def names_in(client: Any, table: str) -> set[str]:
    return {row[0] for row in client.query(f"SELECT name FROM system.{table}").result_rows}


# --- every statement of every profile, checked by the engine -------------------------------------------------


@pytest.mark.parametrize("name", list(deployment.PROFILES))
def test_every_statement_of_the_profile_passes_the_engines_parser(clickhouse_client: Any, name: str) -> None:
    for statement in statements(name):
        formatted = clickhouse_client.query("SELECT formatQuery({sql:String})", parameters={"sql": statement})
        assert formatted.result_rows[0][0], statement


@pytest.mark.parametrize("name", list(deployment.PROFILES))
def test_every_engine_and_setting_the_profile_names_exists_in_the_engine(clickhouse_client: Any, name: str) -> None:
    engines = names_in(clickhouse_client, "table_engines") | names_in(clickhouse_client, "database_engines")
    table_settings = names_in(clickhouse_client, "merge_tree_settings")
    query_settings = names_in(clickhouse_client, "settings")
    used_engines: set[str] = set()
    used_table: set[str] = set()
    used_query: set[str] = set()
    for statement in statements(name):
        body = "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--"))
        used_engines |= set(ENGINE.findall(body))
        for pattern, used in ((TABLE_SETTINGS, used_table), (MODIFY_SETTING, used_table), (QUERY_SETTINGS, used_query)):
            if match := pattern.search(body):
                used |= setting_names(match.group(1))
    profile = deployment.PROFILES[name]
    used_query |= {*profile.check_settings, *profile.insert_settings, *deployment.DELETE_SETTINGS, *INSERT_SETTINGS}
    assert used_engines and used_table  # the patterns found what they look for
    assert used_engines - engines - CLOUD_ONLY_ENGINES == set()
    assert used_table - table_settings == set()
    assert used_query - query_settings == set()
    if profile.replicated:
        assert {"Replicated", "ReplicatedReplacingMergeTree"} <= used_engines
        assert {"replicated_deduplication_window", "replicated_deduplication_window_seconds"} <= used_table


# --- migrations: twice, and from two writers at once ---------------------------------------------------------


@pytest.mark.parametrize("name", ["cloud", "embedded"])
def test_migrations_applied_twice_and_by_two_writers_at_once_end_in_one_schema(ch_settings: ClickHouseSettings,
                                                                               name: str) -> None:  # fmt: skip
    settings = ch_settings.model_copy(update={"deployment": name})
    results: list[Any] = []

    def migrate() -> None:
        try:
            results.append(apply_migrations(settings))
        except Exception as exc:  # reported below
            results.append(exc)

    writers = [threading.Thread(target=migrate) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert all(isinstance(result, list) for result in results) and len(results) == 2, results
    assert apply_migrations(settings) == []  # a third run: everything recorded already
    client = make_client(settings)
    versions = client.query("SELECT version, count() FROM schema_migrations GROUP BY version ORDER BY version")
    assert [row[0] for row in versions.result_rows] == [1, 2, 3, 4, 5, 6, 7]
    expected = deployment.PROFILES[name].dedup_settings
    for table in ("order_filled_events_before_view", "trades", "markets", "events"):
        create = client.query(f"SHOW CREATE TABLE {table}").result_rows[0][0]
        assert "ENGINE = ReplacingMergeTree" in create and all(part in create for part in expected.split(", "))
    assert client.query("SHOW CREATE TABLE order_filled_events").result_rows[0][0].startswith("CREATE VIEW")
    client.close()


def test_the_migrate_command_applies_once_and_then_nothing(ch_settings: ClickHouseSettings, monkeypatch, capsys):
    for name, value in clickhouse_env(ch_settings.model_copy(update={"deployment": "cloud"})).items():
        monkeypatch.setenv(name, value)
    assert migrate.main([]) == 0 and migrate.main([]) == 0
    out = capsys.readouterr().out
    assert f"{ch_settings.database} (cloud): migrations applied: 001, 002, 003, 004" in out
    assert f"{ch_settings.database} (cloud): migrations applied: none (all applied already)" in out


# --- the whole pipeline with the cloud profile, and with the cluster profile's check and insert settings ---------


def cluster_settings_on_one_node() -> deployment.Profile:
    """The cluster profile's check, insert and delete settings with the DDL the embedded engine can run."""
    return dataclasses.replace(deployment.PROFILES["cluster"], replicated=False)


@pytest.mark.parametrize("name", ["cloud", "cluster"])
async def test_the_whole_pipeline_ends_exact_under_the_profiles_settings(
    simulator, redis_client, redis_settings, ch_settings, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    if name == "cluster":
        monkeypatch.setitem(deployment.PROFILES, "cluster", cluster_settings_on_one_node())
    settings = ch_settings.model_copy(update={"deployment": name})
    sim = simulator(seed=21, markets=12, history_fills=1_500, late_listing_delay_s=3600.0)
    await run_markets(sim, redis_settings)
    await run_events(sim, redis_settings)
    listed = {stream: [orjson.loads(item) for item in items_in(await redis_client.xrange(stream))]
              for stream in (keys.STREAM_MARKETS, keys.STREAM_EVENTS)}  # fmt: skip
    distinct = await ingest_both_sources_over_v1(sim, redis_settings)  # every v1 fill from two sources
    await run_processor_and_writer(redis_settings, settings)
    # every market and event changed upstream: a newer version replaces each row (the lightweight DELETE path)
    for stream, items in listed.items():
        for item in items:
            await redis_client.xadd(stream, {"data": orjson.dumps({**item, "updatedAt": "2099-01-01T00:00:00Z"})})
    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=settings,
                                streams=FAST_STREAMS, once=True)  # fmt: skip

    client = make_client(settings)
    for table in ("trades", "order_filled_events"):
        assert (table, *client.query(f"SELECT count(), uniqExact(id) FROM {table}").result_rows[0]) == (
            table, distinct, distinct)  # fmt: skip
    for table, stream in (("markets", keys.STREAM_MARKETS), ("events", keys.STREAM_EVENTS)):
        ids = {item["id"] for item in listed[stream]}
        assert ids
        query = f"SELECT count(), uniqExact(id), min(updated_at) FROM {table}"
        count, unique, newest = client.query(query).result_rows[0]
        assert (table, count, unique, newest.year) == (table, len(ids), len(ids), 2099)
    client.close()
    assert await redis_client.xlen(keys.STREAM_DLQ) == 0


# --- the consistency of the check: sent every time, its failure transient ----------------------------------------


class LaggingReplica:
    """A test double at the one seam where the check asks ClickHouse (no lagging replica can run here): it answers
    through the real client, records the settings of every query, and fails the first `failures` queries as a
    replica behind the quorum does under select_sequential_consistency=1."""

    def __init__(self, client: Any, failures: int) -> None:
        self.client, self.failures = client, failures
        self.query_settings: list[dict[str, Any] | None] = []

    def query(self, sql: str, parameters: Any = None, settings: dict[str, Any] | None = None) -> Any:
        self.query_settings.append(settings)
        if self.failures:
            self.failures -= 1
            raise DatabaseError(
                "Code: 289. DB::Exception: Replica doesn't have part all_5_5_0 which was successfully written to "
                "quorum of other replicas. (REPLICA_IS_NOT_IN_QUORUM)"
            )
        return self.client.query(sql, parameters=parameters, settings=settings)

    def __getattr__(self, name: str) -> Any:  # insert, command: the real client's
        return getattr(self.client, name)


@pytest.mark.parametrize("name", ["cloud", "cluster"])
async def test_every_check_reads_with_sequential_consistency_and_its_failure_is_retried_never_absent(
    redis_client, ch_settings, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    if name == "cluster":
        monkeypatch.setitem(deployment.PROFILES, "cluster", cluster_settings_on_one_node())
    settings = ch_settings.model_copy(update={"deployment": name})
    apply_migrations(settings)
    real = make_client(settings)
    real.command("CREATE TABLE checked (id String, updated_at DateTime64(6, 'UTC')) ENGINE = MergeTree ORDER BY id")
    target = UniqueTarget("checked", ("id", "updated_at"), UniqueKey(version_column="updated_at"), owner="w",
                          token_source="test")  # fmt: skip
    rows = [["a", "b"], [datetime.now(UTC)] * 2]
    lagging = LaggingReplica(real, failures=1)

    with pytest.raises(TransientSinkError, match="REPLICA_IS_NOT_IN_QUORUM"):
        await insert_unique(lagging, redis_client, target, rows, ["1-0", "1-1"], settings)  # type: ignore[arg-type]
    assert real.query("SELECT count() FROM checked").result_rows[0][0] == 0  # not taken as absent: nothing sent
    outcome = await insert_unique(lagging, redis_client, target, rows, ["1-0", "1-1"], settings)  # the retry
    again = await insert_unique(lagging, redis_client, target, rows, ["1-0", "1-1"], settings)  # a replay
    assert (outcome.inserted, again.inserted, again.stored_before) == (2, 0, 2)
    assert len(lagging.query_settings) == 3 and all(
        s == {"select_sequential_consistency": 1} for s in lagging.query_settings)  # fmt: skip
    real.close()


class UnknownInsertStatus:
    """A test double at the insert seam (no quorum can time out here): the insert lands through the real client,
    then the reply is lost as a quorum insert's is when the server cannot tell whether it reached the quorum."""

    def __init__(self, client: Any) -> None:
        self.client, self.inserts = client, 0

    def insert(self, *args: Any, **kwargs: Any) -> None:
        self.inserts += 1
        self.client.insert(*args, **kwargs)
        raise DatabaseError("Code: 319. DB::Exception: Unknown quorum status. (UNKNOWN_STATUS_OF_INSERT)", code=319)

    def __getattr__(self, name: str) -> Any:  # query, command: the real client's
        return getattr(self.client, name)


async def test_an_insert_of_unknown_status_is_not_resent_blindly_but_checked_first(redis_client, ch_settings) -> None:
    settings = ch_settings.model_copy(update={"insert_max_attempts": 5})
    apply_migrations(settings)
    real = make_client(settings)
    real.command("CREATE TABLE checked (id String, timestamp DateTime('UTC')) ENGINE = MergeTree ORDER BY id")
    target = UniqueTarget("checked", ("id", "timestamp"), UniqueKey(time_column="timestamp"), owner="w",
                          token_source="test")  # fmt: skip
    rows, entry_ids = [["a", "b"], [1_777_000_000] * 2], ["1-0", "1-1"]  # timestamps as the writer has them
    unknown = UnknownInsertStatus(real)

    with pytest.raises(InsertStatusUnknown):
        await insert_unique(unknown, redis_client, target, rows, entry_ids, settings)  # type: ignore[arg-type]
    assert unknown.inserts == 1  # not re-sent in place, though 5 attempts were allowed
    retry = await insert_unique(unknown, redis_client, target, rows, entry_ids, settings)  # type: ignore[arg-type]
    assert (retry.inserted, retry.stored_before, unknown.inserts) == (0, 2, 1)  # the check found them landed
    assert real.query("SELECT count() FROM checked").result_rows[0][0] == 2
    real.close()


# --- refused shapes, for real: a Distributed table and a sharded cluster ------------------------------------------


class KeeperClickHouse(ClickHouseServer):
    """tests/fixtures/keeper_clickhouse.py in its own process: a Keeper and two clusters configured."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.fixtures.keeper_clickhouse", "--host", self.host, "--port",
                str(self.port), "--data-dir", str(self.data_dir)]  # fmt: skip


@pytest.fixture(scope="module")
def keeper_clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeeperClickHouse]:
    server = KeeperClickHouse(Path(tmp_path_factory.mktemp("keeper")) / "data", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_writer_pointed_at_a_distributed_table_stops_at_start_saying_why(
    keeper_clickhouse: KeeperClickHouse, redis_settings
) -> None:
    client = keeper_clickhouse.client()
    client.command("CREATE DATABASE IF NOT EXISTS sharded")
    client.command("CREATE TABLE IF NOT EXISTS sharded.trades_local (id String) ENGINE = MergeTree ORDER BY id")
    client.command("CREATE TABLE IF NOT EXISTS sharded.trades AS sharded.trades_local "
                   "ENGINE = Distributed(pm, sharded, trades_local, cityHash64(id))")  # fmt: skip
    with pytest.raises(DatabaseError, match="DELETE query is not supported"):  # one reason, shown by the engine
        client.command("DELETE FROM sharded.trades WHERE id = 'x'")
    client.close()
    settings = ClickHouseSettings(host=keeper_clickhouse.host, port=keeper_clickhouse.port, database="sharded")

    with pytest.raises(ConfigError) as refused:
        writer = clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=settings,
                                       streams=FAST_STREAMS, once=True)  # fmt: skip
        await asyncio.wait_for(writer, 60)
    message = str(refused.value)
    assert "Distributed tables (trades)" in message and "one shard with N replicas" in message
    assert "lightweight DELETE" in message and "CLICKHOUSE_DEPLOYMENT=cluster" in message


def test_the_cluster_profile_refuses_a_cluster_of_two_shards(keeper_clickhouse: KeeperClickHouse, monkeypatch) -> None:
    settings = ClickHouseSettings(host=keeper_clickhouse.host, port=keeper_clickhouse.port, database="pm_two",
                                  deployment="cluster", cluster="pm_two_shards")  # fmt: skip
    with pytest.raises(ConfigError, match=r"cluster 'pm_two_shards' has 2 shards; the pipeline supports one shard"):
        apply_migrations(settings)
    for name, value in clickhouse_env(settings).items():
        monkeypatch.setenv(name, value)
    assert migrate.main([]) == 2  # the command stops on it too, as on any bad setting
    client = keeper_clickhouse.client()
    assert client.query("SELECT count() FROM system.databases WHERE name = 'pm_two'").result_rows[0][0] == 0
    client.close()


def test_the_cluster_profile_refuses_a_single_server_database(keeper_clickhouse: KeeperClickHouse) -> None:
    settings = ClickHouseSettings(host=keeper_clickhouse.host, port=keeper_clickhouse.port, database="single",
                                  deployment="cluster", cluster="pm")  # fmt: skip
    client = keeper_clickhouse.client()
    client.command("CREATE DATABASE IF NOT EXISTS single")
    client.close()
    with pytest.raises(ConfigError, match=r"exists with engine Atomic, not Replicated.*From one server to a cluster"):
        apply_migrations(settings)
