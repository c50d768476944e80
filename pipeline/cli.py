"""Argument parsing for `python -m pipeline`; each command delegates to the module that owns it.

Commands whose module parses its own flags (`simulator`, `embedded-clickhouse`) get the rest of argv.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, help); each module exposes `main(argv: list[str] | None) -> int`
COMMANDS: dict[str, tuple[str, str]] = {
    "embedded-clickhouse": ("pipeline.embedded.clickhouse_server", "serve chDB over ClickHouse's HTTP interface"),
    "embedded-redis": ("pipeline.embedded.redis_server", "start redis-server with AOF under data/redis"),
    "simulator": ("simulator.server", "serve the Gamma, Goldsky and Polygon RPC stand-ins on localhost"),
    "run": ("pipeline.launch.run", "everything under supervisord against Polymarket, embedded servers if needed"),
    "demo": ("pipeline.launch.demo", "the same with the simulator as every source: live fills, trades in seconds"),
    "doctor": ("pipeline.ops.doctor", "probe Redis, the sources and ClickHouse (exit 1: a check failed)"),
    "migrate": ("pipeline.ops.migrate", "create the ClickHouse database where absent and apply the migrations"),
    "status": ("pipeline.ops.status", "the dashboard's view in the terminal: streams, groups, services, tables"),
    "reset": ("pipeline.ops.reset", "delete streams and state (and optionally ClickHouse rows); asks first"),
    "migrate-keys": ("pipeline.ops.migrate_keys", "move the Redis keys to REDIS_KEY_PREFIX from another prefix"),
    "dlq": ("pipeline.ops.dlq", "dead letters: list, retry (re-deliver) or purge"),
    "replay": ("pipeline.ops.replay", "re-derive missing trades of a range; --unresolved: give trades their market"),
    "verify": ("pipeline.ops.verify", "reconcile trades against a source for a range; exit 1 on a gap"),
    "ack-upgrade": ("pipeline.ops.ack_upgrade", "list the exchange upgrades seen on chain, or acknowledge them"),
    "dedupe": ("pipeline.ops.dedupe", "merge away rows stored twice (from before unique inserts) in a time range"),
    "backfill": ("pipeline.ops.backfill", "backfill goldsky|chain for a range with N workers, with progress"),
    "config-docs": ("pipeline.config_docs", "write docs/configuration.md from the settings classes (--check: compare)"),
    "bench": (
        "pipeline.harness.bench",
        "end-to-end throughput, latency and memory against the simulator, into bench/results",
    ),
    "chaos": (
        "pipeline.harness.chaos",
        "SIGKILL every service kind under upstream faults, then check against the truth",
    ),
}


def usage() -> str:
    lines = ["usage: python -m pipeline <command> [options]", "", "commands:"]
    lines += [f"  {name:<22}{help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)
