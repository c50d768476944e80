"""`python -m pipeline doctor` against the simulator: every check passes on today's world, and each switch that
turns a capability off fails its own check with a readable reason."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis

from common.clickhouse import apply_migrations
from common.config import ClickHouseSettings
from common.exchanges import EXCHANGE_V3
from pipeline.ops import doctor
from simulator.planted import INITIAL_IMPLEMENTATION
from tests.fixtures.clickhouse_server import clickhouse_env
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.simulator import SimulatorFactory

# today's world (V2 markets, Combos); the last 1,000 blocks hold only fills after the cutover
WORLD = {"seed": 5, "markets": 120, "history_fills": 6_000, "v2_fills": 4_500, "burst_fills": 200}


@pytest.fixture(autouse=True)
def empty_redis(redis_server: RedisServer) -> None:
    """The cursors check reads the test's Redis, with no cursor stored (tests/integration/test_cursor_ahead.py
    stores some)."""
    with redis.Redis(port=redis_server.port) as client:
        client.flushall()


def point_at(sim: Any, redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    redis = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port)}  # the tests' (AOF, fsync always)
    for name, value in {**sim.env(), **redis, "HTTP_BACKOFF_BASE_S": "0.01", "COLUMNS": "250"}.items():
        monkeypatch.setenv(name, value)


async def run_doctor(*argv: str) -> int:
    """The Redis and upstream checks (`--only redis --only sources`) unless told otherwise."""
    only = [] if "--only" in argv else ["--only", "redis", "--only", "sources"]
    return await asyncio.to_thread(doctor.main, [*argv, *only])


def lines_of(out: str) -> dict[str, str]:
    """Check name -> its line, from the printed report."""
    lines = {}
    for line in out.splitlines():
        verdict, _, rest = line.partition(" ")
        if verdict in ("OK", "WARN", "FAIL"):
            name = next(check for check in CHECK_NAMES if rest.strip().startswith(check))
            lines[name] = line
    return lines


CHECK_NAMES = ("redis", "gamma", "goldsky", "finality", "getLogs", "CTF Exchange", "NegRisk CTF Exchange",
               "CTFExchangeV2", "NegRiskCtfExchangeV2", "ExchangeV3", "implementation", "topics",
               "cursors")  # fmt: skip


async def test_doctor_passes_every_check_on_the_simulator(
    simulator: SimulatorFactory, redis_server, monkeypatch, capsys
) -> None:
    sim = simulator(**WORLD)
    point_at(sim, redis_server, monkeypatch)

    assert await run_doctor() == 0

    out = capsys.readouterr().out
    lines = lines_of(out)
    assert set(lines) == set(CHECK_NAMES) and all(line.startswith("OK") for line in lines.values()), out
    assert "version v2" in lines["gamma"] and "stale since the 2026-04-28 cutover" in lines["goldsky"]
    assert "16 blocks" in lines["finality"] and "accepts 1,250 blocks" in lines["getLogs"]
    assert "block range is too large (max 2000 blocks)" in lines["getLogs"]
    assert "retired" in lines["CTF Exchange"] and "fills in the last 1,000 blocks" in lines["ExchangeV3"]
    assert "durability AOF, appendfsync always (CONFIG GET)" in lines["redis"]
    assert "/rpc" not in out and "/***" in out  # the RPC URL's path (where keys live) is masked
    assert f"runs implementation {INITIAL_IMPLEMENTATION}" in lines["implementation"]
    assert "every exchange log of the last 1,000 blocks has a known topic0" in lines["topics"]


async def test_doctor_json_lists_the_checks_with_their_numbers(
    simulator: SimulatorFactory, redis_server, monkeypatch, capsys
):
    sim = simulator(**WORLD)
    point_at(sim, redis_server, monkeypatch)

    assert await run_doctor("--json") == 0

    document = orjson.loads(capsys.readouterr().out)
    checks = {check["name"]: check for check in document["checks"]}
    assert document["ok"] is True and set(checks) == set(CHECK_NAMES)
    assert 0 < checks["gamma"]["data"]["v2_share"] < 1
    assert checks["getLogs"]["data"]["largest_span_blocks"] == 1_250
    assert checks["ExchangeV3"]["data"]["fills"] > 0
    assert checks["redis"]["data"]["durability"] == "AOF, appendfsync always"


@pytest.mark.parametrize(
    ("switch", "check", "reason"),
    [
        ("keyset_off", "gamma", "keyset pagination is not configured"),
        ("finalized_tag_off", "finality", "the node has no finalized tag; set CHAIN_USE_FINALIZED=false"),
        ("exchange_v3_logs_off", "ExchangeV3", "no fills in the last 1,000 blocks"),
    ],
)
async def test_a_switched_off_capability_fails_its_check_with_the_reason(
    simulator: SimulatorFactory, redis_server, monkeypatch, capsys, switch: str, check: str, reason: str
) -> None:
    sim = simulator(**WORLD)
    sim.set_switches(**{switch: True})
    point_at(sim, redis_server, monkeypatch)

    assert await run_doctor() == 1

    lines = lines_of(capsys.readouterr().out)
    assert lines[check].startswith("FAIL") and reason in lines[check], lines[check]
    assert [name for name, line in lines.items() if line.startswith("FAIL")] == [check]


async def test_doctor_names_the_new_implementation_and_warns_of_an_undecoded_topic0(
    simulator: SimulatorFactory, redis_server, monkeypatch, capsys
) -> None:
    sim = simulator(**WORLD)
    finalized = sim.truth(fills=False)["finalized_block"]
    new_implementation, unknown = "0x7345c684" + "00" * 15 + "03", "0x" + "5e" * 32
    sim.plant(plant_upgrade={"block": finalized - 100, "implementation": new_implementation})
    sim.plant(plant_log={"block": finalized - 50, "address": EXCHANGE_V3, "topics": [unknown], "data": "0x"})
    point_at(sim, redis_server, monkeypatch)

    assert await run_doctor() == 0  # a warning, not a failure: fills still decode

    lines = lines_of(capsys.readouterr().out)
    assert lines["implementation"].startswith("OK") and new_implementation in lines["implementation"]
    assert lines["topics"].startswith("WARN"), lines["topics"]
    assert f"ExchangeV3 {unknown} ×1" in lines["topics"] and "1 Upgraded log(s)" in lines["topics"]
# --- clickhouse ---------------------------------------------------------------------------------------------


def point_at_clickhouse(monkeypatch: pytest.MonkeyPatch, ch: ClickHouseSettings, deployment: str) -> None:
    environment = clickhouse_env(ch.model_copy(update={"deployment": deployment}))
    for name, value in {**environment, "COLUMNS": "250"}.items():
        monkeypatch.setenv(name, value)


async def test_doctor_shows_the_version_the_profile_and_the_settings_in_effect(ch_settings, monkeypatch, capsys):
    apply_migrations(ch_settings.model_copy(update={"deployment": "cloud"}))
    point_at_clickhouse(monkeypatch, ch_settings, "cloud")
    capsys.readouterr()  # the migrations' log lines

    assert await run_doctor("--only", "clickhouse", "--json") == 0

    checks = {check["name"]: check for check in orjson.loads(capsys.readouterr().out)["checks"]}
    assert [checks[name]["verdict"] for name in ("clickhouse", "ch settings", "ch tables")] == ["ok"] * 3
    assert checks["clickhouse"]["data"]["version"].startswith("26.9") and "deployment cloud" in checks["clickhouse"][
        "detail"]  # fmt: skip
    assert checks["ch settings"]["data"] == {"select_sequential_consistency": "1", "lightweight_deletes_sync": "1"}
    assert "replicated_deduplication_window_seconds = 86400" in checks["ch tables"]["detail"]


async def test_doctor_warns_when_the_tables_were_made_under_another_profile(ch_settings, monkeypatch, capsys):
    apply_migrations(ch_settings)  # server: the single-server dedup window
    point_at_clickhouse(monkeypatch, ch_settings, "cloud")

    assert await run_doctor("--only", "clickhouse") == 0

    out = capsys.readouterr().out
    tables = next(line for line in out.splitlines() if "ch tables" in line)
    assert tables.startswith("WARN") and "created under another profile" in tables, out
