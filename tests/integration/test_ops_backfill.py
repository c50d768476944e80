"""`python -m pipeline backfill goldsky|chain` and `verify --source goldsky|chain` against the simulator.

The backfill puts exactly the source's fills of the range into `stream:order_events` with a progress bar; once
the processor and the writer have run, verify against the source itself finds nothing missing, and finds the
rows a test deletes from `trades`.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from common import keys
from common.clickhouse import make_client
from common.config import ClickHouseSettings
from common.payloads import decode_order_event
from pipeline.ops import backfill as ops_backfill
from pipeline.ops import verify as ops_verify
from processors import clickhouse_writer, trade_processor
from tests.fixtures.dashboard_world import run_command, set_pipeline_env
from tests.fixtures.helpers import FAST_STREAMS, items_added, items_in

WORLD = {"seed": 5, "markets": 10, "history_fills": 3_000, "burst_fills": 1_200}


@pytest.fixture(name="source_ch")
def source_ch_fixture(clickhouse_server: Any) -> Iterator[ClickHouseSettings]:
    settings = ClickHouseSettings(host="127.0.0.1", port=clickhouse_server.port, database=f"t_{uuid.uuid4().hex[:10]}",
                                  batch_size=5000, flush_interval_s=0.05, insert_max_attempts=2)  # fmt: skip
    yield settings
    client = make_client(settings, database="default")
    client.command(f"DROP DATABASE IF EXISTS {settings.database}")
    client.close()


def point_at(monkeypatch: pytest.MonkeyPatch, sim: Any, redis_settings: Any, ch: ClickHouseSettings) -> None:
    set_pipeline_env(monkeypatch, redis_settings, ch)
    for name, value in {**sim.env(), "HTTP_READ_TIMEOUT_S": "2", "HTTP_BACKOFF_BASE_S": "0.02"}.items():
        monkeypatch.setenv(name, value)


async def stream_ids(redis: Any) -> list[str]:
    return [decode_order_event(item).id for item in items_in(await redis.xrange(keys.STREAM_ORDER_EVENTS))]


async def process_everything(redis_settings: Any, ch: ClickHouseSettings) -> None:
    """Markets are unknown here: trades go out at once with market_id '' (a join fills them in later)."""
    await trade_processor.run(trade_processor.ProcessorSettings(unknown_market_wait_s=0, held_check_interval_s=0.1),
                              redis=redis_settings, streams=FAST_STREAMS, once=True)  # fmt: skip
    await clickhouse_writer.run(clickhouse_writer.WriterSettings(), redis=redis_settings, clickhouse=ch,
                                streams=FAST_STREAMS, once=True)  # fmt: skip


def punch(ch: ClickHouseSettings, count: int) -> list[str]:
    client = make_client(ch)
    try:
        ids = sorted(
            random.Random(2).sample(
                [r[0] for r in client.query("SELECT id FROM trades ORDER BY id").result_rows], count
            )
        )
        # a synchronous mutation: trades refuses lightweight DELETE (see common/migrations/004_unique_keys.sql)
        client.command(f"ALTER TABLE trades DELETE WHERE id IN ({', '.join(repr(i) for i in ids)}) "
                       "SETTINGS mutations_sync = 1")  # fmt: skip
        return ids
    finally:
        client.close()


async def test_goldsky_backfill_then_verify_against_the_subgraph(
    simulator, redis_client, redis_settings, source_ch, monkeypatch, capsys
):
    sim = simulator(**WORLD)
    expected = [f for f in sim.truth()["fills"] if "goldsky" in f["sources"]]
    first, last = min(f["timestamp"] for f in expected), max(f["timestamp"] for f in expected)
    point_at(monkeypatch, sim, redis_settings, source_ch)

    assert await run_command(ops_backfill.main, "goldsky", "--from", str(first), "--to", str(last),
                             "--workers", "3") == 0  # fmt: skip
    out = capsys.readouterr()
    assert f"{len(expected):,} fill(s) appended" in out.out and "backfill goldsky" in out.err and "ETA" in out.err
    ids = await stream_ids(redis_client)
    assert sorted(ids) == sorted(f["id"] for f in expected)

    await process_everything(redis_settings, source_ch)
    span = ("--from", str(first), "--to", str(last), "--source", "goldsky")
    assert await run_command(ops_verify.main, *span) == 0
    punched = punch(source_ch, 3)
    assert await run_command(ops_verify.main, *span) == 1
    report = capsys.readouterr().out
    assert "missing             3" in report and all(fill_id in report for fill_id in punched)


async def test_chain_backfill_then_verify_against_the_node(
    simulator, redis_client, redis_settings, source_ch, monkeypatch, capsys
):
    sim = simulator(**WORLD)
    truth = sim.truth()
    expected = [f for f in truth["fills"] if f["block_number"] <= truth["finalized_block"]]
    point_at(monkeypatch, sim, redis_settings, source_ch)
    monkeypatch.setenv("CHAIN_START_BLOCK", str(truth["first_block"]))

    span_blocks = ("--from", str(truth["first_block"]), "--to", str(truth["finalized_block"]))
    assert await run_command(ops_backfill.main, "chain", *span_blocks, "--workers", "4") == 0
    assert "blocks" in capsys.readouterr().err
    assert sorted(await stream_ids(redis_client)) == sorted(f["id"] for f in expected)

    await process_everything(redis_settings, source_ch)
    first, last = min(f["timestamp"] for f in expected), max(f["timestamp"] for f in expected)
    span = ("--from", str(first), "--to", str(last), "--source", "chain")
    assert await run_command(ops_verify.main, *span) == 0
    assert f"{len(expected):,} fill(s) at the source" in capsys.readouterr().out
    punched = punch(source_ch, 2)
    assert await run_command(ops_verify.main, *span) == 1
    report = capsys.readouterr().out
    assert all(fill_id in report for fill_id in punched), report


async def test_a_goldsky_backfill_re_run_over_a_covered_range_adds_no_rows(
    simulator, redis_client, redis_settings, source_ch, monkeypatch
):
    sim = simulator(**WORLD)
    expected = [f for f in sim.truth()["fills"] if "goldsky" in f["sources"]]
    span = ("--from", str(min(f["timestamp"] for f in expected)), "--to", str(max(f["timestamp"] for f in expected)))
    point_at(monkeypatch, sim, redis_settings, source_ch)
    assert await run_command(ops_backfill.main, "goldsky", *span, "--workers", "3") == 0
    await process_everything(redis_settings, source_ch)
    # forget the finished ranges, so the second run fetches every fill again, as new stream entries
    for key in await redis_client.keys("state:goldsky_backfill:*"):
        await redis_client.delete(key)

    assert await run_command(ops_backfill.main, "goldsky", *span, "--workers", "2") == 0
    await process_everything(redis_settings, source_ch)

    assert await items_added(redis_client, keys.STREAM_ORDER_EVENTS) == 2 * len(expected)
    client = make_client(source_ch)
    try:
        for table in ("trades", "order_filled_events"):
            count, unique = client.query(f"SELECT count(), uniqExact(id) FROM {table}").result_rows[0]
            assert (table, count, unique) == (table, len(expected), len(expected))
    finally:
        client.close()
    heartbeat = await redis_client.hgetall(keys.service_key("clickhouse_writer"))
    assert int(heartbeat[b"count:duplicates_skipped"]) == len(expected)  # the second run's


def test_backfill_rejects_a_backwards_range(capsys):
    assert ops_backfill.main(["goldsky", "--from", "2026-04-28", "--to", "2026-04-27"]) == 2
    assert "FROM <= TO" in capsys.readouterr().err
