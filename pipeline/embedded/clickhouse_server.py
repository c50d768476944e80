"""Embedded ClickHouse: the chDB engine served over ClickHouse's HTTP interface.

Why it exists: chDB (ClickHouse as a library) lets only one process open a data folder, and a process can hold only
one folder. So one process owns `data/clickhouse` and everything else (services, `curl`, clickhouse-connect, any
ClickHouse HTTP client) talks to it over HTTP exactly as to a ClickHouse server.

What it speaks (the parts of ClickHouse's HTTP interface clients use): the query in the `query` parameter, the body,
or both; `FORMAT` clauses and `default_format`; `INSERT ... FORMAT x` with the data in the body (chunked or not,
`Content-Encoding` lz4/zstd/gzip/deflate); response compression on `enable_http_compression=1` + `Accept-Encoding`;
any other URL parameter as a setting for that query; `param_<name>` query parameters; `database`, `query_id`,
`session_id`; errors with ClickHouse's HTTP status, `X-ClickHouse-Exception-Code` and message; basic auth or
`X-ClickHouse-User`/`X-ClickHouse-Key` or `user`/`password` parameters; `/ping`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import gzip
import hmac
import os
import signal
import socket
import sys
import tempfile
import uuid
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import lz4.frame
import orjson
import structlog
import uvicorn

from common.config import ClickHouseSettings, load
from common.errors import ConfigError
from common.log import configure_logging
from pipeline.embedded.chdb_http import READ_WORDS, ClickHouseError, Engine, Job, Outcome, SqlShape, analyze_sql

try:  # zstd ships with clickhouse-connect (backports.zstd on Python < 3.14)
    from backports import zstd
except ImportError:  # pragma: no cover - Python 3.14+ has it in the standard library
    try:
        from compression import zstd  # type: ignore[no-redef]
    except ImportError:
        zstd = None  # type: ignore[assignment]

log = structlog.get_logger()

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# URL parameters the HTTP layer consumes itself; any other one (except param_*) is a setting for the query.
TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
        "session_timeout", "session_check", "close_session", "compress", "decompress", "buffer_size",
        "wait_end_of_query", "client_protocol_version", "role", "stacktrace",
    }
)  # fmt: skip
# Real settings that only steer ClickHouse's HTTP output; chDB has no HTTP layer, so SETting them only costs time.
HTTP_ONLY_SETTINGS = frozenset(
    {
        "enable_http_compression", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "http_zlib_compression_level", "cancel_http_readonly_queries_on_client_close", "http_response_buffer_size",
        "http_native_compression_disable_checksumming_on_decompress", "http_wait_end_of_query",
    }
)  # fmt: skip
# Statements a GET may not run (GET implies readonly=2); anything else, typos included, is left to the engine.
WRITE_WORDS = frozenset(
    {
        "INSERT", "CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "OPTIMIZE", "DELETE", "UPDATE", "ATTACH",
        "DETACH", "SYSTEM", "GRANT", "REVOKE", "KILL", "EXCHANGE", "UNDROP", "MOVE", "BACKUP", "RESTORE",
    }
)  # fmt: skip
RESPONSE_ENCODINGS = ("zstd", "lz4", "gzip", "deflate") if zstd is not None else ("lz4", "gzip", "deflate")
DEFAULT_SESSION_TIMEOUT_S = 60.0
MAX_SESSION_TIMEOUT_S = 3600.0
KEEP_ALIVE_TIMEOUT_S = 30  # ClickHouse's keep_alive_timeout; clients reuse idle connections within it
RESPONSE_COMPRESSION_LEVEL = 3  # ClickHouse's http_zlib_compression_level default


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password='***')"


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Request:
    method: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes


# ---- request → job


def check_credentials(expected: Credentials, request: Request) -> None:
    """Accept the credentials the way ClickHouse does: basic auth, X-ClickHouse-* headers or URL parameters."""
    user, password = "default", ""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
    elif "x-clickhouse-user" in request.headers or "x-clickhouse-key" in request.headers:
        user = request.headers.get("x-clickhouse-user", "default")
        password = request.headers.get("x-clickhouse-key", "")
    elif "user" in request.params or "password" in request.params:
        user = request.params.get("user", "default")
        password = request.params.get("password", "")
    user_ok = hmac.compare_digest(user.encode(), expected.user.encode())
    if not (hmac.compare_digest(password.encode(), expected.password.encode()) and user_ok):
        message = f"{user}: Authentication failed: password is incorrect, or there is no user with such name."
        raise ClickHouseError(516, "AUTHENTICATION_FAILED", message)


def decompress_body(body: bytes, encoding: str) -> bytes:
    """Undo Content-Encoding; clickhouse-connect sends one lz4/zstd frame per block, so frames are concatenated."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding == "lz4":
            return _lz4_frames(body)
        if encoding == "zstd" and zstd is not None:
            return zstd.decompress(body)
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except Exception as exc:
        raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress {encoding} request body: {exc}") from None
    raise ClickHouseError(36, "BAD_ARGUMENTS", f"Unknown Content-Encoding of HTTP request: {encoding}")


