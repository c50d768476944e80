"""The chDB side of the embedded ClickHouse: SQL sniffing, ClickHouse-style errors and a pool of chDB connections.

chDB runs one engine per process; `chdb.connect(path)` hands out any number of connection handles to it. One handle
runs one query at a time (two threads on one handle take twice as long, measured), while separate handles run in
parallel and release the GIL, so every request borrows a handle: sessionless requests from a pool, requests with a
`session_id` from a handle kept for that session (its `SET`/`USE` state lives on the handle, as in a server session).

Per-request settings (URL parameters such as `insert_deduplication_token`) are applied with `SET` on the borrowed
handle, and a handle remembers what it was given: the next request only pays for settings that differ. A handle
whose settings cannot be put back (e.g. after `readonly=1`) is closed and replaced.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import chdb
import orjson

# ClickHouse's exceptionCodeToHTTPStatus, keyed by error name (chDB messages end with "(NAME)").
_STATUS_BY_NAME: dict[str, int] = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE"), 403),
    **dict.fromkeys(
        (
            "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ),
        400,
    ),
    **dict.fromkeys(
        (
            "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE",
        ),
        404,
    ),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "CANNOT_SCHEDULE_TASK": 503,
    "TIMEOUT_EXCEEDED": 408,
}  # fmt: skip

_CODE_RE = re.compile(r"Code: (\d+)\. ")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*$")
_VERSION_SUFFIX_RE = re.compile(r"\s*\(version [^)]*\)\s*$")

# Statements that produce a result set (ClickHouse sends X-ClickHouse-Format for these).
READ_WORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "("})
# Statements that change the state of the connection they run on.
CONTROL_WORDS = frozenset({"SET", "USE"})


class ClickHouseError(Exception):
    """An error as ClickHouse reports it: numeric code, symbolic name and the message after `DB::Exception: `."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message

    @property
    def http_status(self) -> int:
        return _STATUS_BY_NAME.get(self.name, 500)

    def render(self, version: str) -> str:
        """The response body ClickHouse writes: `Code: 62. DB::Exception: ... (SYNTAX_ERROR) (version 26.9.2.1)`."""
        return f"Code: {self.code}. DB::Exception: {self.message} ({self.name}) (version {version})\n"

    @classmethod
    def from_chdb(cls, exc: BaseException) -> ClickHouseError:
        """chDB raises plain exceptions whose text holds `Code: NN. DB::Exception: ... (NAME)`, sometimes prefixed."""
        text = str(exc)
        code_match = _CODE_RE.search(text)
        if code_match is None:
            return cls(1001, "STD_EXCEPTION", text.strip())
        body = _VERSION_SUFFIX_RE.sub("", text[code_match.end() :]).strip()
        body = body.removeprefix("DB::Exception: ")
        name_match = _NAME_RE.search(body)
        name = name_match.group(1) if name_match else "UNKNOWN_EXCEPTION"
        if name_match:
            body = body[: name_match.start()].rstrip()
        return cls(int(code_match.group(1)), name, body)


# ---- SQL sniffing: just enough lexing to find the statement kind, a FORMAT clause and where INSERT data starts.

