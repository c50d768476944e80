"""ClickHouse: the client factory, numbered migrations, and the batch insert with a deduplication token.

Inserts are synchronous (`async_insert=0`, which ClickHouse 26.2+ no longer defaults to) so "insert returned"
means "rows are in the table", and every batch carries an `insert_deduplication_token` derived from the stream
ids and the rows' keys it holds: a batch re-sent after a crash or a timeout is recognised and dropped by the
table's dedup log.
clickhouse-connect's exceptions are translated here, once (`map_clickhouse_errors()`, and the inserts' own
rejected-or-transient split), so callers only see `common.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog
from clickhouse_connect import get_client
from clickhouse_connect.driver import options as driver_options
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DataError, ProgrammingError

from common import deployment
from common.backoff import compute_backoff_s
from common.config import ClickHouseSettings
from common.errors import ConfigError, RejectedRowsError, TransientSinkError

log = structlog.get_logger()

# clickhouse-connect tests every insert's data for a pandas DataFrame and a numpy array, importing pandas (with
# numpy and pyarrow, installed beside chdb-core) on the first insert: +77 MB RSS in the writer, which never holds
# either. The project sends and reads lists only, so tell the driver the two are absent, as it would find them
# without those packages (its DataFrame and numpy calls, which nothing here uses, then say so).
driver_options.pd = driver_options.pd_time_test = driver_options.np = None

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_RENAME = re.compile(r"^(?:\s*--[^\n]*\n)*\s*RENAME\s")  # a statement that is a RENAME, after its comment lines

# Server error codes that mean "this data is invalid", not "the server is unwell": retrying cannot help.
REJECTED_DATA_CODES = frozenset({6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 76, 117, 131, 190, 321, 407, 472})
# UNKNOWN_STATUS_OF_INSERT: a quorum insert that may or may not have landed. Re-sending it at once with the same
# token has stored it twice (ClickHouse#81260), so the batch goes back to its caller, whose retry checks first.
UNKNOWN_STATUS_CODES = frozenset({319})
ACCESS_DENIED_CODE = 497
# TABLE_ALREADY_EXISTS: what a migration's RENAME meets when an earlier or concurrent run renamed already.
TABLE_EXISTS_CODE = 57

# optimize_on_insert=0: a ReplacingMergeTree then skips collapsing rows of equal key inside each inserted block,
# which finds nothing here: every batch reaches an insert through common/unique_insert.py, which keeps one row per
# id, and merges still collapse whatever slips through (the `unique_keys = False` bench knob). Measured on the
# embedded ClickHouse, 10,000-row inserts: trades 15.1 -> 12.5 and 14.4 -> 13.7, fills 10.9 -> 9.1 and 9.5 -> 8.6
# server CPU-µs per row.
INSERT_SETTINGS = {"async_insert": 0, "insert_deduplicate": 1, "optimize_on_insert": 0}

# What clickhouse-connect serializes in Python, value by value, and the server can take in a cheaper form (see
# `wire_columns`): Native input may carry another type than the table's (input_format_native_allow_types_conversion,
# on by default), and the server converts it in C++.
_DECIMAL_TYPE = re.compile(r"^(Nullable\()?Decimal(32|64|128|256)?\(")
_DATETIME64_TYPE = re.compile(r"^DateTime64\((\d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ColumnData = Sequence[Sequence[Any]]  # a batch of rows as one sequence of values per column, in the columns' order


@contextlib.contextmanager
def map_clickhouse_errors(what: str) -> Iterator[None]:
    """clickhouse-connect's errors (and socket errors) become TransientSinkError(sink="clickhouse"): the server is
    down, restarting, or not migrated yet; the caller retries later or reports ClickHouse as down. Inserts tell
    rejected data apart themselves (`insert_columns`)."""
    try:
        yield
    except (ClickHouseError, OSError) as exc:
        raise TransientSinkError(f"clickhouse {what}: {str(exc)[:500]}", sink="clickhouse") from None


class InsertStatusUnknown(TransientSinkError):
    """The server could not tell whether an insert landed (UNKNOWN_STATUS_CODES): retried only after a check."""


def make_client(settings: ClickHouseSettings, *, database: str | None = None) -> Client:
    """A clickhouse-connect client (HTTP); raises TransientSinkError when the server cannot be reached.

    Its inserts carry the deployment profile's insert settings (the quorum on `cluster`, common/deployment.py).
    """
    with map_clickhouse_errors(f"{settings.host}:{settings.port} unreachable"):
        return get_client(
            host=settings.host,
            port=settings.port,
            username=settings.user,
            password=settings.password.get_secret_value() if settings.password else "",
            database=database if database is not None else settings.database,
            secure=settings.secure,
            verify=settings.verify,
            ca_cert=settings.ca_file,
            connect_timeout=settings.connect_timeout_s,
            send_receive_timeout=settings.send_receive_timeout_s,
            settings={"async_insert": 0, **deployment.PROFILES[settings.deployment].insert_settings},
            autogenerate_session_id=False,
            compress=compression(settings),
        )


def ping(settings: ClickHouseSettings, *, timeout_s: float) -> None:
    """ClickHouse's (and the embedded server's) `/ping` answers `Ok.` within `timeout_s`, else TransientSinkError.

    The message names the failure's kind only (HTTP status or exception class), never the address.
    """
    url = f"{'https' if settings.secure else 'http'}://{settings.host}:{settings.port}/ping"
    try:
        response = httpx.get(url, timeout=timeout_s, verify=tls_verification(settings))
    except httpx.HTTPError as exc:
        raise TransientSinkError(f"clickhouse ping: {type(exc).__name__}", sink="clickhouse") from None
    if response.status_code != 200 or not response.content.startswith(b"Ok."):
        raise TransientSinkError(f"clickhouse ping: HTTP {response.status_code}", sink="clickhouse")


def tls_verification(settings: ClickHouseSettings) -> ssl.SSLContext | bool:
    """What httpx verifies the server's certificate with: CLICKHOUSE_CA_FILE's CAs, the system's, or nothing (also
    when there is no TLS: httpx then ignores it, and no context is built)."""
    if not (settings.secure and settings.verify):
        return False
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"CLICKHOUSE_CA_FILE: cannot read a CA bundle from {settings.ca_file}: {exc}") from None


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def compression(settings: ClickHouseSettings) -> str | bool:
    if settings.compress == "auto":
        return False if settings.host in LOOPBACK_HOSTS else "lz4"
    return False if settings.compress == "none" else settings.compress


def batch_token(source: str, ids: Sequence[str], row_keys: Sequence[str] = ()) -> str:
    """The dedup token of a batch: a digest of where its rows come from, the exact ids they hold, in order, and
    what the rows are (`row_keys`: their natural keys, with a version where rows change).

    The one token scheme of the project: the writer passes a stream, its entry ids and the rows' keys, `replay`
    its namespace and trade ids. It depends on nothing else (no clock), so the same batch sent again gets the same
    token. The rows' keys make it the batch's own: after a Redis failover, a new primary whose clock lags the lost
    one's hands out stream ids that one had used, for other entries; with stream ids alone, that other batch would
    get the old batch's token, and ClickHouse would drop it as a retry after the unique check found it absent.
    """
    digest = hashlib.sha1(source.encode())
    # each list joined and hashed in one call: 0.03 CPU-µs per stream id, 0.2 per fill id (133 characters)
    if ids:
        digest.update(("," + ",".join(ids)).encode())
    if row_keys:
        digest.update(("\n" + ",".join(row_keys)).encode())
    return f"{source}:{ids[0] if ids else ''}:{len(ids)}:{digest.hexdigest()}"


def _is_rejection(exc: Exception) -> bool:
    # DataError/ProgrammingError: the client could not even serialize the rows into the column types.
    code = getattr(exc, "code", None)
    return code in REJECTED_DATA_CODES or isinstance(
        exc, (DataError, ProgrammingError, TypeError, ValueError, OverflowError)
    )


def wire_columns(column_types: Sequence[str], data: ColumnData) -> tuple[list[str], list[Sequence[Any]]]:
    """The types and columns to send: cheaper to serialize than the table's own, and stored the same.

    Decimals held as text (trades' exact amounts) go as `String`: the server parses the text exactly, as the client
    did, and refuses bad text with a data error (a rejection, as before). A DateTime64 column holding one aware
    datetime throughout (the batch's `ingested_at`) goes as its ticks, computed once instead of once per row.
    Measured on 10,000 trades: the two amounts 2.48 -> 0.41 CPU-µs per row, `ingested_at` 1.15 -> 0.09.
    LowCardinality(String) sent as String was slower (0.46 -> 0.68 for four columns), so it goes as it is.
    """
    types, columns = list(column_types), list(data)
    for at, (type_name, column) in enumerate(zip(column_types, data, strict=True)):
        if _DECIMAL_TYPE.match(type_name) and all(type(value) is str for value in column):
            types[at] = "String"
        elif (precision := _DATETIME64_TYPE.match(type_name)) and column:
            first = column[0]
            if type(first) is datetime and first.tzinfo is not None and all(value is first for value in column):
                micros = (first - _EPOCH) // timedelta(microseconds=1)
                columns[at] = [micros * 10 ** int(precision.group(1)) // 1_000_000] * len(column)
    return types, columns


def insert_columns(
    client: Client,
    table: str,
    columns: Sequence[str],
    data: ColumnData,
    token: str,
    column_types: Sequence[str] | None = None,
) -> None:
    """Insert column-oriented `data` once; translate failures into TransientSinkError or RejectedRowsError.

    Passing `column_types` (from `describe_columns`) saves a DESCRIBE round trip per insert, and lets the columns go
    in a cheaper form (`wire_columns`).
    """
    # clickhouse-connect's InsertContext keeps the columns and a bound method of its own: a reference cycle, so
    # each insert's columns outlived it until the next collection (writer RSS 118 -> 152 MB over the bench's
    # latency phase, whose small batches rarely trigger one). It gets a list of our own, emptied after the insert.
    sent: list[Sequence[Any]] = []
    try:
        wire_types, sent = wire_columns(column_types, data) if column_types else (None, list(data))
        client.insert(
            table,
            sent,
            column_names=list(columns),
            column_type_names=wire_types,
            column_oriented=True,
            settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
        )
    except (ClickHouseError, TypeError, ValueError, OverflowError) as exc:
        if _is_rejection(exc):
            raise RejectedRowsError(
                f"clickhouse rejected rows for {table}: {str(exc)[:500]}", sink="clickhouse"
            ) from None
        if getattr(exc, "code", None) in UNKNOWN_STATUS_CODES:
            raise InsertStatusUnknown(f"clickhouse insert into {table}: {str(exc)[:500]}", sink="clickhouse") from None
        raise TransientSinkError(f"clickhouse insert into {table}: {str(exc)[:500]}", sink="clickhouse") from None
    finally:
        sent.clear()


@dataclass(frozen=True)
class InsertResult:
    rows: int
    duration_s: float
    attempts: int


def describe_columns(client: Client, table: str) -> dict[str, str]:
    """Column name -> ClickHouse type of `table`."""
    with map_clickhouse_errors(f"describe {table}"):
        return {row[0]: row[1] for row in client.query(f"DESCRIBE TABLE {table}").result_rows}


async def insert_batch(
    client: Client,
    table: str,
    columns: Sequence[str],
    data: ColumnData,
    token: str,
    *,
    column_types: Sequence[str] | None = None,
    max_attempts: int = 5,
    backoff_base_s: float = 0.2,
    backoff_max_s: float = 5.0,
) -> InsertResult:
    """Insert a batch, retrying transient failures with the same token (so a retry can't double it).

    Raises TransientSinkError when ClickHouse stays unavailable (the caller keeps the batch pending and tries
    again later) and RejectedRowsError when ClickHouse refuses the data itself.
    """
    started = time.perf_counter()
    attempt = 0
    while True:
        attempt += 1
        try:
            await asyncio.to_thread(insert_columns, client, table, columns, data, token, column_types)
            rows = len(data[0]) if data else 0
            return InsertResult(rows=rows, duration_s=time.perf_counter() - started, attempts=attempt)
        except TransientSinkError as exc:
            if attempt >= max_attempts or isinstance(exc, InsertStatusUnknown):
                raise
            delay_s = compute_backoff_s(attempt, base_s=backoff_base_s, max_s=backoff_max_s)
            log.warning(
                "insert failed; retrying", table=table, attempt=attempt, delay_s=round(delay_s, 3), error=str(exc)
            )
            await asyncio.sleep(delay_s)


async def insert_columns_isolating_rejects(
    client: Client,
    table: str,
    columns: Sequence[str],
    data: ColumnData,
    token: str,
    *,
    column_types: Sequence[str] | None = None,
    max_attempts: int = 5,
) -> list[tuple[int, str]]:
    """Insert the rows of column-oriented `data`; if ClickHouse rejects the data, bisect to find the rejected rows
    and insert the others.

    Returns (index, reason) of each rejected row. Halves get tokens derived from the parent's, so a replayed
    batch splits, and deduplicates, exactly the same way.
    """
    try:
        await insert_batch(client, table, columns, data, token, column_types=column_types, max_attempts=max_attempts)
        return []
    except RejectedRowsError as exc:
        if len(data[0]) == 1:
            return [(0, str(exc))]
    middle = len(data[0]) // 2
    left = await insert_columns_isolating_rejects(
        client, table, columns, [column[:middle] for column in data], f"{token}/0",
        column_types=column_types, max_attempts=max_attempts,
    )  # fmt: skip
    right = await insert_columns_isolating_rejects(
        client, table, columns, [column[middle:] for column in data], f"{token}/1",
        column_types=column_types, max_attempts=max_attempts,
    )  # fmt: skip
    return left + [(index + middle, reason) for index, reason in right]


# --- migrations --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations(
    directory: Path = MIGRATIONS_DIR, *, database: str, profile: deployment.Profile = deployment.PROFILES["server"]
) -> list[Migration]:
    """Every migration, rendered for `profile` (common/deployment.py): one file serves every deployment."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name must look like 001_name.sql: {path.name}")
        sql = profile.render(path.read_text(), database)
        statements = tuple(part.strip() for part in sql.split(";\n") if _has_sql(part))
        migrations.append(Migration(int(match.group(1)), match.group(2), statements))
    return migrations


def _has_sql(part: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in part.splitlines())


def apply_migrations(settings: ClickHouseSettings) -> list[int]:
    """Check the server's shape, create the database where absent and apply every migration not yet recorded in
    `schema_migrations`; idempotent.

    Every statement is `IF NOT EXISTS` (or `OR REPLACE`, or a no-op when repeated, or a RENAME done already: see
    `run_migration_statement`), so services starting together, or a second run through a load balancer landing on
    another replica, change nothing. On `cluster`
    `schema_migrations` is itself replicated and read with sequential consistency, so every replica agrees on it.
    Raises ConfigError when the deployment is one the pipeline refuses (the `refuse_*` checks below).
    """
    profile = deployment.PROFILES[settings.deployment]
    database = settings.database
    client = make_client(settings, database="default")
    with contextlib.closing(client), map_clickhouse_errors("migrations failed"):
        refuse_sharded_cluster(client, settings)
        ensure_database(client, settings, profile)
        refuse_distributed_tables(client, database)
        client.command(profile.render(deployment.SCHEMA_MIGRATIONS_DDL, database))
        applied = {
            row[0]
            for row in client.query(
                f"SELECT DISTINCT version FROM {database}.schema_migrations", settings=dict(profile.check_settings)
            ).result_rows
        }
        done = []
        for migration in load_migrations(database=database, profile=profile):
            if migration.version in applied:
                continue
            for statement in migration.statements:
                run_migration_statement(client, statement)
            client.insert(
                f"{database}.schema_migrations",
                [[migration.version, migration.name, datetime.now(UTC)]],
                column_names=["version", "name", "applied_at"],
            )
            log.info("applied migration", version=migration.version, name=migration.name, deployment=profile.name)
            done.append(migration.version)
        return done


def run_migration_statement(client: Client, statement: str) -> None:
    """Run one statement of a migration. A RENAME whose target exists already was done by an earlier run (one that
    stopped before recording its migration) or by a service migrating at the same moment: RENAME has `IF EXISTS`
    for its source and no `IF NOT EXISTS` for its target, so the migration checks its end state itself (007)."""
    try:
        client.command(statement)
    except ClickHouseError as exc:
        if not (_RENAME.match(statement) and getattr(exc, "code", None) == TABLE_EXISTS_CODE):
            raise
        log.info("rename done already", error=str(exc)[:300])


SUPPORTED_SHAPE = 'one shard with N replicas (docs/operations.md, "Where ClickHouse runs")'


def refuse_sharded_cluster(client: Client, settings: ClickHouseSettings) -> None:
    """On `cluster`: the remote_servers cluster (CLICKHOUSE_CLUSTER) and the Replicated database's own cluster must
    have one shard. ReplacingMergeTree collapses within a shard only and the check would read one shard's ids."""
    if not deployment.PROFILES[settings.deployment].replicated:
        return
    rows = client.query(
        "SELECT cluster, uniqExact(shard_num) FROM system.clusters WHERE cluster IN ({names:Array(String)}) "
        "GROUP BY cluster HAVING uniqExact(shard_num) > 1",
        parameters={"names": [configured_cluster(client, settings), settings.database]},
    ).result_rows
    if rows:
        cluster, shards = rows[0]
        raise ConfigError(
            f"CLICKHOUSE_DEPLOYMENT=cluster: cluster {cluster!r} has {shards} shards; the pipeline supports "
            f"{SUPPORTED_SHAPE}: on several shards ReplacingMergeTree only collapses within a shard and the "
            "writer's check reads one shard, so rows would be stored twice. Use a one-shard cluster (add replicas "
            "for availability) or set CLICKHOUSE_CLUSTER to one."
        )


def configured_cluster(client: Client, settings: ClickHouseSettings) -> str:
    """CLICKHOUSE_CLUSTER, its default `{cluster}` read from the server's macros ("" when it has none)."""
    if settings.cluster != "{cluster}":
        return settings.cluster
    rows = client.query("SELECT substitution FROM system.macros WHERE macro = 'cluster'").result_rows
    return str(rows[0][0]) if rows else ""


def refuse_distributed_tables(client: Client, database: str) -> None:
    """No table of the pipeline's database may be Distributed: the lightweight DELETE of replaced markets is
    refused through one, its inserts are asynchronous by default (so the check may not see them) and rows are
    spread over shards, each collapsing alone."""
    names = [row[0] for row in client.query(
        "SELECT name FROM system.tables WHERE database = {database:String} AND engine = 'Distributed' ORDER BY name",
        parameters={"database": database},
    ).result_rows]  # fmt: skip
    if names:
        raise ConfigError(
            f"CLICKHOUSE_DATABASE={database} holds Distributed tables ({', '.join(names)}); the pipeline supports "
            f"{SUPPORTED_SHAPE} and writes the tables themselves: through a Distributed table the lightweight DELETE "
            "of replaced markets is refused, inserts are asynchronous by default, and ReplacingMergeTree collapses "
            "only within a shard. Point CLICKHOUSE_DATABASE at a database of replicated tables on one shard "
            "(CLICKHOUSE_DEPLOYMENT=cluster) instead."
        )


def ensure_database(client: Client, settings: ClickHouseSettings, profile: deployment.Profile) -> None:
    """Create the database only when it is absent (a Cloud user may hold tables rights only), as the profile wants
    it; refuse a single-server database under the cluster profile, whose tables would not be replicated."""
    database = settings.database
    rows = client.query("SELECT engine FROM system.databases WHERE name = {database:String}",
                        parameters={"database": database}).result_rows  # fmt: skip
    if rows:
        if profile.replicated and rows[0][0] != "Replicated":
            raise ConfigError(
                f"CLICKHOUSE_DEPLOYMENT=cluster: database {database} exists with engine {rows[0][0]}, not Replicated; "
                "its tables would stay on this replica alone. Move it to a Replicated database first "
                '(docs/operations.md, "From one server to a cluster").'
            )
        return
    try:
        client.command(profile.create_database(database, settings.cluster))
    except ClickHouseError as exc:
        if getattr(exc, "code", None) != ACCESS_DENIED_CODE:
            raise
        raise ConfigError(
            f"CLICKHOUSE_DATABASE={database} does not exist and CLICKHOUSE_USER={settings.user} may not create it: "
            "create it (or grant CREATE DATABASE), then start again"
        ) from None
