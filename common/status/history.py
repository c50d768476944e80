"""What needs more than one read: counter rates, how long a cursor has stood still, and the charts' history.

Counters in a heartbeat are totals since the service's `started_at`, refreshed at each heartbeat. A rate is the
difference between two heartbeats over the time between them. A restart (a new `started_at`, or a counter that
went down) starts from zero at `started_at`. A read that sees the same heartbeat again keeps the last rate; a dead
or stopped service has rate 0.
"""

from __future__ import annotations

from collections import deque

from common.status.models import CursorStatus, History, PipelineStatus, ServiceStatus

# chart series -> (service name prefixes, counter)
THROUGHPUT_SERIES: dict[str, tuple[tuple[str, ...], str]] = {
    "fills ingested": (("goldsky_ingester", "chain_ingester"), "fills"),
    "trades derived": (("trade_processor",), "trades"),
    "rows written": (("clickhouse_writer",), "rows_written"),
}


def compute_rates(previous: ServiceStatus | None, current: ServiceStatus) -> dict[str, float]:
    if current.state in ("dead", "stopped", "absent") or current.heartbeat_at is None:
        return {}
    if previous is None or previous.heartbeat_at is None:
        return {}
    if current.heartbeat_at == previous.heartbeat_at:
        return dict(previous.rates)
    restarted = current.started_at != previous.started_at or any(
        value < previous.counters.get(name, 0) for name, value in current.counters.items()
    )
    if restarted:
        elapsed_s = current.heartbeat_at - (current.started_at or current.heartbeat_at)
        before: dict[str, int] = {}
    else:
        elapsed_s = current.heartbeat_at - previous.heartbeat_at
        before = previous.counters
    if elapsed_s <= 0:
        return {}
    return {name: round((value - before.get(name, 0)) / elapsed_s, 3) for name, value in current.counters.items()}


def throughput(status: PipelineStatus) -> dict[str, float | None]:
    series: dict[str, float | None] = {}
    for label, (prefixes, counter) in THROUGHPUT_SERIES.items():
        series[label] = round(sum(s.rates.get(counter, 0.0) for s in status.services if s.name.startswith(prefixes)), 3)
    return series


def backlog(status: PipelineStatus) -> dict[str, int | None]:
    """Lag + pending per `stream/group`: what the group has not finished yet."""
    return {
        f"{stream.name}/{group.name}": (group.lag + group.pending) if group.lag is not None else None
        for stream in status.streams
        for group in stream.groups
        if group.exists
    }


class Observer:
    """Feeds each new status the previous one: fills in rates and cursor ages, keeps the charts' window."""

    def __init__(self, *, window_s: float = 900.0, interval_s: float = 2.0) -> None:
        self.previous: PipelineStatus | None = None
        self.cursor_moved_at: dict[str, tuple[str, float]] = {}
        self.points: deque[tuple[float, dict[str, float | None], dict[str, int | None]]] = deque(
            maxlen=max(2, int(window_s / interval_s) + 1)
        )

    def observe(self, status: PipelineStatus) -> PipelineStatus:
        before = {s.name: s for s in self.previous.services} if self.previous else {}
        for service in status.services:
            service.rates = compute_rates(before.get(service.name), service)
        for cursor in status.cursors:
            self._age(cursor, status.generated_at)
        if status.redis.ok:
            self.points.append((status.generated_at, throughput(status), backlog(status)))
            self.previous = status
        return status

    def _age(self, cursor: CursorStatus, now: float) -> None:
        seen = self.cursor_moved_at.get(cursor.key)
        if seen is None or seen[0] != cursor.value:
            # first sight counts as a move: the age is "at least this long", never invented
            self.cursor_moved_at[cursor.key] = (cursor.value, now)
            seen = self.cursor_moved_at[cursor.key]
        cursor.age_s = round(now - seen[1], 1)

    def history(self) -> History:
        names_t = sorted({name for _, series, _ in self.points for name in series})
        names_b = sorted({name for _, _, series in self.points for name in series})
        return History(
            t=[t for t, _, _ in self.points],
            throughput={name: [series.get(name) for _, series, _ in self.points] for name in names_t},
            backlog={name: [series.get(name) for _, _, series in self.points] for name in names_b},
        )
