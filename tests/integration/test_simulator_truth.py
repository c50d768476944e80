"""Ground truth over HTTP (paged, field-selected, streamed), the export command, and the CLI entry points."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from simulator.server import main
from tests.fixtures.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_truth_pages_and_fields_match_the_full_document(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(seed=12, markets=20, history_fills=4_000)
    full = sim.truth()
    assert full["count"] == len(full["fills"]) == 4_000
    page = sim.truth(offset=1_000, limit=500, fields=("id", "first_visible_at"))
    assert page["fills"] == [
        {"id": f["id"], "first_visible_at": f["first_visible_at"]} for f in full["fills"][1_000:1_500]
    ]
    summary = sim.truth(fills=False)
    assert "fills" not in summary and summary["usdc_sum"] == full["usdc_sum"] > 0
    assert httpx.get(f"{sim.base_url}/_sim/truth", params={"fields": "nope"}).status_code == 400


def test_export_truth_writes_the_same_world_as_the_server(tmp_path: Path) -> None:
    path = tmp_path / "truth.json"
    assert (
        main(
            [
                "--seed",
                "12",
                "--markets",
                "20",
                "--history-fills",
                "4000",
                "--export-truth",
                str(path),
                "--log-level",
                "warning",
            ]
        )
        == 0
    )
    exported = orjson.loads(path.read_bytes())
    assert exported["count"] == len(exported["fills"]) == 4_000
    assert len({f["id"] for f in exported["fills"]}) == 4_000


def test_pipeline_cli_starts_the_simulator_on_the_given_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "simulator",
            "--port",
            str(port),
            "--history-fills",
            "2000",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        def health_or_none() -> dict | None:
            assert proc.poll() is None, "simulator exited"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/_sim/health", timeout=1).json()
            except httpx.HTTPError:
                return None

        health = wait_until(health_or_none, "the simulator started", timeout_s=30, interval_s=0.1)
        assert health["fills"] == 2_000
        rows = httpx.get(f"http://127.0.0.1:{port}/gamma/markets", params={"limit": 3}).json()
        assert len(rows) == 3
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert f"POLYGON_RPC_URL=http://127.0.0.1:{port}/rpc".encode() in out
