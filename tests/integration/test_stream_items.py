"""Items beside entries (an entry is a page of 1..N items), against a real redis-server: the status read, `/metrics`,
`python -m pipeline status` and the bench's counts, with the `stream:items` hash holding counts and without it (a
deployment from before pages), where each says n/a or falls back to entries, clearly."""

from __future__ import annotations

import io

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from common import keys
from common.redis_client import make_sync_redis
from common.status.models import ClickHouseStatus, PipelineStatus, RedisStatus, StreamStatus
from common.status.snapshot import read_streams
from dashboard.metrics import render_metrics
from pipeline.harness.fleet import Appended, appended
from pipeline.ops.status import streams_table

ENTRIES = 3  # appended to stream:trades, as pages of 1,000 trades once the scripts count items


async def append_trades(redis) -> None:
    for n in range(ENTRIES):
        await redis.xadd(keys.STREAM_TRADES, {"data": f'[{{"n": {n}}}]'})
    await redis.xgroup_create(keys.STREAM_TRADES, keys.GROUP_CLICKHOUSE_WRITER, id="0")


def by_name(streams: list[StreamStatus]) -> dict[str, StreamStatus]:
    return {stream.name: stream for stream in streams}


def metric_samples(streams: list[StreamStatus]) -> dict[tuple[str, str], float]:
    status = PipelineStatus(generated_at=0.0, redis=RedisStatus(ok=True), clickhouse=ClickHouseStatus(ok=False),
                            streams=streams)  # fmt: skip
    families = text_string_to_metric_families(render_metrics(status).decode())
    return {(s.name, s.labels.get("stream", "")): s.value for family in families for s in family.samples}


def table_text(streams: list[StreamStatus]) -> str:
    status = PipelineStatus(generated_at=0.0, redis=RedisStatus(ok=True), clickhouse=ClickHouseStatus(ok=False),
                            streams=streams)  # fmt: skip
    console = Console(file=io.StringIO(), width=200)
    console.print(streams_table(status))
    return console.file.getvalue()


async def test_without_the_items_hash_items_are_not_known_and_entries_are_counted(redis_client):
    await append_trades(redis_client)
    streams = by_name(await read_streams(redis_client))
    trades = streams[keys.STREAM_TRADES]
    assert (trades.length, trades.entries_added, trades.items_added) == (ENTRIES, ENTRIES, None)
    empty = streams[keys.STREAM_MARKETS]  # never appended to: nothing added, items not known
    assert (empty.length, empty.entries_added, empty.items_added) == (0, 0, None)

    samples = metric_samples(list(streams.values()))
    assert samples[("pipeline_stream_entries_total", keys.STREAM_TRADES)] == ENTRIES
    assert not any(name == "pipeline_stream_items_total" for name, _ in samples)  # absent, never a made-up 0

    row = next(line for line in table_text(list(streams.values())).splitlines() if keys.STREAM_TRADES in line)
    assert [cell.strip() for cell in row.split("│")[2:5]] == [str(ENTRIES), str(ENTRIES), "n/a"]


async def test_with_the_items_hash_each_stream_shows_its_items(redis_client):
    await append_trades(redis_client)
    await redis_client.hset(keys.STREAM_ITEMS, mapping={keys.STREAM_TRADES: 2500, keys.STREAM_ORDER_EVENTS: 2600})
    streams = by_name(await read_streams(redis_client))
    assert (streams[keys.STREAM_TRADES].entries_added, streams[keys.STREAM_TRADES].items_added) == (ENTRIES, 2500)
    assert streams[keys.STREAM_ORDER_EVENTS].items_added == 2600
    assert streams[keys.STREAM_MARKETS].items_added is None  # a field per stream: one missing is n/a alone

    samples = metric_samples(list(streams.values()))
    assert samples[("pipeline_stream_items_total", keys.STREAM_TRADES)] == 2500
    assert samples[("pipeline_stream_items_total", keys.STREAM_ORDER_EVENTS)] == 2600
    assert ("pipeline_stream_items_total", keys.STREAM_MARKETS) not in samples
    assert samples[("pipeline_stream_entries_total", keys.STREAM_TRADES)] == ENTRIES

    row = next(line for line in table_text(list(streams.values())).splitlines() if keys.STREAM_TRADES in line)
    assert [cell.strip() for cell in row.split("│")[2:5]] == [str(ENTRIES), str(ENTRIES), "2,500"]


async def test_the_bench_counts_items_where_counted_else_entries_under_any_prefix(redis_client, redis_settings):
    prefix = "{pm}:"
    stream = keys.under(prefix, keys.STREAM_ORDER_EVENTS)
    for _ in range(ENTRIES):
        await redis_client.xadd(stream, {"data": "[]"})
    client = make_sync_redis(redis_settings, timeout_s=5)
    try:
        assert appended(client, stream, prefix) == Appended(ENTRIES, "entries")
        assert appended(client, keys.under(prefix, keys.STREAM_TRADES), prefix) == Appended(0, "entries")
        await redis_client.hset(keys.STREAM_ITEMS, stream, 999)  # another prefix's hash: not this stream's count
        assert appended(client, stream, prefix) == Appended(ENTRIES, "entries")
        await redis_client.hset(keys.under(prefix, keys.STREAM_ITEMS), stream, 3000)
        assert appended(client, stream, prefix) == Appended(3000, "items")
    finally:
        client.close()
