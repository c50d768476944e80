"""`python -m pipeline backfill goldsky|chain --from X --to Y [--workers N]`: ingest a past range, with progress.

goldsky: X and Y are times (unix seconds or ISO, UTC); chain: block numbers. The range is split into N adjacent
ranges fetched concurrently into `stream:order_events` by the ingester's own `backfill()` (each range with its
own cursor under `state:<source>_backfill:*`, so an interrupted backfill resumes where it stopped when run again
with the same FROM and TO). The bar counts seconds (goldsky) or blocks (chain) of the range behind the cursors;
the ETA is extrapolated from the rate so far. The trade processor and the writer take it from there.
"""

from __future__ import annotations

import argparse

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ingesters import chain_ingester, goldsky_ingester
from pipeline.ops.command import console, errors, fail, make_parser, parse_time, run_command


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=errors, transient=False,
    )  # fmt: skip


async def backfill(args: argparse.Namespace) -> int:
    unit = "s" if args.source == "goldsky" else "blocks"
    with progress_bar() as bar:
        task = bar.add_task(f"backfill {args.source}", total=args.end - args.start + 1, unit=unit)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if args.source == "goldsky":
            config = goldsky_ingester.load_config()
            workers = args.workers or config.goldsky.backfill_workers
            fills = await goldsky_ingester.backfill(config, start_ts=args.start, end_ts=args.end, workers=workers,
                                                    progress=report)  # fmt: skip
        else:
            config = chain_ingester.load_config()
            workers = args.workers or config.chain.backfill_workers
            fills = await chain_ingester.backfill(config, from_block=args.start, to_block=args.end, workers=workers,
                                                  progress=report)  # fmt: skip
    console.print(f"backfill {args.source} [{args.start}, {args.end}] with {workers} worker(s): {fills:,} fill(s) "
                  "appended to stream:order_events", markup=False)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("backfill", __doc__)
    parser.add_argument("source", choices=("goldsky", "chain"))
    parser.add_argument("--from", dest="start", required=True, help="goldsky: unix seconds or ISO; chain: block")
    parser.add_argument("--to", dest="end", required=True, help="inclusive")
    parser.add_argument("--workers", type=int, help="concurrent ranges (default GOLDSKY_/CHAIN_BACKFILL_WORKERS)")
    args = parser.parse_args(argv)
    convert = parse_time if args.source == "goldsky" else int
    try:
        args.start, args.end = convert(args.start), convert(args.end)
    except ValueError as exc:
        return fail(f"backfill: {exc}", 2)
    if args.end < args.start or (args.workers is not None and args.workers < 1):
        return fail("backfill: need FROM <= TO and --workers >= 1", 2)
    return run_command("backfill", lambda: backfill(args))
