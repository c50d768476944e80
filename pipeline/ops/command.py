"""What every operator command shares: settings, connections, confirmation, and a time argument.

Each `pipeline/ops/*.py` module is one `python -m pipeline <command>`; its `main(argv) -> int` parses flags,
loads settings from the environment (exit 2 with one line on a bad one) and runs one coroutine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client
from rich.console import Console

from common import tables
from common.clickhouse import map_clickhouse_errors
from common.config import ClickHouseSettings, LogSettings, RedisSettings, load
from common.errors import ConfigError, SinkError, SourceError
from common.log import configure_logging

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def parse_time(text: str) -> int:
    """Unix seconds, or an ISO date/time (UTC unless it says otherwise): `1714000000`, `2026-04-28T12:00`."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a unix time or ISO date: {text!r}") from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())


def iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "–"


def confirm(question: str, *, yes: bool) -> bool:
    """True with `--yes`; otherwise ask on the terminal (no terminal, no answer: False)."""
    if yes:
        return True
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def settings() -> tuple[RedisSettings, ClickHouseSettings]:
    return load(RedisSettings), load(ClickHouseSettings)


def run_command(name: str, body: Callable[[], Awaitable[int]], *, log_to_file: bool = False) -> int:
    """Run one command's coroutine: a bad setting exits 2, an unreachable Redis or ClickHouse exits 1."""
    try:
        # logs on stderr: a command's stdout is its output (`status --json` is read by scripts)
        configure_logging(f"pipeline-{name}", load(LogSettings), to_file=log_to_file, to_stderr=True)
        logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)  # its retry warnings; we print the error
        return asyncio.run(body())
    except ConfigError as exc:
        errors.print(f"{name}: {exc}", markup=False)
        return 2
    except (SinkError, SourceError) as exc:
        errors.print(f"{name}: {exc}", markup=False)
        return 1
    except KeyboardInterrupt:
        return 130


def fail(message: str, code: int = 1) -> int:
    errors.print(message, markup=False)
    return code


def chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def has_kept_fills(client: Client) -> bool:
    """Whether the database holds `order_filled_events` as the table it was before migration 007, kept by the upgrade
    (`common.tables.FILLS_BEFORE_VIEW`; an operator drops it once checked)."""
    with map_clickhouse_errors("look for the kept fills table"):
        return bool(int(client.command(f"EXISTS TABLE {tables.FILLS_BEFORE_VIEW}")))


def add_time_range(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """`--from` and `--to` (inclusive) as unix seconds, into `args.start` and `args.end` (None when optional)."""
    parser.add_argument("--from", dest="start", type=parse_time, required=required, help="unix seconds or ISO time")
    parser.add_argument("--to", dest="end", type=parse_time, required=required, help="inclusive")


def parse_range(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """`parser.parse_args(argv)` for a parser with `add_time_range`; `--to` before `--from` is a usage error (2)."""
    args = parser.parse_args(argv)
    if args.start is not None and args.end is not None and args.end < args.start:
        parser.error("--to is before --from")
    return args


def make_parser(command: str, doc: str) -> argparse.ArgumentParser:
    """`--help` shows the module docstring: what the command reads, writes and deletes."""
    return argparse.ArgumentParser(
        prog=f"python -m pipeline {command}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