_TOKEN_RE = re.compile(
    rb"""(?P<ws>\s+)
    |(?P<comment>--[^\n]*|/\*.*?\*/)
    |(?P<quoted>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`)
    |(?P<word>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>.)""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class InsertSplit:
    """An `INSERT ... FORMAT x` (or `VALUES`) statement cut where its data begins."""

    query: str  # the statement without its FORMAT clause, as chDB's send_insert wants it
    fmt: str
    data_offset: int  # index in the SQL bytes where the data starts


@dataclass(frozen=True)
class SqlShape:
    first_word: str
    output_format: str | None = None  # the query's own FORMAT clause, if any
    insert: InsertSplit | None = None
    statement_count: int = 1


def _tokens(sql: bytes) -> Iterator[tuple[str, bytes, int, int]]:
    """Significant tokens as (kind, text, start, end); lazily, so scanning stops before any INSERT data."""
    for match in _TOKEN_RE.finditer(sql):
        kind = match.lastgroup or "punct"
        if kind not in ("ws", "comment"):
            yield kind, match.group(), match.start(), match.end()


def _data_start(sql: bytes, pos: int) -> int:
    """ClickHouse's rule: data starts after the first newline following the format name, if there is one."""
    while pos < len(sql) and sql[pos] in b" \t\f":
        pos += 1
    if sql.startswith(b"\r", pos):
        pos += 1
    if sql.startswith(b"\n", pos):
        pos += 1
    return pos


def analyze_sql(sql: bytes) -> SqlShape:
    """Find the statement kind, a top-level FORMAT clause and, for an INSERT with data, where the data begins."""
    tokens = _tokens(sql)
    first = next(tokens, None)
    if first is None:
        return SqlShape(first_word="", statement_count=0)
    first_word = first[1].decode().upper() if first[0] == "word" else first[1].decode()
    depth, previous, statements = 0, first_word, 1
    is_insert = first_word == "INSERT"
    output_format: str | None = None
    for kind, text, start, end in tokens:
        upper = text.decode(errors="replace").upper()
        if kind == "punct" and text in b"([":
            depth += 1
        elif kind == "punct" and text in b")]":
            depth -= 1
        elif kind == "punct" and text == b";" and depth == 0:
            statements += 1 if next(tokens, None) is not None else 0
            break
        elif depth == 0 and kind == "word" and is_insert and upper in ("SELECT", "WITH", "INFILE"):
            is_insert = False  # INSERT ... SELECT and FROM INFILE carry no data in the request
        elif depth == 0 and kind == "word" and is_insert and upper == "VALUES":
            return SqlShape(first_word, insert=InsertSplit(sql[:start].decode(), "Values", end))
        elif depth == 0 and kind == "word" and upper == "FORMAT" and previous not in ("INTO", "TABLE"):
            name = next(tokens, None)
            if name is not None and name[0] == "word":
                output_format = name[1].decode()
                if is_insert:
                    split = InsertSplit(sql[:start].decode(), output_format, _data_start(sql, name[3]))
                    return SqlShape(first_word, insert=split)
        previous = upper
    return SqlShape(first_word, output_format=output_format, statement_count=statements)


# ---- the engine: connection handles, sessions, settings.


@dataclass
class Job:
    """One query as the HTTP layer hands it over."""

    sql: bytes
    shape: SqlShape
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # query parameters ({name:Type} placeholders)
    database: str | None = None
    default_format: str = "TabSeparated"
    data: Sequence[bytes | memoryview] = ()  # INSERT data after the statement, in order


@dataclass(frozen=True)
class Outcome:
    body: bytes
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    elapsed_s: float = 0.0


class _StaleHandle(Exception):
    """The handle's settings could not be restored; it must be replaced."""


class Handle:
    """A chDB connection plus the settings and database this server has put on it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.applied: dict[str, str] = {}  # URL settings currently SET, name -> value
        self.baseline: dict[str, str] = {}  # a session's own SET values, restored instead of DEFAULT
        self.database = "default"
        self.baseline_database = "default"
        self.closed = False

    def prepare(self, settings: dict[str, str], database: str | None) -> None:
        for key in [key for key in self.applied if key not in settings]:
            restored = self.baseline.get(key)
            try:
                self._set(key, restored)
            except Exception as exc:
                raise _StaleHandle(key) from exc
            del self.applied[key]
        # readonly goes last: once set, it forbids further SETs in the same request.
        for key, value in sorted(settings.items(), key=lambda item: item[0] == "readonly"):
            if self.applied.get(key) != value:
                self._set(key, value)
                self.applied[key] = value
        target = database or self.baseline_database
        if target != self.database:
            self.conn.query(f"USE {quote_identifier(target)}", "TabSeparated")
            self.database = target

    def _set(self, key: str, value: str | None) -> None:
        literal = "DEFAULT" if value is None else quote_string(value)
        self.conn.query(f"SET {quote_identifier(key)} = {literal}", "TabSeparated")

    def capture_baseline(self) -> None:
        """After a SET/USE in a session: what the session now holds becomes what URL settings fall back to."""
        rows = self.conn.query("SELECT name, value FROM system.settings WHERE changed", "JSONCompactEachRow")
        self.baseline = dict(_json_rows(rows.bytes()))
        self.applied.clear()
        self.database = self.conn.query("SELECT currentDatabase()", "TabSeparatedRaw").bytes().decode().strip()
        self.baseline_database = self.database

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):  # closing is best effort; the engine keeps running
            self.conn.close()


# What the embedded engine runs with beyond chDB's defaults (docs/performance-fleet.md, "chDB's own work"):
# - memory_worker_period_ms: the server setting's 100 ms has a thread read the process's RSS and jemalloc's
#   stats ten times a second, 0.16 % of a core on an idle engine; once a second is ample for a server whose
#   memory limit (90 % of RAM) is far from what it holds, and purging still happens when the limit nears;
# - query_profiler_*_period_ns: the sampling profilers arm a timer on every query thread for trace_log, a table
#   chDB does not keep; 0 leaves them off (a per-connection setting: every handle is opened with it).
ENGINE_SETTINGS = {
    "memory_worker_period_ms": "1000",
    "query_profiler_real_time_period_ns": "0",
    "query_profiler_cpu_time_period_ns": "0",
}


def connection_string(data_dir: str) -> str:
    """chDB's connection string for a folder, or for a connection string with parameters of its own (a test's
    config file), plus ENGINE_SETTINGS: its parameters become the engine's startup settings."""
    base = data_dir if data_dir.startswith("file:") else f"file:{data_dir}"
    return f"{base}{'&' if '?' in base else '?'}{urlencode(ENGINE_SETTINGS)}"


@dataclass
class _Session:
    handle: Handle
    timeout_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)