def _lz4_frames(body: bytes) -> bytes:
    parts, rest = [], body
    while rest:
        decompressor = lz4.frame.LZ4FrameDecompressor()
        parts.append(decompressor.decompress(rest))
        if not decompressor.eof:
            raise ValueError("truncated lz4 frame")
        rest = decompressor.unused_data
    return b"".join(parts)


def split_statement(query: bytes, body: bytes) -> tuple[bytes, SqlShape, list[bytes | memoryview]]:
    """(SQL, its shape, INSERT data). As in ClickHouse the statement text is the `query` parameter, then a newline,
    then the body; for an INSERT the data starts where the shape says, which may be inside the parameter."""
    if not query:
        shape = analyze_sql(body)
        return body, shape, _data_after(body, shape, b"")
    head = query + b"\n"
    shape = analyze_sql(head)
    if shape.insert is not None or not body:
        return head, shape, _data_after(head, shape, body)
    text = head + body  # the statement itself continues in the body: rare, so the copy is fine
    shape = analyze_sql(text)
    return text, shape, _data_after(text, shape, b"")


def _data_after(text: bytes, shape: SqlShape, body: bytes) -> list[bytes | memoryview]:
    if shape.insert is None:
        return []
    inline = memoryview(text)[shape.insert.data_offset :]
    return [chunk for chunk in (inline, body) if len(chunk)]


def build_job(request: Request) -> Job:
    body = decompress_body(request.body, request.headers.get("content-encoding", ""))
    sql, shape, data = split_statement(request.params.get("query", "").encode(), body)
    if shape.statement_count == 0:
        raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query.")
    if shape.statement_count > 1:
        raise ClickHouseError(62, "SYNTAX_ERROR", "Syntax error (Multi-statements are not allowed).")
    if request.method == "GET" and shape.first_word in WRITE_WORDS:
        message = "Cannot execute query in readonly mode. For queries over HTTP, method GET implies readonly."
        raise ClickHouseError(164, "READONLY", message + " You should use method POST for modifying queries.")
    for flag in ("compress", "decompress"):
        if request.params.get(flag, "0") not in ("", "0"):
            raise ClickHouseError(
                48, "NOT_IMPLEMENTED", f"The `{flag}` parameter (native compression) is not supported"
            )
    settings = {
        key: value
        for key, value in request.params.items()
        if key not in TRANSPORT_PARAMS and key not in HTTP_ONLY_SETTINGS and not key.startswith("param_")
    }
    params = {key[6:]: value for key, value in request.params.items() if key.startswith("param_")}
    default_format = request.params.get("default_format") or "TabSeparated"
    database = request.params.get("database") or None
    return Job(sql, shape, settings, params, database, default_format, data)


def session_of(request: Request, engine: Engine) -> tuple[str | None, float]:
    session_id = request.params.get("session_id") or None
    try:
        timeout_s = float(request.params.get("session_timeout") or DEFAULT_SESSION_TIMEOUT_S)
    except ValueError:
        raise ClickHouseError(72, "CANNOT_PARSE_NUMBER", "Invalid session timeout") from None
    if timeout_s > MAX_SESSION_TIMEOUT_S:
        raise ClickHouseError(
            36, "BAD_ARGUMENTS", f"Session timeout {timeout_s} is larger than {MAX_SESSION_TIMEOUT_S}"
        )
    if session_id and request.params.get("session_check") == "1" and not engine.has_session(session_id):
        raise ClickHouseError(372, "SESSION_NOT_FOUND", f"Session {session_id} not found")
    return session_id, timeout_s


