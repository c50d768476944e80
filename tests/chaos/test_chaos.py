"""The short chaos run (CI): ~30,000 fills, every service kind SIGKILLed at least once, upstream faults on, and
both fill sources over the same v1 range (Goldsky, and the chain ingester from the first block), so every v1 fill
arrives twice: count() must still equal the truth.

Excluded from the default run (`-m 'not chaos'`); `.ci/run` runs it with `pytest -m chaos tests/chaos`. The long
form is `python -m pipeline chaos` (300,000 fills, 20 kills).
"""

from __future__ import annotations

import pytest

from pipeline.harness.chaos import DEFAULT_FAULTS, VICTIMS, run_chaos


@pytest.mark.chaos
@pytest.mark.timeout(420)
def test_killing_every_service_kind_under_faults_loses_and_duplicates_nothing(tmp_path):
    result = run_chaos(
        tmp_path / "chaos",
        fills=30_000,
        kills=len(VICTIMS) + 2,
        kill_interval_s=3.0,
        faults=DEFAULT_FAULTS,
        seed=7,
        converge_timeout_s=180.0,
        overlap=True,
    )
    print(result.line)
    assert result.verdict.problems == []
    assert {victim: result.kills[victim] >= 1 for victim in VICTIMS} == dict.fromkeys(VICTIMS, True)
    assert (result.verdict.lost, result.verdict.duplicated, result.verdict.dlq) == (0, 0, 0)
    assert result.verdict.expected >= 30_000
    assert result.served_twice > 5_000 and result.appended >= result.verdict.expected + result.served_twice
    assert result.passed
