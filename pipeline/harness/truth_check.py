"""Check ClickHouse and Redis against the simulator's ground truth: nothing lost, nothing counted twice.

One function, `check_against_truth(fleet)`, used by the chaos run (as its verdict) and by the benchmark (as a
sanity check). Every figure is read without FINAL, so a duplicate that ClickHouse has not merged away yet counts:
- `count()` and `uniqExact(id)` of `trades` and of `order_filled_events` equal the truth's fill count;
- `sum(usd_amount)` equals the truth's `usdc_sum` / 1e6 and `sum(token_amount)` its `token_sum` / 1e6, exactly
  (Decimal, from `toString` of the Decimal sum);
- a trade has `market_id = ''` only when its token belongs to a market that never appears on Gamma
  (`unlisted_token_ids`) or is a Combo position, which no market owns (`combo_position_ids`); late-listed markets
  must have been resolved;
- `stream:dlq` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common import keys, tables
from pipeline.harness.fleet import Fleet

SCALE = Decimal(1_000_000)


@dataclass
class Verdict:
    expected: int
    counts: dict[str, tuple[int, int]]  # table -> (count(), uniqExact(id))
    usd: Decimal
    usd_expected: Decimal
    tokens: Decimal
    tokens_expected: Decimal
    unresolved_tokens: list[str]  # tokens of trades with market_id = '' that a market on Gamma owns
    dlq: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def lost(self) -> int:
        return max(0, self.expected - min(unique for _, unique in self.counts.values()))

    @property
    def duplicated(self) -> int:
        return max(count - unique for count, unique in self.counts.values())

    def summary(self) -> str:
        usd = "usd exact" if self.usd == self.usd_expected else f"usd {self.usd} != {self.usd_expected}"
        tokens = "tokens exact" if self.tokens == self.tokens_expected else f"tokens {self.tokens} != expected"
        return f"{self.lost:,} lost, {self.duplicated:,} duplicated, {usd}, {tokens}, dlq {self.dlq}"


def fetch_truth(fleet: Fleet) -> dict[str, Any]:
    """The truth summary (no per-fill list)."""
    return fleet.sim("GET", "/_sim/truth", params={"fills": 0})


def check_against_truth(fleet: Fleet, truth: dict[str, Any] | None = None) -> Verdict:
    truth = truth if truth is not None else fetch_truth(fleet)
    expected = int(truth["count"])
    counts = {}
    for table in tables.FILL_TABLES:
        count, unique = fleet.ch(f"SELECT count(), uniqExact(id) FROM {table}").split()
        counts[table] = (int(count), int(unique))
    sums = f"SELECT toString(sum(usd_amount)), toString(sum(token_amount)) FROM {tables.TRADES}"
    usd, tokens = fleet.ch(sums).split()
    unowned = set(truth["unlisted_token_ids"]) | set(truth["combo_position_ids"])
    empty_market_tokens = fleet.ch(f"SELECT DISTINCT token_id FROM {tables.TRADES} WHERE market_id = ''").split()
    client = fleet.redis()
    try:
        dlq = int(client.xlen(keys.under(fleet.key_prefix, keys.STREAM_DLQ)))
    finally:
        client.close()
    verdict = Verdict(
        expected=expected,
        counts=counts,
        usd=Decimal(usd),
        usd_expected=Decimal(int(truth["usdc_sum"])) / SCALE,
        tokens=Decimal(tokens),
        tokens_expected=Decimal(int(truth["token_sum"])) / SCALE,
        unresolved_tokens=sorted(set(empty_market_tokens) - unowned),
        dlq=dlq,
    )
    verdict.problems = problems_of(verdict)
    return verdict


def problems_of(verdict: Verdict) -> list[str]:
    problems = []
    for table, (count, unique) in verdict.counts.items():
        if count != verdict.expected or unique != verdict.expected:
            problems.append(f"{table}: count {count:,}, uniqExact(id) {unique:,}, truth {verdict.expected:,}")
    if verdict.usd != verdict.usd_expected:
        problems.append(f"sum(usd_amount) {verdict.usd} != truth {verdict.usd_expected}")
    if verdict.tokens != verdict.tokens_expected:
        problems.append(f"sum(token_amount) {verdict.tokens} != truth {verdict.tokens_expected}")
    if verdict.unresolved_tokens:
        problems.append(f"{len(verdict.unresolved_tokens)} listed tokens have trades without a market")
    if verdict.dlq:
        problems.append(f"stream:dlq holds {verdict.dlq} entries")
    return problems
