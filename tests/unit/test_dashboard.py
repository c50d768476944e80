"""Pure parts of the dashboard and the operator commands: states, rates, cursor ages, metrics, masking, retry plans."""

from __future__ import annotations

import argparse

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common import keys
from common.payloads import DeadLetter, encode_dead_letter
from common.status.history import Observer, compute_rates
from common.status.models import (
    ClickHouseStatus,
    CursorStatus,
    GroupStatus,
    PipelineStatus,
    RedisStatus,
    ServiceStatus,
    StreamStatus,
    TableStatus,
)
from common.status.redaction import MASK, redact
from common.status.snapshot import (
    chain_distance,
    cursor_status,
    dead_letter_view,
    group_status,
    is_instance_of,
    service_status,
)
from dashboard.metrics import render_metrics
from pipeline.ops.command import add_time_range, make_parser, parse_range, parse_time
from pipeline.ops.dlq import DlqEntry, retry_plan, select

NOW = 1_800_000_000.0


def heartbeat(**fields: str) -> dict[bytes, bytes]:
    base = {"state": "running", "heartbeat_at": f"{NOW - 1}", "started_at": f"{NOW - 100}", "pid": "7"}
    return {k.encode(): v.encode() for k, v in {**base, **fields}.items()}


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"state": "running"}, "running"),
        ({"state": "degraded", "last_error": "HTTP 503"}, "degraded"),
        ({"heartbeat_at": f"{NOW - 60}"}, "dead"),
        ({"state": "stopped", "heartbeat_at": f"{NOW - 600}"}, "stopped"),
        ({"state": "degraded", "heartbeat_at": f"{NOW - 60}"}, "dead"),
    ],
)
def test_service_state_from_heartbeat(fields: dict[str, str], state: str) -> None:
    status = service_status("x", heartbeat(**fields), now=NOW, dead_after_s=15)
    assert status.state == state


def test_missing_heartbeat_is_absent_and_counters_are_parsed() -> None:
    assert service_status("x", {}, now=NOW, dead_after_s=15).state == "absent"
    status = service_status("x", heartbeat(**{"count:fills": "12", "count:rows_trades": "3"}), now=NOW, dead_after_s=15)
    assert status.counters == {"fills": 12, "rows_trades": 3} and status.pid == 7
    assert status.heartbeat_age_s == pytest.approx(1.0)


def test_heartbeat_with_unreadable_values_still_shows_the_service() -> None:
    status = service_status("x", heartbeat(heartbeat_at="soon", pid="x", **{"count:fills": "?"}), now=NOW,
                            dead_after_s=15)  # fmt: skip
    assert (status.state, status.reported_state, status.heartbeat_at, status.pid) == ("dead", "running", None, None)
    assert status.counters == {"fills": 0} and status.started_at == NOW - 100


def test_dead_letter_view_shows_the_letter_and_survives_a_malformed_one() -> None:
    data = encode_dead_letter(stream=keys.STREAM_TRADES, entry_id="9-1", payload=b"{}", error="x" * 600,
                              deliveries=6, group=keys.GROUP_CLICKHOUSE_WRITER)  # fmt: skip
    view = dead_letter_view(b"5-0", {b"data": data})
    assert (view.id, view.stream, view.group, view.entry_id, view.deliveries) == (
        "5-0", keys.STREAM_TRADES, keys.GROUP_CLICKHOUSE_WRITER, "9-1", 6)  # fmt: skip
    assert view.error == "x" * 500 and view.time is not None
    broken = dead_letter_view(b"6-0", {b"data": b"{not json"})
    assert broken.id == "6-0" and broken.error.startswith("unparseable dead letter") and broken.entry_id is None


def service(at: float, started: float = NOW - 100, state: str = "running", **counters: int) -> ServiceStatus:
    return ServiceStatus(name="s", state=state, heartbeat_at=at, started_at=started, counters=counters)


def test_rates_from_heartbeat_deltas_restarts_and_repeated_heartbeats() -> None:
    first = service(NOW, fills=100)
    second = service(NOW + 2, fills=300)
    assert compute_rates(None, first) == {}
    second.rates = compute_rates(first, second)
    assert second.rates == {"fills": 100.0}
    assert compute_rates(second, service(NOW + 2, fills=300)) == {"fills": 100.0}  # same heartbeat seen again
    restarted = service(NOW + 4, started=NOW + 3, fills=5)
    assert compute_rates(second, restarted) == {"fills": 5.0}  # from zero at the new started_at
    went_down = service(NOW + 4, fills=50)
    assert compute_rates(second, went_down) == {"fills": pytest.approx(50 / 104, abs=1e-3)}  # a restart too
    assert compute_rates(second, service(NOW + 4, state="dead", fills=400)) == {}


