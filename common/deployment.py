"""Deployment profiles: the one schema rendered for the ClickHouse it runs on, and the settings the writer sends.

`CLICKHOUSE_DEPLOYMENT` picks one (docs/operations.md, "Where ClickHouse runs"):
- `embedded` / `server`: one node, today's DDL: plain ReplacingMergeTree, the non-replicated dedup window.
- `cluster`: one shard, N replicas, ClickHouse Keeper. The database is created once as a `Replicated` database, so
  every later statement (CREATE, ALTER, CREATE VIEW: the migrations as written) is replicated by the database
  itself, with no ON CLUSTER in the migrations and nothing to re-run when a replica is added; the tables are
  `ReplicatedReplacingMergeTree` with no arguments (the server's default_replica_path `{uuid}`/`{shard}`/`{replica}`
  macros). Chosen over ON CLUSTER on every statement, which would need its own variant of every ALTER a later
  migration adds and leaves a new replica without the tables until someone replays the DDL.
- `cloud`: ClickHouse Cloud: today's DDL (Cloud turns ReplacingMergeTree into SharedReplacingMergeTree and creates
  Replicated databases by itself) without ON CLUSTER or macros, which Cloud refuses or warns against.

A migration file is one source for every profile: `{database}`, and in a CREATE TABLE `ENGINE = {replicated}...`
and `SETTINGS {dedup_settings}` (tests/unit/test_deployment.py fails on a CREATE TABLE without them).

Read-your-own-writes for the unique-insert check (common/unique_insert.py): on `cluster`, inserts need a majority
of replicas (`insert_quorum='auto'`, linearized by `insert_quorum_parallel=0`, which the per-table insert lock makes
free) and the check reads with `select_sequential_consistency=1`, so a replica missing an acknowledged insert throws
instead of answering "absent"; on `cloud` every insert is a quorum insert already and the check alone needs the
setting. Either error is transient: the batch is retried, never treated as new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Deployment = Literal["embedded", "server", "cluster", "cloud"]

# The token's window on one node (dedup log kept on disk per table).
NON_REPLICATED_DEDUP_WINDOW_BLOCKS = 10_000
# On Replicated/Shared tables the block hashes live in Keeper and are dropped past BOTH limits. The longest replay
# horizon of the pipeline is a writer down for a day with its batch pending (a replay otherwise follows within
# STREAM_CLAIM_MIN_IDLE_MS, 60 s, or the insert lock's time to live, 330 s); at one insert per second per table
# a day is 86,400 blocks, so the block count is set above it and the time limit is the one that binds. Past the
# window the natural-key check alone keeps a replay out, and it is exact on these profiles (module docstring).
REPLICATED_DEDUP_WINDOW_BLOCKS = 100_000
REPLICATED_DEDUP_WINDOW_S = 86_400

# The oldest server supported: 26.8, the LTS release docker-compose.yml runs. Every setting and statement used
# predates it (lightweight_deletes_sync came in 24.4, the projection modes of migration 004 in 24.8); the engine the
# tests run is 26.9 (chDB 26.9.2.1). `doctor` warns below it.
MIN_SERVER_VERSION = (26, 8)

# Replaced markets/events rows: wait for the replica that runs the DELETE only. The default (2) waits for every
# replica, so one replica down would hold every markets/events batch for replication_wait_for_inactive_replica_timeout.
DELETE_SETTINGS: Mapping[str, Any] = {"lightweight_deletes_sync": 1}

SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
    "(version UInt32, name String, applied_at DateTime64(3, 'UTC')) "
    "ENGINE = {replicated}ReplacingMergeTree ORDER BY version"
)


@dataclass(frozen=True)
class Profile:
    name: Deployment
    replicated: bool  # Replicated database and Replicated*MergeTree engines
    dedup_settings: str  # the SETTINGS of every MergeTree table
    check_settings: Mapping[str, Any]  # sent with every query of the unique-insert check
    insert_settings: Mapping[str, Any]  # sent with every insert, beside common.clickhouse.INSERT_SETTINGS

    def render(self, sql: str, database: str) -> str:
        """A migration (or any DDL template) as this profile runs it."""
        return (
            sql.replace("{database}", database)
            .replace("{replicated}", "Replicated" if self.replicated else "")
            .replace("{dedup_settings}", self.dedup_settings)
        )

    def create_database(self, database: str, cluster: str) -> str:
        if not self.replicated:
            return f"CREATE DATABASE IF NOT EXISTS {database}"
        # ON CLUSTER for this one statement: every replica gets the database, and from then on the database
        # replicates its own DDL. The Keeper path is the database's name: one pipeline database per Keeper path.
        return (
            f"CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER '{cluster}' "
            f"ENGINE = Replicated('/clickhouse/databases/{database}', '{{shard}}', '{{replica}}')"
        )


_NON_REPLICATED_DEDUP = f"non_replicated_deduplication_window = {NON_REPLICATED_DEDUP_WINDOW_BLOCKS}"
_REPLICATED_DEDUP = (
    f"replicated_deduplication_window = {REPLICATED_DEDUP_WINDOW_BLOCKS}, "
    f"replicated_deduplication_window_seconds = {REPLICATED_DEDUP_WINDOW_S}"
)
SEQUENTIAL_CONSISTENCY: Mapping[str, Any] = {"select_sequential_consistency": 1}
QUORUM_INSERTS: Mapping[str, Any] = {"insert_quorum": "auto", "insert_quorum_parallel": 0}

PROFILES: dict[Deployment, Profile] = {
    "embedded": Profile("embedded", False, _NON_REPLICATED_DEDUP, {}, {}),
    "server": Profile("server", False, _NON_REPLICATED_DEDUP, {}, {}),
    "cluster": Profile("cluster", True, _REPLICATED_DEDUP, SEQUENTIAL_CONSISTENCY, QUORUM_INSERTS),
    "cloud": Profile("cloud", False, _REPLICATED_DEDUP, SEQUENTIAL_CONSISTENCY, {}),
}


def parse_version(text: str) -> tuple[int, ...]:
    """'26.9.2.1' -> (26, 9, 2, 1); what does not parse counts as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in text.split(".")[:4])
