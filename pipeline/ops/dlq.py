"""`python -m pipeline dlq list|retry|purge`: look at, re-deliver or drop dead letters (`stream:dlq`).

A dead letter records the original stream, the entry id, the payload, the group that gave up on it, the reason
and the delivery count. Ingesters dead-letter malformed source items (no entry id, group "").

retry: re-appends the original payload to its original stream, as a new entry, and deletes the dead letter(s),
in one Lua script (a crash leaves either both or neither). A dead item (a page's one malformed or refused item,
`item` set) goes back as a page of one; a whole entry as it was. A new entry reaches *every* group of that stream, so
retry only re-delivers an entry that every group of its stream gave up on (`keys.STREAM_GROUPS`: on a stream
read by several groups, when only one of them dead-lettered an entry, the others already processed it, and
re-adding it would deliver it to them twice). Such partial entries are skipped with the reason, unless `--force`:
today every stream has one group, so this concerns dead letters left by the writer's former group on
`stream:order_events` (the trade processor has that fill's trade; `--force` re-derives it, and the writer
stores only what its tables lack). All dead letters of the same original entry (or item) are retried together and
deleted together. Ingester dead letters are never retried: the item was malformed at the source (fix the source and
re-ingest; `purge`).
purge: deletes the selected dead letters (asks unless `--yes`).
Select with `--id DLQ_ID` (repeatable) or `--all`, narrowed by `--stream` and `--group`.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import NamedTuple

import msgspec
import orjson
import redis.asyncio as aioredis
from rich.table import Table
from rich.text import Text

from common import keys
from common.dead_letters import retry_dead_letters
from common.payloads import DeadLetter, decode_dead_letter
from common.redis_client import make_redis, map_redis_errors
from pipeline.ops.command import confirm, console, fail, iso, make_parser, run_command, settings


class DlqEntry(NamedTuple):
    id: str  # of the dead letter in stream:dlq
    letter: DeadLetter


async def read_dlq(redis: aioredis.Redis) -> list[DlqEntry]:
    """Every dead letter, its stream named as now (a letter written before a REDIS_KEY_PREFIX change names the
    stream under the old prefix)."""
    entries = []
    for dlq_id, fields in await redis.xrange(keys.STREAM_DLQ):
        letter = decode_dead_letter(fields.get(b"data"))
        stream = keys.current_stream(letter.stream)
        entries.append(DlqEntry(dlq_id.decode(), msgspec.structs.replace(letter, stream=stream)))
    return entries


def select(entries: list[DlqEntry], args: argparse.Namespace) -> list[DlqEntry]:
    wanted = set(getattr(args, "id", None) or [])
    return [
        entry
        for entry in entries
        if (args.all or entry.id in wanted)
        and (not args.stream or entry.letter.stream == args.stream)
        and (args.group is None or entry.letter.group == args.group)
    ]


def retry_plan(
    selected: list[DlqEntry], every: list[DlqEntry], *, force: bool
) -> tuple[list[list[DlqEntry]], list[str]]:
    """Dead letters grouped by original entry, each group safe to re-add once; and why the others are skipped."""
    by_entry: dict[tuple[str, str, int | None], list[DlqEntry]] = defaultdict(list)
    for entry in every:
        if entry.letter.entry_id:
            by_entry[(entry.letter.stream, entry.letter.entry_id, entry.letter.item)].append(entry)
    plans, skipped, seen = [], [], set()
    for dlq_id, letter in selected:
        if not letter.entry_id or letter.stream not in keys.STREAM_GROUPS:
            skipped.append(f"{dlq_id}: malformed at the source (no stream entry to re-deliver); purge it instead")
            continue
        key = (letter.stream, letter.entry_id, letter.item)
        if key in seen:
            continue
        seen.add(key)
        gave_up = {other.letter.group for other in by_entry[key]}
        others = sorted(set(keys.STREAM_GROUPS[letter.stream]) - gave_up)
        if others and not force:
            skipped.append(f"{dlq_id}: {', '.join(others)} already processed entry {letter.entry_id} of "
                           f"{letter.stream}; re-adding would deliver it twice (--force to do it anyway)")  # fmt: skip
            continue
        plans.append(by_entry[key])
    return plans, skipped


async def retry(redis: aioredis.Redis, args: argparse.Namespace) -> int:
    every = await read_dlq(redis)
    plans, skipped = retry_plan(select(every, args), every, force=args.force)
    retried = 0
    for entries in plans:
        first_id, first = entries[0]
        new_id = await retry_dead_letters(redis, first, [entry.id for entry in entries])
        if new_id is None:
            skipped.append(f"{first_id}: gone from the DLQ meanwhile (retried or purged by someone else)")
            continue
        retried += 1
        what = f"entry {first.entry_id}" if first.item is None else f"item {first.item} of entry {first.entry_id}"
        console.print(f"retried {first.stream} {what} as {new_id} "
                      f"({len(entries)} dead letter(s) removed)", markup=False)  # fmt: skip
    for reason in skipped:
        console.print(f"skipped {reason}", markup=False)
    console.print(f"dlq retry: {retried} entr{'y' if retried == 1 else 'ies'} re-delivered, {len(skipped)} skipped")
    return 0 if not skipped else 1


async def purge(redis: aioredis.Redis, args: argparse.Namespace) -> int:
    chosen = select(await read_dlq(redis), args)
    if not chosen:
        return fail("dlq purge: nothing selected")
    if not confirm(f"Delete {len(chosen)} dead letter(s)?", yes=args.yes):
        return fail("dlq purge: nothing deleted")
    deleted = int(await redis.xdel(keys.STREAM_DLQ, *(entry.id for entry in chosen)))
    console.print(f"dlq purge: {deleted} dead letter(s) deleted")
    return 0


async def list_letters(redis: aioredis.Redis, args: argparse.Namespace) -> int:
    entries = select(await read_dlq(redis), argparse.Namespace(**{**vars(args), "all": True}))[-args.limit :]
    if args.json:
        listed = [{"id": dlq_id, **msgspec.structs.asdict(letter)} for dlq_id, letter in entries]
        print(orjson.dumps(listed, option=orjson.OPT_INDENT_2).decode())
        return 0
    table = Table(title=f"stream:dlq ({await redis.xlen(keys.STREAM_DLQ)} entries)", title_justify="left")
    for column in ("dlq id", "time", "stream", "group", "entry", "deliveries", "error"):
        table.add_column(column, overflow="fold")
    for dlq_id, x in entries:
        cells = (dlq_id, iso(x.time), x.stream, x.group or "(ingester)", x.entry_id or "–", str(x.deliveries), x.error)
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("dlq", __doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    for name in ("list", "retry", "purge"):
        sub = actions.add_parser(name)
        sub.add_argument("--stream", help="only dead letters from this stream")
        sub.add_argument("--group", help="only dead letters of this group ('' for ingesters)")
        if name == "list":
            sub.add_argument("--limit", type=int, default=50, help="show the newest N (default 50)")
            sub.add_argument("--json", action="store_true")
            continue
        sub.add_argument("--id", action="append", help="a dead letter's id in stream:dlq (repeatable)")
        sub.add_argument("--all", action="store_true", help="every dead letter (after --stream/--group)")
        sub.add_argument("--force" if name == "retry" else "--yes", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action != "list" and not (args.all or args.id):
        return fail("dlq: choose dead letters with --id or --all", 2)
    action = {"list": list_letters, "retry": retry, "purge": purge}[args.action]

    async def body() -> int:
        redis = make_redis(settings()[0])
        try:
            async with map_redis_errors(f"dlq {args.action}"):
                return await action(redis, args)
        finally:
            await redis.aclose()

    return run_command("dlq", body)
