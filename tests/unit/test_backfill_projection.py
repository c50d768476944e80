"""The bench's backfill projection (pipeline/harness/backfill_projection.py): its arithmetic, on the figures that
would expose a wrong unit, a missing cap or a request not counted."""

from __future__ import annotations

import pytest

from pipeline.harness import backfill_projection as projection


def test_the_measured_rate_gives_hours_for_the_whole_history() -> None:
    # issue 25: "1.2 billion v1 fills at today's rate [20,739 fills/s, the full run] takes about 16 hours"
    result = projection.project(20_739)
    assert result["fills"] == 1_200_000_000
    assert result["measured"] == {"fills_per_s": 20_739, "hours": 16.1}
    assert projection.project(0)["measured"]["hours"] == float("inf")


def test_goldsky_allows_its_query_rate_times_a_full_page() -> None:
    goldsky = projection.project(1)["goldsky"]
    assert goldsky["fills_per_s"] == 100 * 1000
    assert goldsky["hours"] == pytest.approx(1.2e9 / 1e5 / 3600, abs=0.05)  # 3.3 h


def test_the_rpc_is_bounded_by_its_results_cap_and_the_timestamp_requests() -> None:
    # 23.4 fills a block: a 10,000-block call would hold 234,000 fills, so the 10,000-result cap binds; those
    # 10,000 fills span ~427 blocks, whose timestamps take 5 POSTs of 100: 6 requests per 10,000 fills.
    dense = dict(fills_per_block=23.4, span_blocks=10_000, results_cap=10_000, block_batch_size=100)
    assert projection.rpc_fills_per_s(25, **dense) == pytest.approx(25 * 10_000 / 6)
    assert projection.rpc_fills_per_s(25, **dense, timestamps_in_reply=True) == 25 * 10_000
    # 0.5 fills a block: the span binds (5,000 fills a call), and at most one block per fill needs a timestamp
    sparse = dict(fills_per_block=0.5, span_blocks=10_000, results_cap=10_000, block_batch_size=100)
    assert projection.rpc_fills_per_s(25, **sparse) == pytest.approx(25 * 5_000 / 51)
    rpc = projection.project(1)["rpc"]
    assert (rpc["fills_per_s"], rpc["hours"]) == (41_667, 8.0)
    assert (rpc["fills_per_s_with_block_timestamps"], rpc["hours_with_block_timestamps"]) == (250_000, 1.3)


def test_the_line_names_every_figure() -> None:
    line = projection.describe(projection.project(9_975))
    for text in ("33.4 h at the measured 9,975 fills/s", "Goldsky 100,000 fills/s, 3.3 h", "RPC 41,667 fills/s, 8.0 h"):
        assert text in line
