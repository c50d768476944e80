"""Upgrades of the exchanges' proxies seen on chain (`chain:exchange_upgrades`): record, read, acknowledge.

The chain ingester records every `Upgraded` log it reads and stays degraded while one is not acknowledged; an
operator acknowledges them with `python -m pipeline ack-upgrade` once the new implementation has been checked
(its events still decode: `python -m pipeline doctor` names any topic0 it does not know).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import msgspec
import redis.asyncio as aioredis
import structlog

from common import keys
from common.errors import PoisonMessage
from common.payloads import ExchangeUpgrade, decode_exchange_upgrade, encode_exchange_upgrade
from common.redis_client import map_redis_errors

log = structlog.get_logger()


async def record_upgrades(redis: aioredis.Redis, upgrades: Sequence[ExchangeUpgrade]) -> list[ExchangeUpgrade]:
    """Store the upgrades not stored yet (HSETNX: one seen again, acknowledged or not, is left as it is); returns
    the new ones."""
    if not upgrades:
        return []
    async with map_redis_errors("record exchange upgrades"), redis.pipeline(transaction=False) as pipe:
        for upgrade in upgrades:
            pipe.hsetnx(keys.EXCHANGE_UPGRADES, upgrade.id, encode_exchange_upgrade(upgrade))
        added = await pipe.execute()
    return [upgrade for upgrade, new in zip(upgrades, added, strict=True) if new]


async def read_upgrades(redis: aioredis.Redis) -> list[ExchangeUpgrade]:
    """Every recorded upgrade, oldest first (a value that does not decode is logged and left out)."""
    async with map_redis_errors("read exchange upgrades"):
        raw = await redis.hgetall(keys.EXCHANGE_UPGRADES)
    upgrades = []
    for field, value in raw.items():
        try:
            upgrades.append(decode_exchange_upgrade(value))
        except PoisonMessage as exc:
            log.warning("unreadable exchange upgrade", field=field.decode(errors="replace"), error=str(exc))
    return sorted(upgrades, key=lambda u: (u.block_number, u.log_index))


async def acknowledge_upgrades(redis: aioredis.Redis, ids: Iterable[str] | None) -> list[ExchangeUpgrade]:
    """Mark the upgrades `ids` (None: every one) acknowledged now; returns those that were not acknowledged yet.
    KeyError names an id that is not recorded."""
    recorded = {upgrade.id: upgrade for upgrade in await read_upgrades(redis)}
    wanted = list(recorded) if ids is None else list(ids)
    unknown = [upgrade_id for upgrade_id in wanted if upgrade_id not in recorded]
    if unknown:
        raise KeyError(", ".join(unknown))
    now = round(time.time(), 3)
    acknowledged = [
        msgspec.structs.replace(recorded[upgrade_id], acknowledged_at=now)
        for upgrade_id in wanted
        if not recorded[upgrade_id].acknowledged_at
    ]
    if acknowledged:
        async with map_redis_errors("acknowledge exchange upgrades"):
            await redis.hset(keys.EXCHANGE_UPGRADES,
                             mapping={u.id: encode_exchange_upgrade(u) for u in acknowledged})  # fmt: skip
    return acknowledged


def describe(upgrade: ExchangeUpgrade) -> str:
    """One line an operator reads on the dashboard and in the logs."""
    return (f"exchange {upgrade.proxy} upgraded to implementation {upgrade.implementation} at block "
            f"{upgrade.block_number:,} (tx {upgrade.tx_hash}); acknowledge with "
            f"`python -m pipeline ack-upgrade {upgrade.id}`")  # fmt: skip