# ---- outcome → reply


def content_type(fmt: str) -> str:
    lower = fmt.lower()
    if lower.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lower.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if lower.startswith("json"):
        return "application/json; charset=UTF-8"
    if lower.startswith(("native", "rowbinary", "parquet", "arrow", "orc", "avro", "protobuf", "msgpack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def compress_reply(body: bytes, request: Request) -> tuple[bytes, str | None]:
    """Compress only when asked the ClickHouse way: enable_http_compression=1 and an Accept-Encoding we support."""
    if request.params.get("enable_http_compression", "0") not in ("1", "true") or not body:
        return body, None
    accept = request.headers.get("accept-encoding", "")
    encoding = next((name for name in RESPONSE_ENCODINGS if name in accept), None)
    if encoding == "zstd":
        return zstd.compress(body, level=RESPONSE_COMPRESSION_LEVEL), encoding
    if encoding == "lz4":
        return lz4.frame.compress(body), encoding
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=RESPONSE_COMPRESSION_LEVEL), encoding
    if encoding == "deflate":
        return zlib.compress(body, RESPONSE_COMPRESSION_LEVEL), encoding
    return body, None


def success_reply(outcome: Outcome, job: Job, request: Request, engine: Engine, query_id: str) -> Reply:
    fmt = job.shape.output_format or job.default_format
    summary = {
        "read_rows": str(outcome.read_rows),
        "read_bytes": str(outcome.read_bytes),
        "written_rows": str(outcome.written_rows),
        "written_bytes": str(outcome.written_bytes),
        "total_rows_to_read": str(outcome.read_rows),
        "result_rows": "0",
        "result_bytes": str(len(outcome.body)),
        "elapsed_ns": str(int(outcome.elapsed_s * 1e9)),
    }
    body, encoding = compress_reply(outcome.body, request)
    headers = [
        ("Content-Type", content_type(fmt)),
        ("X-ClickHouse-Query-Id", query_id),
        ("X-ClickHouse-Timezone", engine.timezone),
        ("X-ClickHouse-Summary", orjson.dumps(summary).decode()),
    ]
    if job.shape.first_word in READ_WORDS and job.shape.insert is None:
        headers.append(("X-ClickHouse-Format", fmt))
    if encoding:
        headers.append(("Content-Encoding", encoding))
    return Reply(200, headers, body)


def error_reply(error: ClickHouseError, version: str, query_id: str = "") -> Reply:
    headers = [("Content-Type", "text/plain; charset=UTF-8"), ("X-ClickHouse-Exception-Code", str(error.code))]
    if query_id:
        headers.append(("X-ClickHouse-Query-Id", query_id))
    if error.http_status == 401:
        headers.append(("WWW-Authenticate", 'Basic realm="ClickHouse server HTTP API"'))
    return Reply(error.http_status, headers, error.render(version).encode())


def run_query(request: Request, engine: Engine) -> Reply:
    """Everything a query costs, in one worker thread: decompress, parse, run, compress."""
    query_id = request.params.get("query_id") or str(uuid.uuid4())
    try:
        job = build_job(request)
        session_id, session_timeout_s = session_of(request, engine)
        outcome = engine.execute(job, session_id, session_timeout_s)
        return success_reply(outcome, job, request, engine, query_id)
    except ClickHouseError as error:
        return error_reply(error, engine.version, query_id)


# ---- ASGI


class ClickHouseHttpApp:
    """A bare ASGI app: ClickHouse's HTTP handlers need no routing framework, and each request is one chDB call."""

    def __init__(self, engine: Engine, executor: ThreadPoolExecutor, credentials: Credentials) -> None:
        self.engine = engine
        self.executor = executor
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        reply = await self.dispatch(scope, receive)
        await send({"type": "http.response.start", "status": reply.status, "headers": _raw_headers(reply)})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else reply.body})

    async def dispatch(self, scope: Scope, receive: Receive) -> Reply:
        path = scope["path"]
        if path in ("/ping", "/replicas_status"):
            return Reply(200, [("Content-Type", "text/html; charset=UTF-8")], b"Ok.\n")
        if path != "/":
            message = f"There is no handle {path}\n\nUse / or /ping for health checks.\n"
            return Reply(404, [("Content-Type", "text/plain; charset=UTF-8")], message.encode())
        query_string = scope["query_string"].decode("utf-8", "replace")
        params = dict(parse_qsl(query_string, keep_blank_values=True))
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        body = await _read_body(receive)
        if scope["method"] in ("GET", "HEAD") and not params.get("query") and not body:
            return Reply(200, [("Content-Type", "text/html; charset=UTF-8")], b"Ok.\n")
        request = Request(scope["method"], params, headers, body)
        try:
            check_credentials(self.credentials, request)
        except ClickHouseError as error:
            return error_reply(error, self.engine.version)
        reply = await asyncio.get_running_loop().run_in_executor(self.executor, run_query, request, self.engine)
        log.debug("query", status=reply.status, bytes_in=len(body), bytes_out=len(reply.body))
        return reply


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _raw_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers]
    headers.append((b"Content-Length", str(len(reply.body)).encode()))
    headers.append((b"Keep-Alive", f"timeout={KEEP_ALIVE_TIMEOUT_S}".encode()))
    return headers


