"""Deployment profiles rendered without a server: what each profile's DDL holds and must not hold.

The engine's own parser and its engine/setting names are checked in tests/integration/test_deployment_profiles.py.
"""

from __future__ import annotations

import re
import ssl

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from common import deployment
from common.clickhouse import MIGRATIONS_DIR, ensure_database, load_migrations, tls_verification
from common.config import ClickHouseSettings, load
from common.errors import ConfigError
from pipeline.ops import doctor

MACROS = ("{shard}", "{replica}", "{uuid}", "{cluster}")
PLACEHOLDERS = re.compile(r"\{(database|replicated|dedup_settings)\}")
MERGE_TREE_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)")


def statements(name: str, database: str = "pm") -> list[str]:
    profile = deployment.PROFILES[name]
    migrations = load_migrations(database=database, profile=profile)
    return [
        profile.create_database(database, ClickHouseSettings().cluster),
        profile.render(deployment.SCHEMA_MIGRATIONS_DDL, database),
        *(statement for migration in migrations for statement in migration.statements),
    ]


@pytest.mark.parametrize("name", list(deployment.PROFILES))
def test_every_placeholder_is_rendered(name: str) -> None:
    assert not [s for s in statements(name) if PLACEHOLDERS.search(s)]


def test_cloud_has_no_on_cluster_no_macros_and_plain_engines() -> None:
    cloud = statements("cloud")
    assert not [s for s in cloud if "ON CLUSTER" in s.upper() or any(macro in s for macro in MACROS)]
    assert set(MERGE_TREE_ENGINE.findall("\n".join(cloud))) == {"ReplacingMergeTree"}  # Cloud makes them Shared
    assert "replicated_deduplication_window_seconds = 86400" in "\n".join(cloud)


def test_cluster_is_a_replicated_database_of_replicated_tables_with_the_replicated_dedup_window() -> None:
    cluster = statements("cluster")
    assert cluster[0].startswith("CREATE DATABASE IF NOT EXISTS pm ON CLUSTER '{cluster}' ENGINE = Replicated(")
    engines = MERGE_TREE_ENGINE.findall("\n".join(cluster))
    assert len(engines) == 5 and set(engines) == {"ReplicatedReplacingMergeTree"}  # 4 tables + schema_migrations
    creates = [s for s in cluster if "CREATE TABLE" in s and "schema_migrations" not in s]
    assert len(creates) == 4 and all(s.endswith(deployment.PROFILES["cluster"].dedup_settings) for s in creates)
    assert deployment.REPLICATED_DEDUP_WINDOW_S >= 86_400
    # only the CREATE DATABASE names the cluster: the Replicated database replicates every later statement
    assert [s for s in cluster if "ON CLUSTER" in s] == cluster[:1]


def test_embedded_and_server_render_todays_ddl() -> None:
    assert statements("embedded") == statements("server")
    embedded = statements("embedded")
    assert embedded[0] == "CREATE DATABASE IF NOT EXISTS pm"
    assert set(MERGE_TREE_ENGINE.findall("\n".join(embedded))) == {"ReplacingMergeTree"}
    creates = [s for s in embedded if "CREATE TABLE" in s and "schema_migrations" not in s]
    assert len(creates) == 4
    assert all(s.endswith("SETTINGS non_replicated_deduplication_window = 10000") for s in creates)


def test_every_create_table_of_every_migration_file_is_written_for_every_profile() -> None:
    """A later migration that creates a MergeTree table must use the placeholders, or the cluster would get a
    table on one replica and Cloud the single-server dedup window."""
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        for statement in path.read_text().split(";\n"):
            if re.search(r"CREATE TABLE", statement) and "MergeTree" in statement:
                assert "{replicated}" in statement and "SETTINGS {dedup_settings}" in statement, path.name
            assert "ON CLUSTER" not in statement.upper(), f"{path.name}: the Replicated database replicates DDL"


def test_only_the_replicated_profiles_read_with_sequential_consistency_and_only_cluster_waits_for_a_quorum() -> None:
    profiles = deployment.PROFILES
    assert [n for n, p in profiles.items() if p.check_settings] == ["cluster", "cloud"]
    assert all(p.check_settings == {"select_sequential_consistency": 1} for p in profiles.values() if p.check_settings)
    assert [n for n, p in profiles.items() if p.insert_settings] == ["cluster"]
    assert profiles["cluster"].insert_settings == {"insert_quorum": "auto", "insert_quorum_parallel": 0}
    assert deployment.DELETE_SETTINGS == {"lightweight_deletes_sync": 1}


