"""Polygon JSON-RPC stand-in driven with plain JSON-RPC over httpx: blocks, finality, batches, range limits, and
eth_getLogs logs that decode with eth-abi back to the world's fills for both exchange versions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from eth_abi import decode
from eth_hash.auto import keccak

from simulator.constants import CUTOVER_BLOCK, CUTOVER_TIMESTAMP, EXCHANGE_ADDRESSES

V1_TOPIC = "0x" + keccak(b"OrderFilled(bytes32,address,address,uint256,uint256,uint256,uint256,uint256)").hex()
V2_TOPIC = (
    "0x" + keccak(b"OrderFilled(bytes32,address,address,uint8,uint256,uint256,uint256,uint256,bytes32,bytes32)").hex()
)
V1_DATA = ["uint256"] * 5
V2_DATA = ["uint8", "uint256", "uint256", "uint256", "uint256", "bytes32", "bytes32"]


def rpc(url: str, method: str, *params: Any) -> Any:
    body = httpx.post(url, json={"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}).json()
    assert body["jsonrpc"] == "2.0" and body["id"] == 7
    if "error" in body:
        raise RuntimeError(body["error"])
    return body["result"]


def normalize(log: dict[str, Any]) -> dict[str, Any]:
    """A log -> the normalized order event fields (docs/CONTRACT.md §3), decoding with eth-abi."""
    data = bytes.fromhex(log["data"][2:])
    if log["topics"][0] == V1_TOPIC:
        maker_asset, taker_asset, maker_amount, taker_amount, fee = decode(V1_DATA, data)
    else:
        assert log["topics"][0] == V2_TOPIC
        side, token, maker_amount, taker_amount, fee, _builder, _metadata = decode(V2_DATA, data)
        maker_asset, taker_asset = (0, token) if side == 0 else (token, 0)  # BUY -> maker pays USDC
    maker, taker = ("0x" + t[-40:] for t in log["topics"][2:4])
    return {
        "id": f"{log['transactionHash']}_{log['topics'][1]}",
        "exchange": log["address"],
        "maker": maker,
        "taker": taker,
        "block_number": int(log["blockNumber"], 16),
        "log_index": int(log["logIndex"], 16),
        "maker_asset_id": str(maker_asset),
        "taker_asset_id": str(taker_asset),
        "maker_amount": maker_amount,
        "taker_amount": taker_amount,
        "fee": fee,
    }


@pytest.fixture
def sim(simulator):  # type: ignore[no-untyped-def]
    return simulator(seed=9, markets=30, history_fills=9_000, v2_fills=3_000, finalized_lag_blocks=16)


def test_chain_id_head_and_block_timestamps(sim) -> None:  # type: ignore[no-untyped-def]
    assert rpc(sim.rpc_url, "eth_chainId") == "0x89"
    head = int(rpc(sim.rpc_url, "eth_blockNumber"), 16)
    latest = rpc(sim.rpc_url, "eth_getBlockByNumber", "latest", False)
    finalized = rpc(sim.rpc_url, "eth_getBlockByNumber", "finalized", False)
    assert int(latest["number"], 16) == head == sim.world.head_block
    assert int(finalized["number"], 16) == head - 16
    cutover = rpc(sim.rpc_url, "eth_getBlockByNumber", hex(CUTOVER_BLOCK), False)
    assert int(cutover["timestamp"], 16) == CUTOVER_TIMESTAMP
    before = rpc(sim.rpc_url, "eth_getBlockByNumber", hex(CUTOVER_BLOCK - 1), False)
    assert int(before["timestamp"], 16) == CUTOVER_TIMESTAMP - 2 and cutover["parentHash"] == before["hash"]
    assert rpc(sim.rpc_url, "eth_getBlockByNumber", hex(head + 1), False) is None
    assert all(len(h) == 66 for h in cutover["transactions"])


def test_batch_requests_answer_each_call_by_id(sim) -> None:  # type: ignore[no-untyped-def]
    blocks = [sim.world.first_block + i for i in range(5)]
    batch = [
        {"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [hex(b), False]}
        for i, b in enumerate(blocks)
    ]
    batch.append({"jsonrpc": "2.0", "id": 99, "method": "eth_nope", "params": []})
    body = httpx.post(sim.rpc_url, json=batch).json()
    assert [r["id"] for r in body] == [0, 1, 2, 3, 4, 99]
    assert [int(r["result"]["timestamp"], 16) for r in body[:5]] == [
        CUTOVER_TIMESTAMP + (b - CUTOVER_BLOCK) * 2 for b in blocks
    ]
    assert body[5]["error"]["code"] == -32601


def test_logs_decode_to_the_worlds_fills_for_v1_and_v2(sim) -> None:  # type: ignore[no-untyped-def]
    truth = {f["id"]: f for f in sim.truth()["fills"]}
    head = int(rpc(sim.rpc_url, "eth_getBlockByNumber", "finalized", False)["number"], 16)
    seen: dict[str, dict[str, Any]] = {}
    for start in range(sim.world.first_block, head + 1, 2000):
        logs = rpc(
            sim.rpc_url,
            "eth_getLogs",
            {
                "fromBlock": hex(start),
                "toBlock": hex(min(start + 1999, head)),
                "address": EXCHANGE_ADDRESSES,
                "topics": [[V1_TOPIC, V2_TOPIC]],
            },
        )
        for log in logs:
            assert set(log) >= {
                "address",
                "topics",
                "data",
                "blockNumber",
                "blockHash",
                "transactionHash",
                "transactionIndex",
                "logIndex",
                "removed",
            }
            event = normalize(log)
            assert event["id"] not in seen
            seen[event["id"]] = event
    assert set(seen) == set(truth)  # every fill, once, of every exchange family
    versions = {(e["block_number"] >= CUTOVER_BLOCK, e["exchange"]) for e in seen.values()}
    assert versions == {
        (False, EXCHANGE_ADDRESSES[0]),
        (False, EXCHANGE_ADDRESSES[1]),
        (True, EXCHANGE_ADDRESSES[2]),
        (True, EXCHANGE_ADDRESSES[3]),
        (True, EXCHANGE_ADDRESSES[4]),  # ExchangeV3: v2 ABI, position ids
    }
    for fill_id, event in seen.items():
        expected = truth[fill_id]
        assert {k: expected[k] for k in event} == event
    goldsky = {f for f, t in truth.items() if "goldsky" in t["sources"]}
    assert goldsky == {f for f, e in seen.items() if e["block_number"] < CUTOVER_BLOCK}


def test_topic_and_address_filters_select_versions(sim) -> None:  # type: ignore[no-untyped-def]
    start = CUTOVER_BLOCK - 1000
    span = {"fromBlock": hex(start), "toBlock": hex(start + 1999)}
    both = rpc(sim.rpc_url, "eth_getLogs", span)
    v2 = rpc(sim.rpc_url, "eth_getLogs", {**span, "topics": [V2_TOPIC]})
    v1 = rpc(sim.rpc_url, "eth_getLogs", {**span, "address": EXCHANGE_ADDRESSES[:2]})
    assert v1 and v2 and len(v1) + len(v2) == len(both)
    assert all(log["topics"][0] == V1_TOPIC for log in v1)
    neg_risk = rpc(sim.rpc_url, "eth_getLogs", {**span, "address": EXCHANGE_ADDRESSES[3].upper().replace("0X", "0x")})
    assert neg_risk and all(log["address"] == EXCHANGE_ADDRESSES[3] for log in neg_risk)
    taker_rows = rpc(
        sim.rpc_url, "eth_getLogs", {**span, "topics": [None, None, None, "0x" + "0" * 24 + EXCHANGE_ADDRESSES[2][2:]]}
    )
    assert taker_rows and all(normalize(log)["taker"] == EXCHANGE_ADDRESSES[2] for log in taker_rows)


def test_range_and_result_limits_return_provider_errors(simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(seed=9, markets=20, history_fills=6_000, max_block_range=500, max_logs=300)
    start = sim.world.first_block
    with pytest.raises(RuntimeError) as too_wide:
        rpc(sim.rpc_url, "eth_getLogs", {"fromBlock": hex(start), "toBlock": hex(start + 500)})
    assert too_wide.value.args[0]["code"] == -32005 and "block range is too large" in too_wide.value.args[0]["message"]
    with pytest.raises(RuntimeError) as too_many:
        rpc(sim.rpc_url, "eth_getLogs", {"fromBlock": hex(start), "toBlock": hex(start + 499)})
    error = too_many.value.args[0]
    assert error["code"] == -32005 and "query returned more than 300 results" in error["message"]
    hinted = rpc(sim.rpc_url, "eth_getLogs", {"fromBlock": error["data"]["from"], "toBlock": error["data"]["to"]})
    assert 0 < len(hinted) <= 300
    with pytest.raises(RuntimeError):
        rpc(sim.rpc_url, "eth_getLogs", {"fromBlock": hex(start + 10), "toBlock": hex(start)})