class Engine:
    """The one chDB engine of this process, shared by all requests; every method blocks (run it in a thread)."""

    def __init__(self, data_dir: str) -> None:
        self._connection = connection_string(data_dir)
        # The first handle opens the engine: it fails here, early, if another process holds the directory.
        self._anchor = chdb.connect(self._connection)
        self.version, self.timezone = _version_and_timezone(self._anchor)
        self._pool: list[Handle] = []
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._closed = False

    def execute(self, job: Job, session_id: str | None = None, session_timeout_s: float = 60.0) -> Outcome:
        if session_id:
            return self._execute_in_session(job, session_id, session_timeout_s)
        handle = self._checkout()
        try:
            handle = self._prepared(handle, job)
            return _run(handle.conn, job)
        finally:
            # SET/USE without a session last one query, as on a server: that handle is not reused.
            self._checkin(handle, keep=job.shape.first_word not in CONTROL_WORDS)

    def has_session(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._sessions

    def close(self) -> None:
        """Close every handle; the engine shuts down (and flushes) when the last one goes."""
        with self._lock:
            self._closed = True
            handles = self._pool + [session.handle for session in self._sessions.values()]
            self._pool, self._sessions = [], {}
        for handle in handles:
            handle.close()
        self._anchor.close()

    def _execute_in_session(self, job: Job, session_id: str, timeout_s: float) -> Outcome:
        session = self._acquire_session(session_id, timeout_s)
        try:
            if session.handle.closed:
                session.handle = self._new_handle()  # the session's SET state went with the stale handle
            if job.shape.first_word not in CONTROL_WORDS:
                session.handle = self._prepared(session.handle, job)
                return _run(session.handle.conn, job)
            session.handle = self._prepared(session.handle, Job(b"", job.shape))
            try:
                return _run(session.handle.conn, job)
            finally:
                session.handle.capture_baseline()
        finally:
            session.last_used = time.monotonic()
            session.lock.release()

    def _prepared(self, handle: Handle, job: Job) -> Handle:
        """The handle with the job's settings on it, or a fresh handle if the old one's settings would not go."""
        try:
            handle.prepare(job.settings, job.database)
            return handle
        except _StaleHandle:
            handle.close()
        except Exception as exc:
            raise ClickHouseError.from_chdb(exc) from None
        fresh = self._new_handle()
        try:
            fresh.prepare(job.settings, job.database)
        except Exception as exc:
            fresh.close()
            raise ClickHouseError.from_chdb(exc) from None
        return fresh

    def _acquire_session(self, session_id: str, timeout_s: float) -> _Session:
        with self._lock:
            self._expire_sessions()
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = _Session(self._new_handle(), timeout_s)
            session.timeout_s = timeout_s
            if not session.lock.acquire(blocking=False):
                raise ClickHouseError(
                    373, "SESSION_IS_LOCKED", f"Session {session_id} is locked by a concurrent client."
                )
            return session

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for session_id, session in list(self._sessions.items()):
            if now - session.last_used > session.timeout_s and session.lock.acquire(blocking=False):
                del self._sessions[session_id]
                session.handle.close()

    def _checkout(self) -> Handle:
        with self._lock:
            if self._closed:
                raise ClickHouseError(210, "NETWORK_ERROR", "The server is shutting down.")
            if self._pool:
                return self._pool.pop()
        return self._new_handle()

    def _checkin(self, handle: Handle, keep: bool) -> None:
        with self._lock:
            if keep and not handle.closed and not self._closed:
                self._pool.append(handle)
                return
        handle.close()

    def _new_handle(self) -> Handle:
        return Handle(chdb.connect(self._connection))


def _run(conn: Any, job: Job) -> Outcome:
    # Wall time: chDB's own elapsed() for a streamed insert counts from long before the insert began.
    started = time.perf_counter()
    try:
        if job.shape.insert is not None:
            written_rows, written_bytes = _insert(conn, job.shape.insert, job.data)
            return Outcome(b"", written_rows=written_rows, written_bytes=written_bytes, elapsed_s=_since(started))
        result = conn.query(job.sql, job.default_format, params=job.params)
    except ClickHouseError:
        raise
    except Exception as exc:
        raise ClickHouseError.from_chdb(exc) from None
    body = result.bytes() or b""
    return Outcome(body, read_rows=result.rows_read(), read_bytes=result.bytes_read(), elapsed_s=_since(started))


def _insert(conn: Any, split: InsertSplit, data: Sequence[bytes | memoryview]) -> tuple[int, int]:
    """Stream the request's data straight into chDB's inserter: no temp file, no SQL text built from rows."""
    inserter = conn.send_insert(split.query, split.fmt)
    try:
        for chunk in data:
            if len(chunk):
                inserter.append(chunk)
        result = inserter.finish()
    except BaseException:
        with contextlib.suppress(Exception):  # the insert's own error is the one to report
            inserter.cancel()
        raise
    return result.rows_written, result.bytes_written


def _since(started: float) -> float:
    return time.perf_counter() - started


def _version_and_timezone(conn: Any) -> tuple[str, str]:
    row = conn.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().strip()
    version, timezone = row.split("\t")
    return version, timezone


def _json_rows(body: bytes) -> Iterator[tuple[str, str]]:
    for line in body.splitlines():
        name, value = orjson.loads(line)
        yield name, value


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value: str) -> str:
    """A SQL string literal; ClickHouse converts a quoted value to the setting's type."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
