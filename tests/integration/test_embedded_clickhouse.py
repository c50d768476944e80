"""The embedded ClickHouse (chDB over ClickHouse's HTTP interface), driven as its clients drive it: httpx for the
raw protocol, clickhouse-connect with default options for everything the pipeline does."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import lz4.frame
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.fixtures.clickhouse_server import REPO_ROOT, ClickHouseServer, free_port

ROWS = 100_000
COLUMNS = ["id", "name", "price", "ts", "qty", "side", "flag", "ratio", "big", "note"]
TYPES = "id UInt64, name String, price Float64, ts DateTime('UTC'), qty Int32, side String, flag UInt8, ratio Float32, "
TYPES += "big UInt64, note String"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def table_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def create_table(client: Any, name: str, settings: str = "") -> None:
    client.command(f"CREATE TABLE {name} ({TYPES}) ENGINE = MergeTree ORDER BY id {settings}")


@pytest.fixture(scope="module")
def rows() -> list[list[Any]]:
    return [
        [i, f"n{i}", i / 4, T0 + dt.timedelta(seconds=i), i % 1000 - 500, "BUY", i % 2, 0.5, i * 7, "x" * (i % 20)]
        for i in range(ROWS)
    ]


def naive_utc(row: list[Any]) -> list[Any]:
    return [value.replace(tzinfo=None) if isinstance(value, dt.datetime) else value for value in row]


def post(server: ClickHouseServer, sql: str | bytes | Iterator[bytes] = b"", **params: str) -> httpx.Response:
    return httpx.post(f"{server.url}/", params=params, content=sql, timeout=30)


# ---- the "Must show" items


def test_get_select_1_prints_1(clickhouse_server: ClickHouseServer) -> None:
    response = httpx.get(f"{clickhouse_server.url}/?query=SELECT%201")
    assert response.status_code == 200
    assert response.text == "1\n"


@pytest.mark.parametrize("compress", [False, "lz4", "zstd", "gzip"])
def test_client_inserts_100k_rows_and_reads_them_back(
    clickhouse_server: ClickHouseServer, rows: list[list[Any]], compress: str | bool
) -> None:
    client = clickhouse_server.client(compress=compress)
    name = table_name("roundtrip")
    create_table(client, name)
    summary = client.insert(name, rows, column_names=COLUMNS)
    assert summary.written_rows == ROWS
    back = client.query(f"SELECT {', '.join(COLUMNS)} FROM {name} ORDER BY id").result_rows
    assert len(back) == ROWS
    # clickhouse-connect's default tz_mode returns DateTime('UTC') values as naive UTC, as from a real server
    assert [list(row) for row in back[:3]] == [naive_utc(row) for row in rows[:3]]
    assert list(back[-1]) == naive_utc(rows[-1])
    assert client.query(f"SELECT sum(big), uniqExact(name) FROM {name}").result_rows == [
        (7 * ROWS * (ROWS - 1) // 2, ROWS)
    ]


def test_bad_query_gets_clickhouse_error_with_code(clickhouse_server: ClickHouseServer, clickhouse_client: Any) -> None:
    syntax = post(clickhouse_server, b"SELEC 1")
    assert syntax.status_code == 400
    assert syntax.headers["X-ClickHouse-Exception-Code"] == "62"
    assert syntax.text.startswith("Code: 62. DB::Exception: Syntax error")
    assert "(SYNTAX_ERROR) (version 26." in syntax.text
    missing = post(clickhouse_server, b"SELECT * FROM no_such_table")
    assert (missing.status_code, missing.headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert "(UNKNOWN_TABLE)" in missing.text
    with pytest.raises(DatabaseError) as caught:
        clickhouse_client.query("SELECT * FROM no_such_table")
    assert caught.value.code == 60
    assert "no_such_table" in str(caught.value)


def test_data_survives_graceful_restart_and_kill(clickhouse_server: ClickHouseServer) -> None:
    name = table_name("durable")
    client = clickhouse_server.client()
    create_table(client, name)
    client.insert(name, [[1, "a", 1.0, T0, 1, "BUY", 1, 1.0, 1, ""]], column_names=COLUMNS)
    client.close()
    # SIGTERM while a query runs: the query still gets its answer, then the server exits 0
    slow: list[httpx.Response] = []
    in_flight = threading.Thread(target=lambda: slow.append(post(clickhouse_server, b"SELECT sleep(1)")))
    in_flight.start()
    time.sleep(0.3)
    assert clickhouse_server.stop() == 0
    in_flight.join(10)
    assert slow[0].text == "0\n"
    clickhouse_server.start()
    client = clickhouse_server.client()
    client.insert(name, [[2, "b", 2.0, T0, 2, "SELL", 0, 2.0, 2, ""]], column_names=COLUMNS)
    client.close()
    clickhouse_server.kill()  # committed parts are on disk before the INSERT returns
    clickhouse_server.start()
    client = clickhouse_server.client()
    assert client.query(f"SELECT id, name FROM {name} ORDER BY id").result_rows == [(1, "a"), (2, "b")]


# ---- what the pipeline relies on


def test_same_dedup_token_adds_no_rows_and_a_new_token_does(clickhouse_client: Any, rows: list[list[Any]]) -> None:
    name = table_name("dedup")
    create_table(clickhouse_client, name, "SETTINGS non_replicated_deduplication_window = 100")
    batch = rows[:20_000]
    for token in ("batch-1", "batch-1", "batch-2"):
        settings = {"insert_deduplication_token": token, "async_insert": 0}
        clickhouse_client.insert(name, batch, column_names=COLUMNS, settings=settings)
    assert clickhouse_client.command(f"SELECT count() FROM {name}") == 40_000


def test_url_settings_apply_to_their_query_only(clickhouse_server: ClickHouseServer) -> None:
    default = post(clickhouse_server, b"SELECT getSetting('max_threads')").text
    # several requests, so pooled connections that carried max_threads=3 are reused without it
    for _ in range(4):
        assert post(clickhouse_server, b"SELECT getSetting('max_threads')", max_threads="3").text == "3\n"
        assert post(clickhouse_server, b"SELECT getSetting('max_threads')").text == default
    unknown = post(clickhouse_server, b"SELECT 1", no_such_setting="1")
    assert (unknown.status_code, unknown.headers["X-ClickHouse-Exception-Code"]) == (404, "115")


def test_transport_params_are_accepted_and_query_id_echoed(clickhouse_server: ClickHouseServer) -> None:
    params = {
        "query_id": "q-123",
        "wait_end_of_query": "1",
        "send_progress_in_http_headers": "1",
        "http_headers_progress_interval_ms": "10000",
        "buffer_size": "1048576",
        "client_protocol_version": "54405",
        "cancel_http_readonly_queries_on_client_close": "1",
        "database": "default",
        "param_n": "41",
    }
    response = post(clickhouse_server, b"SELECT {n:UInt8} + 1", **params)
    assert response.text == "42\n"
    assert response.headers["X-ClickHouse-Query-Id"] == "q-123"
    assert json.loads(response.headers["X-ClickHouse-Summary"])["read_rows"] == "1"


def test_concurrent_clients_insert_while_another_queries(clickhouse_server: ClickHouseServer) -> None:
    name = table_name("concurrent")
    setup = clickhouse_server.client()
    create_table(setup, name)
    errors: list[BaseException] = []
    writers_done = threading.Event()

    def write(worker: int) -> None:
        client = clickhouse_server.client()
        for batch in range(10):
            start = (worker * 10 + batch) * 1000
            rows = [[start + i, "w", 1.0, T0, worker, "BUY", 1, 1.0, 1, ""] for i in range(1000)]
            client.insert(name, rows, column_names=COLUMNS)

    def read() -> None:
        client = clickhouse_server.client()
        while not writers_done.is_set():
            assert client.command(f"SELECT count() FROM {name}") <= 40_000

    def guarded(target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=guarded, args=(write, worker)) for worker in range(4)]
    reader = threading.Thread(target=guarded, args=(read,))
    for thread in [*writers, reader]:
        thread.start()
    for thread in writers:
        thread.join(60)
    writers_done.set()
    reader.join(60)
    assert errors == []
    assert setup.query(f"SELECT count(), uniqExact(id) FROM {name}").result_rows == [(40_000, 40_000)]


# ---- the HTTP interface itself


def test_ping_and_bare_root_say_ok(clickhouse_server: ClickHouseServer) -> None:
    assert httpx.get(f"{clickhouse_server.url}/ping").text == "Ok.\n"
    assert httpx.get(f"{clickhouse_server.url}/").text == "Ok.\n"
    assert httpx.get(f"{clickhouse_server.url}/nope").status_code == 404


def test_format_clause_and_default_format(clickhouse_server: ClickHouseServer) -> None:
    as_json = post(clickhouse_server, b"SELECT 1 AS one FORMAT JSON")
    assert as_json.json()["data"] == [{"one": 1}]
    assert as_json.headers["X-ClickHouse-Format"] == "JSON"
    assert as_json.headers["Content-Type"].startswith("application/json")
    lines = post(clickhouse_server, b"SELECT number FROM numbers(3)", default_format="JSONEachRow").text
    assert [json.loads(line) for line in lines.splitlines()] == [{"number": 0}, {"number": 1}, {"number": 2}]
    in_url = httpx.get(f"{clickhouse_server.url}/", params={"query": "SELECT 2 FORMAT CSV"})
    assert in_url.text == "2\n"


def test_get_refuses_writes_like_clickhouse(clickhouse_server: ClickHouseServer) -> None:
    response = httpx.get(f"{clickhouse_server.url}/", params={"query": "CREATE TABLE get_made (a UInt8) ENGINE=Memory"})
    assert response.headers["X-ClickHouse-Exception-Code"] == "164"
    assert post(clickhouse_server, b"EXISTS TABLE get_made").text == "0\n"


def test_insert_with_data_in_body_every_way(clickhouse_server: ClickHouseServer) -> None:
    name = table_name("bodies")
    assert post(clickhouse_server, f"CREATE TABLE {name} (a UInt32, b String) ENGINE = MergeTree ORDER BY a").is_success
    insert = f"INSERT INTO {name} FORMAT JSONEachRow"
    # query in the URL, data in the body
    assert post(clickhouse_server, b'{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n', query=insert).is_success
    # query and data both in the body
    assert post(clickhouse_server, f'{insert}\n{{"a": 3, "b": "z"}}\n'.encode()).is_success
    # chunked transfer encoding (a generator body)
    chunks = (f'{{"a": {i}, "b": "c"}}\n'.encode() for i in range(10, 1010))
    assert post(clickhouse_server, chunks, query=insert).is_success
    # compressed bodies, the way clickhouse-connect sends them (lz4: one frame per block, concatenated)
    lz4_body = lz4.frame.compress(b'{"a": 2000, "b": "l"}\n') + lz4.frame.compress(b'{"a": 2001, "b": "l"}\n')
    gz_body = gzip.compress(f'{insert}\n{{"a": 3000, "b": "g"}}\n'.encode())
    for body, encoding, params in ((lz4_body, "lz4", {"query": insert}), (gz_body, "gzip", {})):
        response = httpx.post(
            f"{clickhouse_server.url}/", params=params, content=body, headers={"Content-Encoding": encoding}
        )
        assert response.is_success, response.text
    # VALUES with inline data, and VALUES with the rows in the body
    assert post(clickhouse_server, f"INSERT INTO {name} VALUES (4000, 'v')".encode()).is_success
    assert post(clickhouse_server, b"(4001, 'w'), (4002, 'w')", query=f"INSERT INTO {name} VALUES").is_success
    counts = post(clickhouse_server, f"SELECT b, count() FROM {name} GROUP BY b ORDER BY b".encode()).text
    assert counts == "c\t1000\ng\t1\nl\t2\nv\t1\nw\t2\nx\t1\ny\t1\nz\t1\n"


def test_compressed_response_when_asked(clickhouse_server: ClickHouseServer) -> None:
    response = httpx.post(
        f"{clickhouse_server.url}/",
        params={"enable_http_compression": "1"},
        content=b"SELECT number FROM numbers(1000)",
        headers={"Accept-Encoding": "gzip"},
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.text.splitlines()[-1] == "999"  # httpx undoes the gzip


def test_session_keeps_set_but_sessionless_set_does_not_leak(clickhouse_server: ClickHouseServer) -> None:
    session = {"session_id": uuid.uuid4().hex}
    assert post(clickhouse_server, b"SET max_threads = 2", **session).is_success
    assert post(clickhouse_server, b"SELECT getSetting('max_threads')", **session).text == "2\n"
    assert post(clickhouse_server, b"SELECT getSetting('max_threads')", max_threads="1", **session).text == "1\n"
    assert post(clickhouse_server, b"SELECT getSetting('max_threads')", **session).text == "2\n"
    default = post(clickhouse_server, b"SELECT getSetting('max_result_rows')").text
    assert post(clickhouse_server, b"SET max_result_rows = 7").is_success
    for _ in range(4):
        assert post(clickhouse_server, b"SELECT getSetting('max_result_rows')").text == default


def test_password_is_required_when_configured(tmp_path: Path) -> None:
    server = ClickHouseServer(tmp_path / "data", free_port(), password="s3cret")
    server.start()
    try:
        denied = httpx.get(f"{server.url}/", params={"query": "SELECT 1"})
        assert (denied.status_code, denied.headers["X-ClickHouse-Exception-Code"]) == (403, "516")
        assert "Authentication failed" in denied.text
        wrong = httpx.get(f"{server.url}/", params={"query": "SELECT 1"}, auth=("default", "nope"))
        assert wrong.headers["X-ClickHouse-Exception-Code"] == "516"
        basic = httpx.get(f"{server.url}/", params={"query": "SELECT 1"}, auth=("default", "s3cret"))
        headers = httpx.get(
            f"{server.url}/",
            params={"query": "SELECT 1"},
            headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": "s3cret"},
        )
        in_params = httpx.get(f"{server.url}/", params={"query": "SELECT 1", "user": "default", "password": "s3cret"})
        assert [basic.text, headers.text, in_params.text] == ["1\n", "1\n", "1\n"]
        assert server.client().command("SELECT 1") == 1
        with pytest.raises(DatabaseError) as caught:
            server.client(password="wrong")
        assert caught.value.code == 516
        assert "s3cret" not in server.output()
    finally:
        server.stop()


def test_startup_errors_are_one_clear_line(clickhouse_server: ClickHouseServer, tmp_path: Path) -> None:
    def start(port: int, data_dir: Path) -> subprocess.CompletedProcess[str]:
        """`pipeline embedded-clickhouse` on this port and folder, expected to give up."""
        argv = [sys.executable, "-m", "pipeline", "embedded-clickhouse", "--port", str(port), "--data-dir"]
        return subprocess.run([*argv, str(data_dir)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    locked = start(free_port(), clickhouse_server.data_dir)
    assert locked.returncode != 0
    assert locked.stderr.count("\n") == 1
    assert "cannot open chDB data dir" in locked.stderr
    assert "Another server instance in same directory is already running" in locked.stderr
    busy = start(clickhouse_server.port, tmp_path / "other")
    assert busy.returncode != 0
    assert busy.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{clickhouse_server.port}" in busy.stderr
    assert httpx.get(f"{clickhouse_server.url}/ping").text == "Ok.\n"  # the running server is untouched