def test_cursor_age_counts_from_the_last_move_seen() -> None:
    observer = Observer(window_s=60, interval_s=1)

    def observe(at: float, value: str) -> CursorStatus:
        status = PipelineStatus(generated_at=at, redis=RedisStatus(ok=True), clickhouse=ClickHouseStatus(ok=True),
                                cursors=[CursorStatus(key="state:x", value=value)])  # fmt: skip
        return observer.observe(status).cursors[0]

    assert observe(NOW, "1").age_s == 0
    assert observe(NOW + 5, "1").age_s == 5
    assert observe(NOW + 6, "2").age_s == 0
    assert len(observer.history().t) == 3


def test_goldsky_cursor_is_behind_by_now_minus_its_timestamp() -> None:
    assert cursor_status(keys.STATE_GOLDSKY_LAST_TIMESTAMP, str(int(NOW) - 30), now=NOW).behind_s == 30
    assert cursor_status(keys.STATE_CHAIN_LAST_BLOCK, "123", now=NOW).behind_s is None


@pytest.mark.parametrize(
    ("chain_head", "safe_head", "distances"),
    [
        (b"1900", b"1200", (200, 700)),  # finality stalled 700 blocks behind the head
        (None, b"1200", (200, None)),
        (b"1900", None, (None, None)),  # no safe head published: nothing to measure against
        (b"1900", b"900", (0, 1000)),  # a cursor past the safe head (a lower CHAIN_CONFIRMATIONS) is not negative
    ],
)
def test_chain_cursor_distances_come_from_the_ingesters_heads(
    chain_head: bytes | None, safe_head: bytes | None, distances: tuple[int | None, int | None]
) -> None:
    cursor = CursorStatus(key=keys.STATE_CHAIN_LAST_BLOCK, value="1000")
    chain_distance(cursor, chain_head, safe_head)
    assert (cursor.behind_blocks, cursor.finality_lag_blocks) == distances


def test_worker_names_belong_to_their_service() -> None:
    assert is_instance_of("trade_processor", "trade_processor")
    assert is_instance_of("trade_processor-2", "trade_processor")
    assert is_instance_of("trade_processor@host", "trade_processor")
    assert not is_instance_of("goldsky_ingester_backfill", "goldsky_ingester")


def sample_status() -> PipelineStatus:
    return PipelineStatus(
        generated_at=NOW, redis=RedisStatus(ok=True),
        clickhouse=ClickHouseStatus(ok=True, tables=[TableStatus(name="trades", rows=42)], newest_trade_at=NOW - 5),
        streams=[StreamStatus(name=keys.STREAM_TRADES, length=3, entries_added=7, items_added=7000,
                              groups=[GroupStatus(name="clickhouse-writer", exists=True, lag=2, pending=1)]),
                 StreamStatus(name=keys.STREAM_MARKETS, length=1, entries_added=4)],
        services=[service(NOW, rows_trades=42, rows_written=50, insert_ms=1500, errors=1).model_copy(
            update={"name": "clickhouse_writer"})],
        cursors=[CursorStatus(key="state:goldsky_last_timestamp", value="1", age_s=3.0, behind_s=9.0),
                 CursorStatus(key=keys.STATE_CHAIN_LAST_BLOCK, value="90", behind_blocks=10,
                              finality_lag_blocks=700)],
    )  # fmt: skip