def test_clickhouse_url_sets_host_port_tls_user_password_and_database() -> None:
    settings = ClickHouseSettings(url="https://analyst:p%40ss@abc.eu-west-1.aws.clickhouse.cloud/pm_prod")
    assert (settings.host, settings.port, settings.secure, settings.user, settings.database) == (
        "abc.eu-west-1.aws.clickhouse.cloud", 8443, True, "analyst", "pm_prod"
    )  # fmt: skip
    assert settings.password is not None and settings.password.get_secret_value() == "p@ss"
    assert settings.verify is True and settings.ca_file is None  # TLS verified unless said otherwise
    plain = ClickHouseSettings(url="http://ch-lb.internal")
    assert (plain.port, plain.secure, plain.database) == (8123, False, "polymarket")


@pytest.mark.parametrize("url", ["ftp://host/x", "https://user:secret@/db", "https://host:99999/db"])
def test_a_bad_clickhouse_url_names_the_variable_and_never_shows_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(ClickHouseSettings, url=url)
    assert "CLICKHOUSE_URL" in str(error.value) and "secret" not in str(error.value)


def test_deployment_and_cluster_are_checked_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_DEPLOYMENT", "sharded")
    with pytest.raises(ConfigError, match="CLICKHOUSE_DEPLOYMENT"):
        load(ClickHouseSettings)
    monkeypatch.setenv("CLICKHOUSE_DEPLOYMENT", "cluster")
    monkeypatch.setenv("CLICKHOUSE_CLUSTER", "pm'; DROP")
    with pytest.raises(ConfigError, match="CLICKHOUSE_CLUSTER"):
        load(ClickHouseSettings)


@pytest.mark.parametrize(("version", "verdict"), [("24.8.14.39", "warn"), ("26.3.1.1", "warn"), ("26.8.2.5", "ok"),
                                                  ("26.9.2.1", "ok"), ("27.1", "ok")])  # fmt: skip
def test_doctor_warns_on_a_server_older_than_the_minimum(version: str, verdict: str) -> None:
    class Server:  # the one attribute server_check reads on a single-server profile
        server_version = version

    check = doctor.server_check(Server(), ClickHouseSettings(deployment="cloud"))
    assert (check.verdict, check.data["version"]) == (verdict, version)
    assert ("older than 26.8" in check.detail) == (verdict == "warn") and "deployment cloud" in check.detail


def test_tls_verifies_with_the_system_cas_or_the_ca_file_and_a_missing_file_names_its_variable(tmp_path) -> None:
    secure = ClickHouseSettings(secure=True)
    context = tls_verification(secure)
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert tls_verification(secure.model_copy(update={"verify": False})) is False
    assert tls_verification(ClickHouseSettings()) is False  # plain http: nothing to verify
    with pytest.raises(ConfigError, match="CLICKHOUSE_CA_FILE"):
        tls_verification(secure.model_copy(update={"ca_file": str(tmp_path / "absent.pem")}))


def test_a_user_who_may_not_create_the_database_is_told_to_create_it() -> None:
    """A test double for the server: the embedded ClickHouse has no access control to refuse CREATE DATABASE."""

    class NoCreateRights:
        def query(self, sql: str, parameters: object = None) -> object:
            return type("Result", (), {"result_rows": []})()  # the database does not exist

        def command(self, sql: str) -> None:
            raise DatabaseError("Code: 497. DB::Exception: analyst: Not enough privileges. (ACCESS_DENIED)", code=497)

    settings = ClickHouseSettings(deployment="cloud", user="analyst", database="pm_prod")
    with pytest.raises(ConfigError, match="CLICKHOUSE_DATABASE=pm_prod does not exist and CLICKHOUSE_USER=analyst"):
        ensure_database(NoCreateRights(), settings, deployment.PROFILES["cloud"])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(deployment.PROFILES))
def test_the_fills_view_migration_renders_for_every_profile_in_the_database_alone(name: str) -> None:
    """Migration 007 names no engine and no cluster: a Replicated database replicates its RENAME and CREATE VIEW as
    it does every statement (cluster), and Cloud runs them as written."""
    profile = deployment.PROFILES[name]
    (migration,) = [m for m in load_migrations(database="pm", profile=profile) if m.version == 7]
    rename, view, check = migration.statements
    assert rename.splitlines()[-1] == (
        "RENAME TABLE IF EXISTS pm.order_filled_events TO pm.order_filled_events_before_view"
    )
    assert view.startswith("CREATE VIEW IF NOT EXISTS pm.order_filled_events AS") and view.endswith("FROM pm.trades")
    assert "database = 'pm' AND name = 'order_filled_events'" in check
    assert not [s for s in migration.statements if "ON CLUSTER" in s or "MergeTree" in s or "{" in s]
