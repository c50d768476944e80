"""The comparison of `verify --against data-api`: counts exactly, volumes within the tolerance, per market and hour."""

from __future__ import annotations

from pipeline.ops.verify_data_api import Comparison, Side, Tolerance, compare

H0, H1 = 1_777_334_400, 1_777_338_000
TOLERANCE = Tolerance(absolute=0.01, relative=1e-6)


def differences(ours: Side, theirs: Side, tolerance: Tolerance = TOLERANCE) -> list[Comparison]:
    return [row for row in compare(ours, theirs, tolerance) if row.differs]


def side(*rows: tuple[str, int, int, float, float]) -> Side:
    result = Side()
    for condition, hour, trades, shares, usd in rows:
        result.by_hour[(condition, hour)].add(trades, shares, usd)
    return result


def test_float_noise_within_the_tolerance_is_no_difference() -> None:
    ours = side(("0xa", H0, 3, 1_000_000.0, 512_345.67), ("0xb", H1, 1, 0.5, 0.25))
    theirs = side(("0xa", H0, 3, 1_000_000.9, 512_345.675), ("0xb", H1, 1, 0.505, 0.2549))
    assert differences(ours, theirs) == []


def test_a_missing_trade_is_named_with_its_market_total_and_its_hour() -> None:
    ours = side(("0xa", H0, 3, 30.0, 15.0), ("0xa", H1, 2, 20.0, 10.0))
    theirs = side(("0xa", H0, 3, 30.0, 15.0), ("0xa", H1, 1, 10.0, 5.0))
    found = differences(ours, theirs)
    assert [(d.condition, d.hour, d.ours.trades, d.theirs.trades) for d in found] == [("0xa", None, 5, 4),
                                                                                      ("0xa", H1, 2, 1)]  # fmt: skip


def test_hours_that_cancel_out_in_the_total_still_show_and_a_market_only_one_side_has_shows() -> None:
    ours = side(("0xa", H0, 2, 20.0, 10.0), ("0xa", H1, 1, 10.0, 5.0))
    theirs = side(("0xa", H0, 1, 10.0, 5.0), ("0xa", H1, 2, 20.0, 10.0), ("0xc", H0, 1, 1.0, 0.5))
    found = [(d.condition, d.hour) for d in differences(ours, theirs)]
    assert found == [("0xc", None), ("0xa", H0), ("0xa", H1), ("0xc", H0)]


def test_a_volume_beyond_the_tolerance_differs_with_equal_counts() -> None:
    ours, theirs = side(("0xa", H0, 1, 100.0, 50.0)), side(("0xa", H0, 1, 100.0, 50.02))
    assert [d.hour for d in differences(ours, theirs)] == [None, H0]
    assert differences(ours, theirs, Tolerance(absolute=0.05, relative=0.0)) == []


def test_every_market_and_hour_is_compared_the_matching_ones_marked_so() -> None:
    ours = side(("0xa", H0, 1, 1.0, 0.5), ("0xb", H1, 2, 2.0, 1.0))
    theirs = side(("0xa", H0, 1, 1.0, 0.5), ("0xb", H1, 1, 1.0, 0.5))
    rows = [(row.condition, row.hour, row.differs) for row in compare(ours, theirs, TOLERANCE)]
    assert rows == [("0xa", None, False), ("0xb", None, True), ("0xa", H0, False), ("0xb", H1, True)]
