"""`python -m pipeline migrate`: create the database where absent and apply the migrations, then exit.

What the writer does at its start, alone: for CLICKHOUSE_DEPLOYMENT's profile (docs/operations.md, "Where ClickHouse
runs"), refusing a sharded cluster, a Distributed table and, on `cluster`, a single-server database. Applying twice,
or while a writer starts, changes nothing. Use it to create a schema before any service writes to it (moving a
server's database to a cluster) or to apply a new migration ahead of an upgrade. Exit 2 on a refused shape or a bad
setting, 1 when ClickHouse cannot be reached.
"""

from __future__ import annotations

import asyncio

from common.clickhouse import apply_migrations
from common.config import ClickHouseSettings, load
from pipeline.ops.command import console, make_parser, run_command


def main(argv: list[str] | None = None) -> int:
    make_parser("migrate", __doc__).parse_args(argv)

    async def body() -> int:
        ch = load(ClickHouseSettings)
        applied = await asyncio.to_thread(apply_migrations, ch)
        done = ", ".join(f"{version:03d}" for version in applied) or "none (all applied already)"
        console.print(f"{ch.database} ({ch.deployment}): migrations applied: {done}", markup=False)
        return 0

    return run_command("migrate", body)
