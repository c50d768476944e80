"""How fast the simulator serves fills over HTTP: GraphQL pages of 1,000 and eth_getLogs ranges of 2,000 blocks.

    python bench/bench_simulator.py [--history-fills 600000] [--seconds 10]

The simulator runs in a subprocess (one core, as in the pipeline benchmark); this process is the client. It
pages Goldsky with the sticky (timestamp, id) cursor and walks eth_getLogs in max-size block ranges, then
prints fills/s for each. Target: >= 100,000 fills/s each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.redis_server import free_port
from tests.fixtures.simulator import start_simulator_process

PAGE = 1000
QUERY = """{{ orderFilledEvents(first: {first}, orderBy: timestamp, orderDirection: asc, where: {{{where}}}) {{
  id transactionHash timestamp orderHash maker taker makerAssetId takerAssetId makerAmountFilled takerAmountFilled fee
}} }}"""


def bench_goldsky(client: httpx.Client, url: str, seconds: float) -> tuple[int, float]:
    """Sticky cursor: `timestamp_gt: T`; after a full page, `timestamp: S, id_gt: last` until short."""
    fills, started = 0, time.perf_counter()
    last_ts, sticky = 0, None
    while time.perf_counter() - started < seconds:
        where = f'timestamp_gt: "{last_ts}"' if sticky is None else f'timestamp: "{sticky[0]}", id_gt: "{sticky[1]}"'
        body = orjson.loads(client.post(url, json={"query": QUERY.format(first=PAGE, where=where)}).content)
        rows = body["data"]["orderFilledEvents"]
        fills += len(rows)
        if sticky is None:
            if not rows:
                break
            last_ts = int(rows[-1]["timestamp"])
            if len(rows) == PAGE:
                sticky = (last_ts, rows[-1]["id"])
        elif len(rows) == PAGE:
            sticky = (sticky[0], rows[-1]["id"])
        else:
            last_ts, sticky = sticky[0], None
    return fills, time.perf_counter() - started


def bench_rpc(client: httpx.Client, url: str, seconds: float, span: int) -> tuple[int, float]:
    def call(method: str, params: list[object]) -> object:
        body = orjson.loads(
            client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).content
        )
        if "error" in body:
            raise RuntimeError(body["error"])
        return body["result"]

    head = int(call("eth_getBlockByNumber", ["finalized", False])["number"], 16)  # type: ignore[index]
    truth = orjson.loads(client.get(url.replace("/rpc", "/_sim/truth"), params={"fills": 0}).content)
    block, fills, started = truth["first_block"], 0, time.perf_counter()
    while block <= head and time.perf_counter() - started < seconds:
        to_block = min(block + span - 1, head)
        logs = call("eth_getLogs", [{"fromBlock": hex(block), "toBlock": hex(to_block)}])
        fills += len(logs)  # type: ignore[arg-type]
        block = to_block + 1
    return fills, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history-fills", type=int, default=600_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    port = free_port()
    proc = start_simulator_process(port, "--history-fills", str(args.history_fills))
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=60) as client:
            g_fills, g_s = bench_goldsky(client, base + "/goldsky/subgraphs/orderbook-subgraph/0.0.1/gn", args.seconds)
            r_fills, r_s = bench_rpc(client, base + "/rpc", args.seconds, span=2000)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"goldsky graphql: {g_fills:,} fills in {g_s:.2f} s = {g_fills / g_s:,.0f} fills/s (pages of {PAGE})")
    print(f"rpc eth_getLogs: {r_fills:,} fills in {r_s:.2f} s = {r_fills / r_s:,.0f} fills/s (2,000-block ranges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
