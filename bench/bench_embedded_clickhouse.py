"""Insert rows/s and query latency through the embedded ClickHouse, via clickhouse-connect with default options.

Starts `python -m pipeline embedded-clickhouse` on a free port with a temporary data folder (or uses a running one
with `--port`), then inserts row-oriented batches into a 10-column and a 25-column MergeTree table. Printed figures
include clickhouse-connect's own Python-side serialization, which is the larger share of the cost; the
`inside chDB` column counts only the time the server spends in chDB's inserter (from X-ClickHouse-Summary).

    python bench/bench_embedded_clickhouse.py [--rows 100000] [--batch-rows 50000] [--port 8123]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@contextmanager
def embedded_server(port: int | None) -> Iterator[int]:
    if port is not None:
        yield port
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as data_dir:
        argv = [sys.executable, "-m", "pipeline", "embedded-clickhouse", "--port", str(port), "--data-dir", data_dir]
        env = {**os.environ, "LOG_DIR": str(Path(data_dir) / "logs")}
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, env=env)
        try:
            wait_ready(port, process)
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def wait_ready(port: int, process: subprocess.Popen[bytes], deadline_s: float = 30.0) -> None:
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).text == "Ok.\n":
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("embedded-clickhouse did not start")


def narrow_rows(count: int) -> tuple[str, list[str], list[list[Any]]]:
    """10 columns shaped like a trade: ids, strings, floats, a timestamp."""
    columns = "id UInt64, tx String, price Float64, ts DateTime('UTC'), qty Int32, side String, flag UInt8, "
    columns += "ratio Float32, block UInt64, maker String"
    names = [part.split()[0] for part in columns.split(", ")]
    rows = [
        [
            i,
            f"0x{i:064x}",
            i / 7,
            T0 + dt.timedelta(seconds=i),
            i % 997,
            "BUY",
            i & 1,
            0.5,
            60_000_000 + i,
            f"0x{i:040x}",
        ]
        for i in range(count)
    ]
    return columns, names, rows


def wide_rows(count: int) -> tuple[str, list[str], list[list[Any]]]:
    """25 columns, about the width of the pipeline's `trades` table."""
    columns, names, rows = narrow_rows(count)
    extra = [f"s{i} String" for i in range(8)] + [f"n{i} Int64" for i in range(7)]
    columns += ", " + ", ".join(extra)
    names += [part.split()[0] for part in extra]
    for row in rows:
        row += [f"v{row[0] % 100}"] * 8 + [row[0]] * 7
    return columns, names, rows


def bench_inserts(client: Any, label: str, shape: tuple[str, list[str], list[list[Any]]], batch_rows: int) -> None:
    columns, names, rows = shape
    table = f"bench_{label.replace('-', '_')}"
    client.command(f"DROP TABLE IF EXISTS {table}")
    client.command(f"CREATE TABLE {table} ({columns}) ENGINE = MergeTree ORDER BY id")
    client.insert(table, rows[:1], column_names=names)  # warm-up: the column-type lookup and first connection
    server_s = 0.0
    started = time.perf_counter()
    for start in range(0, len(rows), batch_rows):
        summary = client.insert(table, rows[start : start + batch_rows], column_names=names)
        server_s += int(summary.summary.get("elapsed_ns", 0)) / 1e9
    elapsed_s = time.perf_counter() - started
    assert client.command(f"SELECT count() FROM {table}") == len(rows) + 1
    print(
        f"{label:<28} {len(rows):>8} rows  {len(rows) / elapsed_s:>11,.0f} rows/s end-to-end"
        f"  {len(rows) / server_s:>11,.0f} rows/s inside chDB"
    )


def bench_latency(client: Any, queries: int = 200) -> None:
    timings_ms = []
    for _ in range(queries):
        started = time.perf_counter()
        client.query("SELECT 1")
        timings_ms.append((time.perf_counter() - started) * 1000)
    timings_ms.sort()
    p50, p99 = statistics.median(timings_ms), timings_ms[int(len(timings_ms) * 0.99) - 1]
    print(f"{'SELECT 1 latency':<28} p50 {p50:.2f} ms  p99 {p99:.2f} ms  ({queries} queries, one client)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--port", type=int, default=None, help="use an embedded-clickhouse already running here")
    args = parser.parse_args()
    narrow, wide = narrow_rows(args.rows), wide_rows(args.rows)
    with embedded_server(args.port) as port:
        for compress in ("lz4", False):  # lz4 is clickhouse-connect's default
            client = clickhouse_connect.get_client(host="127.0.0.1", port=port, compress=compress)
            suffix = "lz4" if compress else "plain"
            bench_inserts(client, f"10-col-{suffix}", narrow, args.batch_rows)
            bench_inserts(client, f"25-col-{suffix}", wide, args.batch_rows)
            client.close()
        client = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        bench_latency(client)


if __name__ == "__main__":
    main()
