"""The bench and chaos helpers that need no process: kill schedules, percentiles, drain and truth verdicts."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from decimal import Decimal

from pipeline.harness.bench_report import cpu_per_fill, cpu_text, percentile, redis_command_figures
from pipeline.harness.chaos import VICTIMS, ChaosResult, kill_schedule, verdict_line
from pipeline.harness.fleet import _stream_id, read_cpu_s, read_status_kb
from pipeline.harness.truth_check import Verdict, problems_of


def make_verdict(**changes) -> Verdict:
    fields = dict(
        expected=100,
        counts={"trades": (100, 100), "order_filled_events": (100, 100)},
        usd=Decimal("12.5"),
        usd_expected=Decimal("12.5"),
        tokens=Decimal("3"),
        tokens_expected=Decimal("3"),
        unresolved_tokens=[],
        dlq=0,
    )
    verdict = Verdict(**(fields | changes))
    verdict.problems = problems_of(verdict)
    return verdict


def test_every_round_of_the_kill_schedule_hits_every_kind_once():
    schedule = kill_schedule(random.Random(3), 2 * len(VICTIMS) + 3)
    assert len(schedule) == 2 * len(VICTIMS) + 3
    assert Counter(schedule[: len(VICTIMS)]) == Counter(VICTIMS)
    assert Counter(schedule[len(VICTIMS) : 2 * len(VICTIMS)]) == Counter(VICTIMS)
    assert {"redis", "clickhouse"} <= set(schedule[: len(VICTIMS)])


def test_nearest_rank_percentile():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([0.7], 99) == 0.7


def test_cpu_per_fill_leaves_the_simulator_out_and_divides_fill_ingesters_by_what_they_emitted():
    cpu_s = {"simulator": 9.0, "redis": 2.0, "goldsky_ingester": 1.0, "chain_ingester": 0.5, "clickhouse_writer": 1.5}
    figures = cpu_per_fill(cpu_s, 100_000, {"goldsky": 80_000, "chain": 20_000})
    assert "simulator" not in figures
    assert figures["redis"] == 20.0 and figures["goldsky_ingester"] == 10.0
    assert figures["goldsky_ingester/own"] == 12.5 and figures["chain_ingester/own"] == 25.0
    assert figures["total"] == 50.0


def test_an_ingester_that_emitted_nothing_gets_no_own_figure_and_the_text_names_the_count():
    cpu_s = {"goldsky_ingester": 1.0, "chain_ingester": 0.5}
    figures = cpu_per_fill(cpu_s, 100_000, {"chain": 20_000})
    assert "goldsky_ingester/own" not in figures
    tp = {"cpu_us_per_fill": figures, "fills_per_source": {"chain": 20_000}}
    assert cpu_text(tp, "chain_ingester") == "5.0 CPU-µs per fill (25.0 per chain fill, 20,000 emitted)"
    assert cpu_text(tp, "goldsky_ingester") == "10.0 CPU-µs per fill"


def test_stream_ids_compare_numerically():
    assert _stream_id(b"1795642781474-5") < _stream_id("1795642781474-10") < _stream_id("1795642781475-0")


def test_proc_readers_see_this_process_and_zero_for_a_missing_one():
    assert read_status_kb(os.getpid(), "VmRSS") > 0
    assert read_cpu_s(os.getpid()) > 0
    assert (read_status_kb(2**22 + 1, "VmRSS"), read_cpu_s(2**22 + 1)) == (0, 0.0)


def test_a_clean_run_passes_with_zero_lost_and_zero_duplicated():
    verdict = make_verdict()
    result = ChaosResult(verdict, Counter(dict.fromkeys(VICTIMS, 1)), 10.0, "")
    assert result.passed
    line = verdict_line(result)
    assert "100 fills, 8 kills" in line and "0 lost, 0 duplicated, usd exact, tokens exact, dlq 0" in line
    assert line.endswith("PASS")


def test_duplicates_losses_sums_orphans_and_dead_letters_each_fail_the_verdict():
    duplicated = make_verdict(counts={"trades": (101, 100), "order_filled_events": (100, 100)})
    lost = make_verdict(counts={"trades": (99, 99), "order_filled_events": (100, 100)})
    assert (duplicated.duplicated, duplicated.lost, lost.lost) == (1, 0, 1)
    for verdict in (
        duplicated,
        lost,
        make_verdict(usd=Decimal("12.4")),
        make_verdict(tokens=Decimal("2")),
        make_verdict(unresolved_tokens=["123"]),
        make_verdict(dlq=1),
    ):
        assert not verdict.ok


def test_a_kind_never_killed_or_a_pipeline_that_never_drained_fails():
    kills = Counter(dict.fromkeys(VICTIMS, 1)) - Counter(["redis"])
    assert not ChaosResult(make_verdict(), kills, 1.0, "").passed
    assert "never killed: redis" in verdict_line(ChaosResult(make_verdict(), kills, 1.0, ""))
    full = Counter(dict.fromkeys(VICTIMS, 1))
    assert not ChaosResult(make_verdict(), full, 1.0, "", not_converged="lag").passed


def test_redis_command_figures_are_per_fill_and_costliest_first():
    stats = {
        "cmdstat_xadd": {"calls": 2000, "usec": 3000, "usec_per_call": 1.5},
        "cmdstat_evalsha": {"calls": 4, "usec": 12000, "usec_per_call": 3000.0},
        "cmdstat_ping": {"calls": 1, "usec": 1, "usec_per_call": 1.0},
    }
    figures = redis_command_figures(stats, fills=1000)
    assert list(figures) == ["evalsha", "xadd", "ping"]
    assert figures["evalsha"] == {"us_per_fill": 12.0, "calls_per_fill": 0.004}
    assert figures["xadd"] == {"us_per_fill": 3.0, "calls_per_fill": 2.0}


def test_cpu_figures_count_the_children_a_process_reaped():
    # Redis rewrites its AOF in a forked child: that CPU is the pipeline's too
    before = read_cpu_s(os.getpid())
    subprocess.run(
        [sys.executable, "-c", "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"],
        check=True,
    )
    assert read_cpu_s(os.getpid()) - before >= 0.25
