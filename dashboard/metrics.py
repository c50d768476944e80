"""`/metrics`: the status read as Prometheus families, built at scrape time (no state of its own).

Names follow Prometheus practice: prefix `pipeline_`, counters end in `_total`, durations in `_seconds`. Service
counters are totals since the service started (a restart resets them, which `rate()` handles); their `_created`
sample is the service's `started_at`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from common.status.models import PipelineStatus

FAILURE_COUNTERS = frozenset({"errors", "dead_lettered", "dead_letters"})
UP_STATES = frozenset({"running", "degraded", "standby", "starting", "stopping"})
WRITER = "clickhouse_writer"


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


def service_families(status: PipelineStatus) -> Iterator[Metric]:
    processed = CounterMetricFamily("pipeline_service_processed", "Items a service handled since it started",
                                    labels=["service", "counter"])  # fmt: skip
    failed = CounterMetricFamily("pipeline_service_failed", "Errors and dead letters since the service started",
                                 labels=["service", "counter"])  # fmt: skip
    up = _gauge("pipeline_service_up", "1 while the service heartbeats (running or degraded)", ["service"])
    degraded = _gauge("pipeline_service_degraded", "1 while the service reports degraded", ["service"])
    age = _gauge("pipeline_service_heartbeat_age_seconds", "Seconds since the last heartbeat", ["service"])
    gauges = _gauge("pipeline_service_gauge", "A value the service sets (e.g. exchange_upgrades_unacknowledged)",
                    ["service", "gauge"])  # fmt: skip
    for service in status.services:
        for counter, value in sorted(service.counters.items()):
            family = failed if counter in FAILURE_COUNTERS else processed
            family.add_metric([service.name, counter], value, created=service.started_at)
        up.add_metric([service.name], 1 if service.state in UP_STATES else 0)
        degraded.add_metric([service.name], 1 if service.state == "degraded" else 0)
        if service.heartbeat_age_s is not None:
            age.add_metric([service.name], service.heartbeat_age_s)
        for gauge, value in sorted(service.gauges.items()):
            gauges.add_metric([service.name, gauge], value)
    yield from (processed, failed, up, degraded, age, gauges)


def stream_families(status: PipelineStatus) -> Iterator[Metric]:
    length = _gauge("pipeline_stream_length", "Entries in the stream (XLEN)", ["stream"])
    entries = CounterMetricFamily("pipeline_stream_entries", "Entries appended since the stream was created",
                                  labels=["stream"])  # fmt: skip
    # an entry is a page of 1..N items; absent for a stream `stream:items` does not count (appended before pages)
    items = CounterMetricFamily("pipeline_stream_items", "Items (fills, trades, markets, events) appended since the "
                                "stream was created", labels=["stream"])  # fmt: skip
    lag = _gauge("pipeline_group_lag", "Entries not yet delivered to the group (XINFO GROUPS lag)", ["stream", "group"])
    pending = _gauge("pipeline_group_pending", "Entries delivered but not acknowledged", ["stream", "group"])
    consumers = _gauge("pipeline_group_consumers", "Consumers in the group", ["stream", "group"])
    for stream in status.streams:
        length.add_metric([stream.name], stream.length)
        if stream.entries_added is not None:
            entries.add_metric([stream.name], stream.entries_added)
        if stream.items_added is not None:
            items.add_metric([stream.name], stream.items_added)
        for group in (g for g in stream.groups if g.exists):
            if group.lag is not None:
                lag.add_metric([stream.name, group.name], group.lag)
            pending.add_metric([stream.name, group.name], group.pending)
            consumers.add_metric([stream.name, group.name], len(group.consumers))
    dlq = _gauge("pipeline_dlq_length", "Entries in stream:dlq")
    dlq.add_metric([], status.dlq.length)
    yield from (length, entries, items, lag, pending, consumers, dlq)


def cursor_families(status: PipelineStatus) -> Iterator[Metric]:
    age = _gauge("pipeline_cursor_age_seconds", "Seconds since the cursor last moved (seen by the dashboard)",
                 ["cursor"])  # fmt: skip
    behind = _gauge("pipeline_source_behind_seconds", "Now minus the cursor's source timestamp", ["cursor"])
    blocks = _gauge("pipeline_source_behind_blocks", "Safe head minus the chain cursor, when known", ["cursor"])
    finality = _gauge("pipeline_chain_finality_lag_blocks", "Chain head minus the safe head (finalized)", ["cursor"])
    for cursor in status.cursors:
        if cursor.age_s is not None:
            age.add_metric([cursor.key], cursor.age_s)
        if cursor.behind_s is not None:
            behind.add_metric([cursor.key], cursor.behind_s)
        if cursor.behind_blocks is not None:
            blocks.add_metric([cursor.key], cursor.behind_blocks)
        if cursor.finality_lag_blocks is not None:
            finality.add_metric([cursor.key], cursor.finality_lag_blocks)
    unresolved = _gauge("pipeline_unresolved_markets", "Trades without a market", ["where"])
    unresolved.add_metric(["token_lookups"], status.unresolved.lookups_pending)
    unresolved.add_metric(["emitted_by_processor"], status.unresolved.emitted_without_market)
    unresolved.add_metric(["excluded_by_gamma_versions"], status.unresolved.excluded_by_versions)
    if status.unresolved.trades_without_market is not None:
        unresolved.add_metric(["clickhouse_trades"], status.unresolved.trades_without_market)
    by_module = _gauge("pipeline_unresolved_trades_by_module", "Trades without a market by token kind", ["module"])
    for module, n in status.unresolved.by_module.items():
        by_module.add_metric([module], n)
    yield from (age, behind, blocks, finality, unresolved, by_module)


def clickhouse_families(status: PipelineStatus) -> Iterator[Metric]:
    ch = status.clickhouse
    rows = _gauge("pipeline_clickhouse_rows", "Rows per table (count() without FINAL)", ["table"])
    for table in ch.tables:
        rows.add_metric([table.name], table.rows)
    newest = _gauge("pipeline_clickhouse_newest_trade_timestamp_seconds", "Time of the newest trade in ClickHouse")
    if ch.newest_trade_at is not None:
        newest.add_metric([], ch.newest_trade_at)
    inserted = CounterMetricFamily("pipeline_clickhouse_insert_rows", "Rows the writer inserted, per table",
                                   labels=["service", "table"])  # fmt: skip
    seconds = CounterMetricFamily(
        "pipeline_clickhouse_insert_seconds", "Time the writer spent in inserts", labels=["service"]
    )
    for writer in (s for s in status.services if s.name.startswith(WRITER)):
        for counter, value in writer.counters.items():
            if counter.startswith("rows_") and counter != "rows_written":
                inserted.add_metric([writer.name, counter.removeprefix("rows_")], value, created=writer.started_at)
        if "insert_ms" in writer.counters:
            seconds.add_metric([writer.name], writer.counters["insert_ms"] / 1000, created=writer.started_at)
    up = _gauge("pipeline_up", "1 when the dashboard reaches the dependency", ["dependency"])
    up.add_metric(["redis"], 1 if status.redis.ok else 0)
    up.add_metric(["clickhouse"], 1 if ch.ok else 0)
    yield from (rows, newest, inserted, seconds, up)


def metric_families(status: PipelineStatus) -> Iterator[Metric]:
    for families in (service_families, stream_families, cursor_families, clickhouse_families):
        yield from families(status)


class _StatusCollector:
    def __init__(self, status: PipelineStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        return metric_families(self.status)


def render_metrics(status: PipelineStatus) -> bytes:
    """The Prometheus text exposition of one status read."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status))
    return generate_latest(registry)
