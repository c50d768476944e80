"""The chain watch (docs/chain-watch.md): the eth_getLogs item shapes real nodes serve, as the project's own
fixtures (values made up here, data encoded with eth-abi), each decoded by the chain decoder, and the simulator's
rendering of each; `Upgraded` logs taken out of a reply before the fills are decoded; the standing alert.

Shapes seen in real captures: a CTFExchangeV2 log with `blockTimestamp` (newer nodes); a NegRiskCtfExchangeV2 log
read from a receipt, without `removed`, `blockHash`, `transactionIndex` or `blockTimestamp`; a v1 log as web3.py
prints it, its `address` EIP-55 mixed-case.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from eth_abi import encode
from eth_utils import to_checksum_address

from common.errors import PoisonMessage
from common.exchanges import (
    CTF_EXCHANGE_V2,
    EXCHANGE_V3,
    NEG_RISK_CTF_EXCHANGE_V1,
    NEG_RISK_CTF_EXCHANGE_V2,
    UPGRADED_TOPIC,
    V1_ABI,
    V2_ABI,
)
from common.payloads import decode_dead_letter, decode_order_event
from common.service import Service
from ingesters.chain_logs import ChainLog, as_chain_log, blocks_needing_timestamps, decode_logs_reply, normalize_logs
from ingesters.upgrade_watch import decode_upgraded, split_upgrades
from simulator.config import SimConfig
from simulator.logs import LogRenderer, LogShape, checksum_address
from simulator.world import World

MAKER, OTHER = "0x" + "3c" * 20, "0x" + "d4" * 20
TOKEN = 52114319501245915516055106046884209969926127482827954674443846427813813222426
V2_TYPES = ["uint8", "uint256", "uint256", "uint256", "uint256", "bytes32", "bytes32"]


def word(address: str) -> str:
    return "0x" + "0" * 24 + address[2:].lower()


def v2_data(side: int, maker_amount: int, taker_amount: int) -> str:
    return "0x" + encode(V2_TYPES, [side, TOKEN, maker_amount, taker_amount, 0, b"\x00" * 32, b"\x00" * 32]).hex()


# A CTFExchangeV2 fill as a newer node serves it: lowercase address, every standard field, and `blockTimestamp`.
WITH_BLOCK_TIMESTAMP = {
    "address": CTF_EXCHANGE_V2,
    "topics": [V2_ABI.topic, "0x" + "a1" * 32, word(MAKER), word(OTHER)],
    "data": v2_data(0, 2_350_000, 4_700_000),
    "blockNumber": hex(91_700_000),
    "transactionHash": "0x" + "b2" * 32,
    "transactionIndex": "0x2f",
    "blockHash": "0x" + "c3" * 32,
    "blockTimestamp": hex(1_786_000_000),
    "logIndex": "0x15a",
    "removed": False,
}
# A NegRiskCtfExchangeV2 fill read from a transaction receipt: no removed, blockHash, transactionIndex, timestamp.
FROM_A_RECEIPT = {
    "address": NEG_RISK_CTF_EXCHANGE_V2,
    "topics": [V2_ABI.topic, "0x" + "d5" * 32, word(MAKER), word(NEG_RISK_CTF_EXCHANGE_V2)],
    "data": v2_data(1, 250_000_000, 237_500_000),
    "transactionHash": "0x" + "e6" * 32,
    "blockNumber": hex(95_000_001),
    "logIndex": "0x3d3",
}
# A v1 NegRisk fill as web3.py prints it: the address checksum-cased (the topics stay lowercase).
CHECKSUM_CASED = {
    "address": to_checksum_address(NEG_RISK_CTF_EXCHANGE_V1),
    "topics": [V1_ABI.topic, "0x" + "f7" * 32, word(MAKER), word(OTHER)],
    "data": "0x" + encode(["uint256"] * 5, [TOKEN, 0, 10_000_000, 3_300_000, 0]).hex(),
    "blockNumber": hex(52_000_000),
    "transactionHash": "0x" + "08" * 32,
    "transactionIndex": "0x7",
    "blockHash": "0x" + "19" * 32,
    "logIndex": "0x19",
    "removed": False,
}
SHAPES = {"block_timestamp": WITH_BLOCK_TIMESTAMP, "receipt": FROM_A_RECEIPT, "checksum": CHECKSUM_CASED}


def reply(*logs: dict[str, Any]) -> list[Any]:
    return decode_logs_reply(orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": list(logs)}))["result"]


@pytest.mark.parametrize("shape", SHAPES)
def test_each_real_shape_decodes_typed_to_the_exchange_and_amounts_it_carries(shape: str) -> None:
    log = SHAPES[shape]
    logs = reply(log)
    assert type(logs[0]) is ChainLog  # the fast typed path, not the plain-JSON fallback
    carried = "blockTimestamp" in log
    block = int(log["blockNumber"], 16)
    assert blocks_needing_timestamps(logs) == (set() if carried else {block})
    entries, dead = normalize_logs(logs, {} if carried else {block: 1_700_000_000})
    assert dead == []
    (event,) = [decode_order_event(entry) for entry in entries]
    assert event.exchange == log["address"].lower() and event.block_number == block
    assert event.timestamp == (int(log["blockTimestamp"], 16) if carried else 1_700_000_000)
    assert event.log_index == int(log["logIndex"], 16) and event.tx_hash == log["transactionHash"]
    assert event.maker == MAKER and event.id == f"{log['transactionHash']}_{log['topics'][1]}"


def test_the_shapes_give_the_asset_sides_of_their_abi() -> None:
    events = {shape: decode_order_event(normalize_logs(reply(log), {int(log["blockNumber"], 16): 1})[0][0])
              for shape, log in SHAPES.items()}  # fmt: skip
    assert (events["block_timestamp"].maker_asset_id, events["block_timestamp"].taker_asset_id) == ("0", str(TOKEN))
    assert (events["receipt"].maker_asset_id, events["receipt"].taker_asset_id) == (str(TOKEN), "0")
    assert (events["receipt"].maker_amount, events["receipt"].taker) == (250_000_000, NEG_RISK_CTF_EXCHANGE_V2)
    assert (events["checksum"].maker_asset_id, events["checksum"].taker_amount) == (str(TOKEN), 3_300_000)


def test_a_log_without_timestamp_whose_block_was_not_fetched_is_dead_lettered_with_the_reason() -> None:
    entries, dead = normalize_logs(reply(FROM_A_RECEIPT), {})
    assert entries == [] and "no timestamp for block 95000001" in decode_dead_letter(dead[0]).error


def upgraded(implementation: str, **override: Any) -> dict[str, Any]:
    log = {"address": to_checksum_address(EXCHANGE_V3), "topics": [UPGRADED_TOPIC, word(implementation)],
           "data": "0x", "blockNumber": hex(91_700_001), "transactionHash": "0x" + "2a" * 32}  # fmt: skip
    return {**log, "logIndex": "0x0", **override}


def test_upgraded_logs_are_taken_out_of_a_reply_with_their_implementation_and_the_fills_stay() -> None:
    implementation = "0x" + "7e" * 20
    others, upgrades, dead = split_upgrades(reply(WITH_BLOCK_TIMESTAMP, upgraded(implementation), FROM_A_RECEIPT))
    assert dead == []
    assert [log.address.lower() for log in others] == [CTF_EXCHANGE_V2, NEG_RISK_CTF_EXCHANGE_V2]
    (upgrade,) = upgrades
    assert (upgrade.proxy, upgrade.implementation, upgrade.block_number, upgrade.log_index, upgrade.id) == (
        EXCHANGE_V3, implementation, 91_700_001, 0, "91700001-0")  # fmt: skip


def test_a_malformed_upgraded_log_is_dead_lettered_whole_with_the_reason() -> None:
    bad = upgraded("0x" + "7e" * 20, topics=[UPGRADED_TOPIC])
    others, upgrades, dead = split_upgrades(reply(bad, FROM_A_RECEIPT))
    assert upgrades == [] and [log.address for log in others] == [NEG_RISK_CTF_EXCHANGE_V2]
    letter = decode_dead_letter(dead[0])
    assert "Upgraded log with topics" in letter.error and orjson.loads(letter.payload)["topics"] == [UPGRADED_TOPIC]
    with pytest.raises(PoisonMessage, match="expected topic0 and the implementation"):
        decode_upgraded(as_chain_log(bad), 0.0)


def test_checksum_addresses_match_eth_utils() -> None:
    for address in (EXCHANGE_V3, NEG_RISK_CTF_EXCHANGE_V1, MAKER, "0x" + "0" * 40):
        assert checksum_address(address) == to_checksum_address(address)


@pytest.mark.parametrize(
    "shape", [LogShape(block_timestamp=True), LogShape(bare=True), LogShape(checksum=True), LogShape(True, True, True)]
)
def test_the_simulator_renders_each_shape_and_the_decoder_reads_the_same_events(shape: LogShape) -> None:
    world = World(SimConfig(seed=2, markets=10, history_fills=400))
    idx = np.arange(world.count)
    renderer = LogRenderer(world)
    plain, shaped = orjson.loads(renderer.render_json(idx)), orjson.loads(renderer.render_json(idx, shape))
    assert all(("blockTimestamp" in log) == shape.block_timestamp for log in shaped)
    standard = ("removed", "blockHash", "transactionIndex")
    assert all(all((name in log) != shape.bare for name in standard) for log in shaped)
    assert all((log["address"] != log["address"].lower()) == shape.checksum for log in shaped)
    stamps = {int(log["blockNumber"], 16): int(world.timestamps(np.array([i]))[0]) for i, log in enumerate(plain)}
    events = normalize_logs(reply(*plain), stamps)[0]
    assert len(events) == world.count and normalize_logs(reply(*shaped), stamps)[0] == events


def test_a_standing_alert_keeps_the_service_degraded_through_good_steps_until_cleared() -> None:
    service = Service("chain_ingester", redis=None)  # type: ignore[arg-type]  (no Redis call is made here)
    service.healthy()
    service.set_alert("exchange_upgrade", "exchange 0xe333 upgraded")
    service.healthy()  # a step went through: still degraded, the alert is the last error
    assert (service.state, service.last_error) == ("degraded", "exchange 0xe333 upgraded")
    service.degraded(RuntimeError("timeout"))
    service.healthy()
    assert (service.state, service.last_error) == ("degraded", "exchange 0xe333 upgraded")
    service.set_alert("exchange_upgrade", None)
    assert service.state == "running"