def test_metrics_are_valid_prometheus_text_with_pipeline_names() -> None:
    body = render_metrics(sample_status()).decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert all(name.startswith("pipeline_") for name in families)
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    writer = "clickhouse_writer"
    assert value("pipeline_clickhouse_rows", table="trades") == 42
    assert value("pipeline_group_lag", group="clickhouse-writer", stream=keys.STREAM_TRADES) == 2
    assert value("pipeline_stream_length", stream=keys.STREAM_TRADES) == 3  # entries now
    assert value("pipeline_stream_entries_total", stream=keys.STREAM_TRADES) == 7  # entries appended
    assert value("pipeline_stream_items_total", stream=keys.STREAM_TRADES) == 7000  # the items they held
    assert value("pipeline_stream_entries_total", stream=keys.STREAM_MARKETS) == 4
    assert ("pipeline_stream_items_total", (("stream", keys.STREAM_MARKETS),)) not in values  # not counted: absent
    assert value("pipeline_clickhouse_insert_rows_total", service=writer, table="trades") == 42
    assert value("pipeline_clickhouse_insert_seconds_total", service=writer) == 1.5
    assert value("pipeline_service_failed_total", counter="errors", service=writer) == 1
    assert value("pipeline_service_processed_created", counter="rows_written", service=writer) == NOW - 100
    assert value("pipeline_cursor_age_seconds", cursor="state:goldsky_last_timestamp") == 3
    assert value("pipeline_up", dependency="clickhouse") == 1
    assert value("pipeline_source_behind_blocks", cursor=keys.STATE_CHAIN_LAST_BLOCK) == 10
    assert value("pipeline_chain_finality_lag_blocks", cursor=keys.STATE_CHAIN_LAST_BLOCK) == 700


def test_redact_masks_every_secret_longest_first() -> None:
    body = b'{"e": "POST https://rpc.example/v2/KEY123 failed, password hunter22"}'
    masked = redact(body, ("https://rpc.example/v2/KEY123", "KEY123", "hunter22", ""))
    assert b"KEY123" not in masked and b"hunter22" not in masked and masked.count(MASK.encode()) == 2


@pytest.mark.parametrize(
    ("text", "ts"), [("1714000000", 1714000000), ("2026-04-28", 1777334400), ("2026-04-28T01:00:00+01:00", 1777334400)]
)
def test_times_are_unix_seconds_or_iso(text: str, ts: int) -> None:
    assert parse_time(text) == ts


def test_a_range_that_ends_before_it_starts_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    parser = make_parser("replay", "doc")
    add_time_range(parser)
    assert vars(parse_range(parser, ["--from", "100", "--to", "100"])) == {"start": 100, "end": 100}
    with pytest.raises(SystemExit) as exited:
        parse_range(parser, ["--from", "200", "--to", "100"])
    assert exited.value.code == 2 and "--to is before --from" in capsys.readouterr().err


def letter(dlq_id: str, group: str, entry_id: str | None, stream: str = keys.STREAM_ORDER_EVENTS) -> DlqEntry:
    return DlqEntry(dlq_id, DeadLetter(stream=stream, group=group, entry_id=entry_id, payload="{}", error="e",
                                       deliveries=1, time=None))  # fmt: skip


def test_retry_plan_only_redelivers_what_every_group_of_the_stream_gave_up_on() -> None:
    every = [
        letter("1-0", keys.GROUP_TRADE_PROCESSOR, "9-1"),
        letter("2-0", keys.GROUP_CLICKHOUSE_WRITER, "9-1"),
        letter("3-0", keys.GROUP_CLICKHOUSE_WRITER, "9-2"),
        letter("4-0", "", None),
        letter("5-0", keys.GROUP_CLICKHOUSE_WRITER, "9-3", stream=keys.STREAM_TRADES),
    ]
    plans, skipped = retry_plan(every, every, force=False)
    assert [[x.id for x in plan] for plan in plans] == [["1-0", "2-0"], ["5-0"]]
    assert len(skipped) == 2 and "trade-processor already processed" in skipped[0] and "malformed" in skipped[1]
    forced, _ = retry_plan(every, every, force=True)
    assert [[x.id for x in plan] for plan in forced] == [["1-0", "2-0"], ["3-0"], ["5-0"]]
    chosen = select(every, argparse.Namespace(id=["3-0"], all=False, stream=None, group=None))
    assert [x.id for x in chosen] == ["3-0"]


def test_group_that_was_given_the_last_entry_has_no_lag_whatever_xinfo_says() -> None:
    # Redis 7.0 after an AOF reload: everything delivered and acked, yet XINFO GROUPS still reports lag 8
    info = {"name": b"clickhouse-writer", "lag": 8, "pending": 0, "last-delivered-id": b"1795640000000-3"}
    assert group_status(info, [], "1795640000000-3").lag == 0
    assert group_status(info, [], "1795640000001-0").lag == 8
