"""Benchmark: what `replay --unresolved` costs ClickHouse, with a million trades stored.

    python bench/bench_repair_unresolved.py [--rows 1000000] [--json]

Starts its own embedded ClickHouse (chDB behind the HTTP interface, as the services reach it) in a temp folder,
seeds `trades` with `--rows` rows (25 a second, `INSERT ... SELECT ... FROM numbers(N)`), then for each case
resets the market columns of a share of them to '' and times the repair's mutations
(`pipeline.ops.repair_unresolved.mutation`, 2,000 tokens each, `mutations_sync = 2`): wall seconds, ClickHouse CPU
seconds (user + system of the server process), CPU per repaired row, `count()` before and after. The rows spread
over 10,000 tokens. Cases:
- the rows of 2,000 tokens (20 % of the table, one mutation);
- a tenth of the rows of those 2,000 tokens (2 %, one mutation): an upgraded deployment's V2 trades, say;
- every row (all 10,000 tokens: five mutations, each rewriting the columns of the parts it touches again).
Prints one line per case with the load average beside it; `--json` prints the figures as one JSON object last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import tables
from common.clickhouse import apply_migrations, make_client
from common.config import ClickHouseSettings
from common.payloads import MarketRef
from pipeline.harness.fleet import load_average, read_cpu_s
from pipeline.ops.command import chunks
from pipeline.ops.repair_unresolved import MUTATION_SETTINGS, TOKENS_PER_MUTATION, mutation
from tests.fixtures.clickhouse_server import ClickHouseServer
from tests.fixtures.redis_server import free_port

START_TS = 1_777_000_000
ROWS_PER_S = 25
TOKENS = 10_000  # the seeded rows spread evenly over this many tokens
CASES = (("the rows of 2,000 tokens (20 %)", 1.0, 2_000), ("a tenth of those (2 %)", 0.1, 2_000),
         ("every row (10,000 tokens)", 1.0, 10_000))  # fmt: skip


def token(number: int) -> str:
    """A 77-digit decimal id, like a CTF token id or a position id."""
    return "7" + str(number).rjust(76, "0")


def seed(client: Any, rows: int) -> None:
    client.command(
        f"INSERT INTO {tables.TRADES} (id, timestamp, block_number, tx_hash, order_hash, source, exchange, "
        "token_id, outcome_index, maker, taker, maker_direction, taker_direction, price, usd_amount, token_amount) "
        f"SELECT concat('0x', hex(sipHash128(number)), '_0x', hex(number)), toDateTime({START_TS} + "
        f"intDiv(number, {ROWS_PER_S})), 90000000 + intDiv(number, 50), concat('0x', hex(sipHash128(number))), "
        "concat('0x', hex(number)), 'chain', '0xe3333700ca9d93003f00f0f71f8515005f6c00aa', "
        f"concat('7', leftPad(toString(number % {TOKENS}), 76, '0')), -1, '0xmaker', '0xtaker', 'BUY', 'SELL', 0.5, "
        f"toDecimal64(12.5, 6), toDecimal64(25, 6) FROM numbers({rows}) SETTINGS max_insert_threads = 2"
    )
    client.command(f"OPTIMIZE TABLE {tables.TRADES} FINAL")  # one part per partition, as a settled table has


def orphan(client: Any, share: float, tokens: int) -> int:
    """Set the market columns of rows whose token is among the first `tokens`, `share` of them, to ''."""
    client.command(f"ALTER TABLE {tables.TRADES} UPDATE market_id = 'm', condition_id = 'c', outcome = 'Yes', "
                   "outcome_index = 0 WHERE 1 SETTINGS mutations_sync = 2")  # fmt: skip
    every = round(1 / share)
    client.command(
        f"ALTER TABLE {tables.TRADES} UPDATE market_id = '', condition_id = '', outcome = '', outcome_index = -1 "
        f"WHERE toUInt64(substring(token_id, 2)) < {tokens} AND cityHash64(id) % {every} = 0 "
        "SETTINGS mutations_sync = 2"
    )
    return int(client.command(f"SELECT count() FROM {tables.TRADES} WHERE market_id = ''"))


def repair_case(client: Any, server_pid: int, tokens: int) -> dict[str, Any]:
    refs = {
        token(i): MarketRef(market_id=str(600_000 + i // 2), condition_id=f"0x{i // 2:064x}",
                            outcome=("Yes", "No")[i % 2], outcome_index=i % 2)
        for i in range(tokens)
    }  # fmt: skip
    before = int(client.command(f"SELECT count() FROM {tables.TRADES}"))
    batches = chunks(sorted(refs), TOKENS_PER_MUTATION)
    started, cpu = time.perf_counter(), read_cpu_s(server_pid)
    for batch in batches:
        client.command(mutation({t: refs[t] for t in batch}, 0, 2**32 - 1), settings=MUTATION_SETTINGS)
    seconds, cpu_s = time.perf_counter() - started, read_cpu_s(server_pid) - cpu
    left = int(client.command(f"SELECT count() FROM {tables.TRADES} WHERE market_id = ''"))
    return {"mutations": len(batches), "seconds": round(seconds, 2), "server_cpu_s": round(cpu_s, 2),
            "count_before": before, "count_after": int(client.command(f"SELECT count() FROM {tables.TRADES}")),
            "left_unresolved": left, "load_average": load_average()}  # fmt: skip


def bench(rows: int, workdir: Path) -> dict[str, Any]:
    server = ClickHouseServer(workdir / "clickhouse", free_port())
    server.start()
    assert server.process is not None
    ch = ClickHouseSettings(host="127.0.0.1", port=server.port, database="bench_repair", send_receive_timeout_s=1800)
    result: dict[str, Any] = {"rows": rows, "load_average_start": load_average(), "cases": {}}
    try:
        apply_migrations(ch)
        client = make_client(ch)
        started = time.perf_counter()
        seed(client, rows)
        print(f"seeded {rows:,} trades in {time.perf_counter() - started:.0f} s, load {load_average()}", flush=True)
        for label, share, tokens in CASES:
            orphaned = orphan(client, share, tokens)
            f = repair_case(client, server.process.pid, tokens) | {"orphaned": orphaned}
            f["server_cpu_us_per_row"] = round(f["server_cpu_s"] * 1e6 / orphaned, 2)
            result["cases"][label] = f
            print(f"repair {label}: {orphaned:,} trades in {f['mutations']} mutation(s), {f['seconds']} s, "
                  f"ClickHouse CPU {f['server_cpu_s']} s ({f['server_cpu_us_per_row']} µs/repaired row), count() "
                  f"{f['count_before']:,} -> {f['count_after']:,}, {f['left_unresolved']} left, "
                  f"load {f['load_average']}", flush=True)  # fmt: skip
        client.close()
    finally:
        server.stop()
    result["load_average_end"] = load_average()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object last")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        result = bench(args.rows, Path(workdir))
    if args.json:
        print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
