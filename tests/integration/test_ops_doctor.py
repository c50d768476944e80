"""`python -m pipeline doctor` against the simulator: every check passes on today's world, and each switch that
turns a capability off fails its own check with a readable reason."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis

from pipeline.ops import doctor
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.simulator import SimulatorFactory

# today's world (V2 markets, Combos); the last 1,000 blocks hold only fills after the cutover
WORLD = {"seed": 5, "markets": 120, "history_fills": 6_000, "v2_fills": 4_500, "burst_fills": 200}


@pytest.fixture(autouse=True)
def empty_redis(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cursors check reads the test's Redis, with no cursor stored (tests/integration/test_cursor_ahead.py
    stores some)."""
    with redis.Redis(port=redis_server.port) as client:
        client.flushall()
    monkeypatch.setenv("REDIS_PORT", str(redis_server.port))


def point_at(sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**sim.env(), "HTTP_BACKOFF_BASE_S": "0.01", "COLUMNS": "250"}.items():
        monkeypatch.setenv(name, value)


async def run_doctor(*argv: str) -> int:
    return await asyncio.to_thread(doctor.main, list(argv))


def lines_of(out: str) -> dict[str, str]:
    """Check name -> its line, from the printed report."""
    lines = {}
    for line in out.splitlines():
        verdict, _, rest = line.partition(" ")
        if verdict in ("OK", "WARN", "FAIL"):
            name = next(check for check in CHECK_NAMES if rest.strip().startswith(check))
            lines[name] = line
    return lines


CHECK_NAMES = ("gamma", "goldsky", "finality", "getLogs", "CTF Exchange", "NegRisk CTF Exchange", "CTFExchangeV2",
               "NegRiskCtfExchangeV2", "ExchangeV3", "cursors")  # fmt: skip


async def test_doctor_passes_every_check_on_the_simulator(simulator: SimulatorFactory, monkeypatch, capsys) -> None:
    sim = simulator(**WORLD)
    point_at(sim, monkeypatch)

    assert await run_doctor() == 0

    out = capsys.readouterr().out
    lines = lines_of(out)
    assert set(lines) == set(CHECK_NAMES) and all(line.startswith("OK") for line in lines.values()), out
    assert "version v2" in lines["gamma"] and "stale since the 2026-04-28 cutover" in lines["goldsky"]
    assert "16 blocks" in lines["finality"] and "accepts 1,250 blocks" in lines["getLogs"]
    assert "block range is too large (max 2000 blocks)" in lines["getLogs"]
    assert "retired" in lines["CTF Exchange"] and "fills in the last 1,000 blocks" in lines["ExchangeV3"]
    assert "/rpc" not in out and "/***" in out  # the RPC URL's path (where keys live) is masked


async def test_doctor_json_lists_the_checks_with_their_numbers(simulator: SimulatorFactory, monkeypatch, capsys):
    sim = simulator(**WORLD)
    point_at(sim, monkeypatch)

    assert await run_doctor("--json") == 0

    document = orjson.loads(capsys.readouterr().out)
    checks = {check["name"]: check for check in document["checks"]}
    assert document["ok"] is True and set(checks) == set(CHECK_NAMES)
    assert 0 < checks["gamma"]["data"]["v2_share"] < 1
    assert checks["getLogs"]["data"]["largest_span_blocks"] == 1_250
    assert checks["ExchangeV3"]["data"]["fills"] > 0


@pytest.mark.parametrize(
    ("switch", "check", "reason"),
    [
        ("keyset_off", "gamma", "keyset pagination is not configured"),
        ("finalized_tag_off", "finality", "the node has no finalized tag; set CHAIN_USE_FINALIZED=false"),
        ("exchange_v3_logs_off", "ExchangeV3", "no fills in the last 1,000 blocks"),
    ],
)
async def test_a_switched_off_capability_fails_its_check_with_the_reason(
    simulator: SimulatorFactory, monkeypatch, capsys, switch: str, check: str, reason: str
) -> None:
    sim = simulator(**WORLD)
    sim.set_switches(**{switch: True})
    point_at(sim, monkeypatch)

    assert await run_doctor() == 1

    lines = lines_of(capsys.readouterr().out)
    assert lines[check].startswith("FAIL") and reason in lines[check], lines[check]
    assert [name for name, line in lines.items() if line.startswith("FAIL")] == [check]
