"""Fault injection: each fault has the shape a client meets upstream, can be scoped to one API, and can be changed
at run time through /_sim/config."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.fixtures.helpers import wait_until

GOLDSKY_QUERY = {"query": '{ orderFilledEvents(first: 5, where: {timestamp_gt: "0"}) { id } }'}
BLOCK_NUMBER = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


@pytest.fixture
def sim(simulator):  # type: ignore[no-untyped-def]
    return simulator(seed=2, markets=20, history_fills=2_000, live_block_interval_s=0.05)


def test_429_carries_retry_after_in_each_apis_shape(sim) -> None:  # type: ignore[no-untyped-def]
    sim.set_faults("429=1,retry_after_s=1")
    gamma = httpx.get(f"{sim.gamma_url}/markets")
    goldsky = httpx.post(sim.goldsky_url, json=GOLDSKY_QUERY)
    rpc = httpx.post(sim.rpc_url, json=BLOCK_NUMBER)
    for response in (gamma, goldsky, rpc):
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert "query allowance" in goldsky.text
    assert rpc.json()["error"]["code"] == 429
    assert httpx.get(f"{sim.base_url}/_sim/health").status_code == 200  # the control plane is never faulted
    sim.set_faults(None)
    assert httpx.get(f"{sim.gamma_url}/markets").status_code == 200


def test_scoped_faults_hit_only_their_api(sim) -> None:  # type: ignore[no-untyped-def]
    sim.set_faults({"rpc.500": 1.0})
    assert httpx.post(sim.rpc_url, json=BLOCK_NUMBER).status_code in (500, 502, 503)
    assert httpx.get(f"{sim.gamma_url}/markets").status_code == 200
    assert httpx.post(sim.goldsky_url, json=GOLDSKY_QUERY).status_code == 200
    injected = sim.config()["faults_injected"]
    assert injected == {"rpc.500": 1}


def test_truncated_bodies_are_not_valid_json(sim) -> None:  # type: ignore[no-untyped-def]
    sim.set_faults("truncate=1")
    for _ in range(5):
        response = httpx.get(f"{sim.gamma_url}/markets", params={"limit": 5})
        assert response.status_code == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(response.content)


def test_dropped_connections_and_timeouts_raise_transport_errors(sim) -> None:  # type: ignore[no-untyped-def]
    sim.set_faults("drop=1")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(sim.goldsky_url, json=GOLDSKY_QUERY)
    sim.set_faults("timeout=1,timeout_s=2")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sim.rpc_url, json=BLOCK_NUMBER, timeout=0.3)
    sim.set_faults(None)
    assert httpx.post(sim.rpc_url, json=BLOCK_NUMBER).status_code == 200


def test_graphql_and_rpc_errors_are_in_band(sim) -> None:  # type: ignore[no-untyped-def]
    sim.set_faults("graphql_error=1,rpc_error=1")
    body = httpx.post(sim.goldsky_url, json=GOLDSKY_QUERY).json()
    assert set(body) == {"errors"} and body["errors"][0]["message"]
    batch = httpx.post(sim.rpc_url, json=[BLOCK_NUMBER, {**BLOCK_NUMBER, "id": 2}]).json()
    assert [r["error"]["code"] for r in batch] == [-32603, -32603] and [r["id"] for r in batch] == [1, 2]


def test_latency_knob_slows_every_request(sim) -> None:  # type: ignore[no-untyped-def]
    sim.set_faults("slow_ms=150")
    started = time.perf_counter()
    for _ in range(3):
        assert httpx.post(sim.rpc_url, json=BLOCK_NUMBER).status_code == 200
    assert time.perf_counter() - started >= 0.45


def test_finalized_head_stalls_while_latest_moves(sim) -> None:  # type: ignore[no-untyped-def]
    def block(tag: str) -> int:
        request = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": [tag, False]}
        return int(httpx.post(sim.rpc_url, json=request).json()["result"]["number"], 16)

    sim.set_faults("finalized_stall=1")
    stalled = block("finalized")
    sim.set_rate(200)
    wait_until(lambda: block("latest") >= stalled + 40, "live blocks above the stalled finalized block")
    assert block("finalized") == stalled
    sim.set_faults(None)
    assert block("finalized") > stalled
