"""`python -m pipeline status`: the dashboard's view in the terminal (the same `collect_status` read).

Reads twice, `--sample-s` apart, so counter rates can be shown (`--sample-s 0`: one read, no rates).
`--json` prints the `/api/status` document instead of tables. Exit 1 when Redis cannot be reached.
"""

from __future__ import annotations

import asyncio

from rich.table import Table
from rich.text import Text

from common.config import ClickHouseSettings, RedisSettings, ServiceSettings, load
from common.redis_client import make_redis
from common.status.history import Observer
from common.status.models import CursorStatus, PipelineStatus
from common.status.redaction import redact, secret_values
from common.status.snapshot import ClickHouseReader, collect_status
from pipeline.ops.command import console, iso, make_parser, run_command

NOT_COUNTED = "n/a"  # a stream's items where `stream:items` has no count for it
STATE_STYLE = {"running": "", "degraded": "yellow", "dead": "bold red", "stopped": "dim", "absent": "dim"}


def texts(*values: str) -> list[Text]:
    """Table cells as plain text: names and errors come from the pipeline and may contain `[markup]`."""
    return [Text(value) for value in values]


def _n(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} s"


def services_table(status: PipelineStatus) -> Table:
    table = Table(title="Services", title_justify="left")
    for column in ("service", "state", "heartbeat", "rates /s", "totals", "last error"):
        table.add_column(column, overflow="fold")
    for s in status.services:
        style = STATE_STYLE.get(s.state, "")
        rates = ", ".join(f"{k} {v:,.1f}" for k, v in sorted(s.rates.items()) if v)
        totals = ", ".join(f"{k} {v:,}" for k, v in sorted(s.counters.items()))
        error = f"{s.last_error} ({iso(s.last_error_at)})" if s.last_error else ""
        table.add_row(*texts(s.name, s.state, _s(s.heartbeat_age_s), rates, totals, error), style=style)
    return table


def streams_table(status: PipelineStatus) -> Table:
    table = Table(title="Streams and consumer groups", title_justify="left")
    numbers = ("length", "entries added", "items added", "lag", "pending")
    for column in ("stream", *numbers[:3], "group", *numbers[3:], "consumers"):
        table.add_column(column, justify="right" if column in numbers else "left")
    for stream in status.streams:
        # items: "n/a" where `stream:items` does not count the stream (appended before pages: one item an entry)
        appended = [_n(stream.length), _n(stream.entries_added), NOT_COUNTED if stream.items_added is None
                    else _n(stream.items_added)]  # fmt: skip
        for index, group in enumerate(stream.groups):
            consumers = ", ".join(f"{c.name} ({c.pending})" for c in group.consumers) if group.exists else "not created"
            table.add_row(*texts(stream.name if index == 0 else "", *(appended if index == 0 else ["", "", ""]),
                                 group.name, _n(group.lag), _n(group.pending), consumers))  # fmt: skip
    table.add_row("stream:dlq", _n(status.dlq.length), "", "", "", "", "", "")
    return table


def behind_source(cursor: CursorStatus) -> str:
    if cursor.behind_blocks is None:
        return _s(cursor.behind_s)
    lag = f" (finality lag {_n(cursor.finality_lag_blocks)} blocks)" if cursor.finality_lag_blocks is not None else ""
    return f"{_n(cursor.behind_blocks)} blocks behind the safe head{lag}"


def cursors_table(status: PipelineStatus) -> Table:
    table = Table(title="Cursors", title_justify="left")
    for column in ("key", "value", "behind source"):
        table.add_column(column, overflow="fold")
    for cursor in status.cursors:
        table.add_row(*texts(cursor.key, cursor.value, behind_source(cursor)))
    return table


def clickhouse_table(status: PipelineStatus) -> Table:
    ch = status.clickhouse
    state = "up" if ch.ok else f"DOWN ({ch.error})" + (f", numbers from {iso(ch.checked_at)}" if ch.stale else "")
    table = Table(title=Text(f"ClickHouse: {state}"), title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for t in ch.tables:
        table.add_row(t.name, _n(t.rows))
    return table


def print_status(status: PipelineStatus) -> None:
    if not status.redis.ok:
        console.print(f"Redis is down: {status.redis.error}", style="bold red", markup=False)
    else:
        warning = f" ({status.redis.durability_warning})" if status.redis.durability_warning else ""
        console.print(f"{status.redis.server}, durability: {status.redis.durability}{warning}",
                      style="yellow" if warning else None, markup=False)  # fmt: skip
    for table in (services_table(status), streams_table(status), cursors_table(status), clickhouse_table(status)):
        console.print(table)
    ch, u = status.clickhouse, status.unresolved
    modules = ", ".join(f"{name} {n:,}" for name, n in u.by_module.items())
    console.print(f"newest trade: {iso(ch.newest_trade_at)}; unresolved markets: {_n(u.trades_without_market)} "
                  f"trades without a market{f' ({modules})' if modules else ''}, {u.lookups_pending} tokens being "
                  f"looked up, {u.excluded_by_versions:,} written at once as excluded by GAMMA_VERSIONS",
                  markup=False)  # fmt: skip
    for letter in status.dlq.latest[:5]:
        where = f"{letter.stream} {letter.group or '(ingester)'}"
        console.print(f"dead letter {letter.id} from {where}: {letter.error}", markup=False)


async def read_status(sample_s: float) -> PipelineStatus:
    dead_after_s = load(ServiceSettings).dead_after_s
    redis = make_redis(load(RedisSettings, socket_timeout_s=2.0))
    reader = ClickHouseReader(load(ClickHouseSettings), timeout_s=3.0)
    observer = Observer()
    try:
        status = observer.observe(await collect_status(redis, reader, dead_after_s=dead_after_s))
        if sample_s > 0 and status.redis.ok:
            await asyncio.sleep(sample_s)
            status = observer.observe(await collect_status(redis, reader, dead_after_s=dead_after_s))
        return status
    finally:
        await redis.aclose()
        reader.close()


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("status", __doc__)
    parser.add_argument("--json", action="store_true", help="print the /api/status JSON document")
    parser.add_argument("--sample-s", type=float, default=1.0, help="seconds between the two reads (rates)")
    args = parser.parse_args(argv)

    async def body() -> int:
        status = await read_status(args.sample_s)
        if args.json:
            hidden = secret_values(load(RedisSettings), load(ClickHouseSettings))
            print(redact(status.model_dump_json(indent=2).encode(), hidden).decode())
        else:
            print_status(status)
        return 0 if status.redis.ok else 1

    return run_command("status", body)
