"""`python -m pipeline ack-upgrade [ID ...] [--all]`: list the exchange upgrades the chain ingester has seen, or
acknowledge them.

ExchangeV3 is an upgradeable (ERC-1967/UUPS) proxy: a new implementation can change its events without an address
change. The chain ingester records each `Upgraded(address)` log of an exchange in `chain:exchange_upgrades` and
stays `degraded` (dashboard, `/metrics` `pipeline_service_gauge{gauge="exchange_upgrades_unacknowledged"}`) while
one is unacknowledged; fills keep flowing meanwhile. Check the new implementation first (`python -m pipeline
doctor` names any topic0 an exchange emitted that the pipeline does not know), then acknowledge:

  ack-upgrade               list every recorded upgrade, acknowledged or not (exit 1 while one is not)
  ack-upgrade ID [ID ...]   acknowledge these (ID = `<block>-<log index>`, as listed)
  ack-upgrade --all         acknowledge every one

The ingester clears its alert within CHAIN_POLL_INTERVAL_S of the acknowledgement, without a restart.
"""

from __future__ import annotations

import argparse

from rich.table import Table

from common.exchange_upgrades import acknowledge_upgrades, read_upgrades
from common.payloads import ExchangeUpgrade
from common.redis_client import make_redis
from pipeline.ops.command import console, fail, iso, make_parser, run_command, settings


def show(upgrades: list[ExchangeUpgrade]) -> None:
    table = Table("id", "block", "exchange", "new implementation", "tx", "seen", "acknowledged")
    for u in upgrades:
        table.add_row(u.id, f"{u.block_number:,}", u.proxy, u.implementation, u.tx_hash, iso(u.seen_at),
                      iso(u.acknowledged_at) if u.acknowledged_at else "NO")  # fmt: skip
    console.print(table, soft_wrap=True)


async def ack_upgrade(args: argparse.Namespace) -> int:
    redis = make_redis(settings()[0])
    try:
        if not args.ids and not args.all:
            upgrades = await read_upgrades(redis)
            if not upgrades:
                console.print("no exchange upgrade seen", markup=False)
                return 0
            show(upgrades)
            pending = sum(1 for u in upgrades if not u.acknowledged_at)
            console.print(f"{pending} not acknowledged", markup=False)
            return 1 if pending else 0
        try:
            done = await acknowledge_upgrades(redis, None if args.all else args.ids)
        except KeyError as exc:
            return fail(f"ack-upgrade: no recorded upgrade {exc.args[0]} (list them with `ack-upgrade`)", 2)
    finally:
        await redis.aclose()
    for upgrade in done:
        console.print(f"acknowledged {upgrade.id}: {upgrade.proxy} -> {upgrade.implementation}", markup=False)
    if not done:
        console.print("nothing to acknowledge", markup=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("ack-upgrade", __doc__)
    parser.add_argument("ids", nargs="*", metavar="ID", help="upgrades to acknowledge (`<block>-<log index>`)")
    parser.add_argument("--all", action="store_true", help="acknowledge every recorded upgrade")
    args = parser.parse_args(argv)
    return run_command("ack-upgrade", lambda: ack_upgrade(args))
