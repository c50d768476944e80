"""An upgrade of ExchangeV3 must not go unseen: its proxy's `Upgraded(address)` logs, read beside the fills.

The chain ingester's one eth_getLogs call per range asks for the `Upgraded` topic0 too (`WATCHED_TOPICS`): the
filter is already "any of the exchanges' addresses and any of these topic0s", so watching costs no request and
no byte while nothing is upgraded (the CLOB exchanges are not proxies and never emit it; if one did, it would be
recorded the same way). `split_upgrades` takes those logs out before the fills are decoded (a malformed one
becomes a dead letter with the reason); `UpgradeWatch` records them in `chain:exchange_upgrades` before the
range's cursor moves, and keeps the service degraded, with the block and the new implementation in its last
error, while any is unacknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from common import keys
from common.errors import PoisonMessage
from common.exchange_upgrades import describe, read_upgrades, record_upgrades
from common.exchanges import TOPICS, UPGRADED_TOPIC
from common.payloads import ExchangeUpgrade, encode_dead_letter
from common.service import Service
from ingesters.chain_logs import ChainLog, as_chain_log

log = structlog.get_logger()
ALERT = "exchange_upgrade"
FILL_TOPICS = frozenset(TOPICS)


def decode_upgraded(log: ChainLog, seen_at: float) -> ExchangeUpgrade:
    """An `Upgraded(address indexed implementation)` log -> ExchangeUpgrade (PoisonMessage if malformed)."""
    if len(log.topics) != 2 or len(log.topics[1]) != 66:
        raise PoisonMessage(f"Upgraded log with topics {log.topics!r} (expected topic0 and the implementation)")
    try:
        block, index = int(log.block_number, 16), int(log.log_index, 16)
    except ValueError:
        raise PoisonMessage("Upgraded log without a hex blockNumber and logIndex") from None
    return ExchangeUpgrade(proxy=log.address.lower(), implementation="0x" + log.topics[1][-40:].lower(),
                           block_number=block, log_index=index, tx_hash=log.transaction_hash.lower(),
                           seen_at=seen_at)  # fmt: skip


def split_upgrades(logs: Sequence[Any]) -> tuple[list[Any], list[ExchangeUpgrade], list[bytes]]:
    """eth_getLogs items -> (the others, for `normalize_logs`; the `Upgraded` logs; `stream:dlq` entries of the
    malformed `Upgraded` logs, with the reason)."""
    others: list[Any] = []
    upgrades: list[ExchangeUpgrade] = []
    dead: list[bytes] = []
    now = round(time.time(), 3)
    for raw in logs:
        if type(raw) is ChainLog and raw.topics and raw.topics[0] in FILL_TOPICS:  # nearly every log: a fill
            others.append(raw)
            continue
        try:
            typed = as_chain_log(raw)
        except PoisonMessage:
            others.append(raw)  # no log at all: normalize_logs dead-letters it raw
            continue
        if not typed.topics or typed.topics[0].lower() != UPGRADED_TOPIC or typed.removed:
            others.append(raw)
            continue
        try:
            upgrades.append(decode_upgraded(typed, now))
        except PoisonMessage as exc:
            dead.append(encode_dead_letter(stream=keys.STREAM_ORDER_EVENTS, payload=msgspec.json.encode(typed),
                                           error=str(exc)))  # fmt: skip
    return others, upgrades, dead


@dataclass
class UpgradeWatch:
    """Records upgrades and keeps the service's alert in step with `chain:exchange_upgrades`: re-read after each
    record, and every `recheck_s` otherwise, so an acknowledgement clears the alert without a restart."""

    service: Service
    recheck_s: float
    checked_at: float = float("-inf")

    async def record(self, upgrades: Sequence[ExchangeUpgrade]) -> None:
        for upgrade in await record_upgrades(self.service.redis, upgrades):
            self.service.count("exchange_upgrades")
            log.warning("exchange upgraded", proxy=upgrade.proxy, implementation=upgrade.implementation,
                        block=upgrade.block_number, tx_hash=upgrade.tx_hash)  # fmt: skip
        if upgrades:
            self.checked_at = float("-inf")

    async def refresh(self) -> None:
        if time.monotonic() - self.checked_at < self.recheck_s:
            return
        self.checked_at = time.monotonic()
        pending = [u for u in await read_upgrades(self.service.redis) if not u.acknowledged_at]
        self.service.gauge(keys.GAUGE_UNACKNOWLEDGED_UPGRADES, len(pending))
        self.service.set_alert(ALERT, "; ".join(map(describe, pending)) if pending else None)