# ---- process


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Defaults come from CLICKHOUSE_PORT, CLICKHOUSE_DATA_DIR, CLICKHOUSE_USER and CLICKHOUSE_PASSWORD, so a
    process manager passes the password in the environment, never on the command line (`ps` shows that)."""
    settings = load(ClickHouseSettings)
    parser = argparse.ArgumentParser(prog="python -m pipeline embedded-clickhouse", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, local only)")
    parser.add_argument("--port", type=int, default=settings.port, help="HTTP port (default: CLICKHOUSE_PORT, 8123)")
    parser.add_argument(
        "--data-dir", default=settings.data_dir, help="chDB data folder (default: CLICKHOUSE_DATA_DIR, data/clickhouse)"
    )
    parser.add_argument("--user", default=settings.user, help="the one user name accepted (default: CLICKHOUSE_USER)")
    parser.add_argument("--password", default=None, help="require this password (default: CLICKHOUSE_PASSWORD, none)")
    parser.add_argument("--threads", type=int, default=8, help="queries run at once (default: 8)")
    args = parser.parse_args(argv)
    if args.password is None and settings.password is not None:
        args.password = settings.password.get_secret_value() or None
    return args


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so, and without it each response
    # body waits ~40 ms for the delayed ACK of its headers (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def open_engine(data_dir: str) -> Engine:
    """Open chDB on the folder. chDB writes the real reason for a failure (e.g. the folder lock) to fd 2 and raises
    a vaguer exception, so fd 2 is captured meanwhile and the reason raised in one line."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as captured:
        saved_fd = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            return Engine(data_dir)
        except Exception as exc:
            chdb_said = [line for line in _captured_text(captured).splitlines() if "DB::Exception" in line]
            raise RuntimeError(_exception_text(chdb_said[0] if chdb_said else str(exc))) from None
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            if sys.exc_info()[0] is None:
                sys.stderr.write(_captured_text(captured))  # on success, whatever chDB said still reaches the log


def _captured_text(captured: Any) -> str:
    captured.seek(0)
    return captured.read().decode(errors="replace")


def _exception_text(line: str) -> str:
    return line.split("DB::Exception: ", 1)[-1].strip()


def serve(engine: Engine, sock: socket.socket, args: argparse.Namespace) -> None:
    """Run until SIGTERM/SIGINT; uvicorn then stops accepting and lets in-flight queries finish."""
    executor = ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="chdb")
    app = ClickHouseHttpApp(engine, executor, Credentials(args.user, args.password or ""))
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        http="h11",
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S,
    )
    # uvicorn re-raises the stop signal after its graceful shutdown; these no-op handlers absorb it so that the
    # engine is closed below (flushing chDB) and the process exits 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    log.info("listening", host=args.host, port=args.port, data_dir=args.data_dir, auth=bool(args.password))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        executor.shutdown(wait=True)
        engine.close()
        log.info("stopped", data_dir=args.data_dir)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ConfigError as exc:
        print(f"embedded-clickhouse: {exc}", file=sys.stderr)
        return 2
    configure_logging("embedded_clickhouse")
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"embedded-clickhouse: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        engine = open_engine(args.data_dir)
    except Exception as exc:
        sock.close()
        print(f"embedded-clickhouse: cannot open chDB data dir {args.data_dir}: {exc}", file=sys.stderr)
        return 1
    serve(engine, sock, args)
    return 0
