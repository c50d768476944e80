"""`python -m pipeline config-docs [--check]`: docs/configuration.md, generated from the settings classes.

Every settings class (a subclass of `common.config.PipelineSettings` in `common/`, `ingesters/`, `processors/`,
`dashboard/` or `pipeline/`) is found by reading the source, so a class added anywhere there is documented without
registering it. A setting's meaning is the comment on its line, or the comment lines just above it; its default,
type and bounds come from the model. Secrets show no default. `--check` writes nothing and exits 1 when the file
differs from what the classes say (tests/unit/test_docs.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import io
import sys
import tokenize
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from common.config import PipelineSettings, env_name

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"
PACKAGES = ("common", "ingesters", "processors", "dashboard", "pipeline")
COMMAND = "python -m pipeline config-docs"

# Meanings of the settings whose field carries no comment. A new setting is better documented by a comment on its
# line in its class (which wins over this table); tests/unit/test_docs.py fails on a setting with neither.
MEANINGS = dict(line.split(": ", 1) for line in """
REDIS_HOST: Redis host
REDIS_PORT: Redis port
REDIS_DB: Redis database number
REDIS_PASSWORD: Redis password
REDIS_SOCKET_TIMEOUT_S: a Redis command's client timeout
REDIS_KEY_PREFIX: in front of every pipeline key; `{pm}:` puts them all in one Redis Cluster hash slot
CLICKHOUSE_HOST: ClickHouse host (HTTP interface)
CLICKHOUSE_PORT: ClickHouse HTTP port
CLICKHOUSE_USER: ClickHouse user
CLICKHOUSE_PASSWORD: ClickHouse password
CLICKHOUSE_DATABASE: database, created with its tables by the numbered migrations at start
CLICKHOUSE_SECURE: HTTPS to ClickHouse
CLICKHOUSE_CONNECT_TIMEOUT_S: connect timeout
CLICKHOUSE_SEND_RECEIVE_TIMEOUT_S: a query's client timeout; the insert lock lives 30 s longer
CLICKHOUSE_FLUSH_INTERVAL_S: seconds between the writer's reads when it is not backed up
CLICKHOUSE_INSERT_MAX_ATTEMPTS: quick retries of one insert (same token) before backing off
HTTP_CONNECT_TIMEOUT_S: connect timeout of every upstream call
HTTP_READ_TIMEOUT_S: read timeout of every upstream call
HTTP_WRITE_TIMEOUT_S: write timeout of every upstream call
HTTP_POOL_TIMEOUT_S: wait for a pooled connection
HTTP_MAX_ATTEMPTS: attempts of a call on timeouts, 5xx, 429 (Retry-After honoured) and truncated bodies
HTTP_BACKOFF_BASE_S: first retry delay, doubled each attempt
HTTP_BACKOFF_MAX_S: longest retry delay
HTTP_USER_AGENT: User-Agent of every upstream call
GAMMA_API_URL: Gamma REST base URL
GOLDSKY_URL: GraphQL endpoint of the orderbook subgraph
POLYGON_RPC_URL: Polygon JSON-RPC endpoint (secret: keys live in URLs)
STREAM_BLOCK_MS: how long a consumer blocks waiting for entries
STREAM_CLAIM_INTERVAL_S: how often a consumer takes over a dead consumer's entries (XAUTOCLAIM)
STREAM_MAX_DELIVERIES: deliveries before an entry that failed on its own goes to `stream:dlq`
STREAM_TRIM_INTERVAL_S: how often the writer trims the streams behind every group
LOG_LEVEL: log level
LOG_DIR: each service also writes `<dir>/<service>.log`
SERVICE_HEARTBEAT_INTERVAL_S: heartbeat period under `service:<name>`
CHAIN_USE_FINALIZED: read only up to the `finalized` block (else head minus CHAIN_CONFIRMATIONS)
CHAIN_INITIAL_SPAN_BLOCKS: first `eth_getLogs` range; grows while calls pass, halves on range-too-large
CHAIN_MAX_SPAN_BLOCKS: largest `eth_getLogs` range
CHAIN_BLOCK_CACHE_SIZE: block timestamps cached
CHAIN_RATE_LIMIT_PER_S: RPC requests per second
CHAIN_POLL_INTERVAL_S: pause when caught up
CHAIN_BACKFILL_WORKERS: parallel ranges of `python -m pipeline backfill chain`
GOLDSKY_PAGE_SIZE: `first:` per query (the subgraph's maximum is 1000)
GOLDSKY_POLL_INTERVAL_S: pause when caught up
GOLDSKY_BACKFILL_WORKERS: parallel ranges of `python -m pipeline backfill goldsky`
EVENTS_REFRESH_S: re-list open events this often
EVENTS_LISTING: `keyset`, `offset` (Gamma serves its first 2,000 rows only), or `auto` (keyset, else offset)
MARKETS_REFRESH_S: re-list open markets this often
MARKETS_LISTING: `keyset`, `offset` (Gamma serves its first 2,000 rows only), or `auto` (keyset, else offset)
TOKEN_LOOKUP_INTERVAL_S: how often the ids the processor asks for are looked up
CLICKHOUSE_WRITER_CONSUMER: the writer's consumer and heartbeat name
TRADE_PROCESSOR_BATCH_MAX: fills per processor batch
UNKNOWN_MARKET_WAIT_S: how long a fill waits for its market before its trade is written with `market_id = ''`
HELD_CHECK_INTERVAL_S: how often fills held for their market are looked at again
DASHBOARD_PORT: where the dashboard listens
DASHBOARD_USER: basic auth user (with DASHBOARD_PASSWORD)
DASHBOARD_REDIS_TIMEOUT_S: a Redis read's timeout; beyond it the page says Redis is down
SIMULATOR_HOST: the demo's simulator: host
SIMULATOR_PORT: the demo's simulator: port
SIMULATOR_RATE: the demo's simulator: live fills per second
SIMULATOR_HISTORY_FILLS: the demo's simulator: fills served as history
SIMULATOR_MARKETS: the demo's simulator: markets
SIMULATOR_SEED: the demo's simulator: world seed
SIMULATOR_FINALIZED_LAG_BLOCKS: the demo's simulator: blocks between its head and `finalized`
""".strip().splitlines())

HEADER = f"""# Configuration

<!-- Generated by `{COMMAND}` (or `make docs`) from the settings classes: do not edit by hand. -->

Every setting is an environment variable, or a line `NAME=value` in `.env` in the working directory. A bad value
stops the service at start with one line naming the variable. Secrets (passwords, `POLYGON_RPC_URL`, which usually
carries an API key) are never logged or shown on the dashboard. A service reads the sections it needs: Redis,
ClickHouse, streams, logs and service heartbeats are common to all.
"""


def settings_modules() -> list[str]:
    """Modules that define a class whose base is named `...Settings`, by reading the source (imports nothing)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(
                isinstance(node, ast.ClassDef)
                and any(isinstance(base, ast.Name) and base.id.endswith("Settings") for base in node.bases)
                for node in tree.body
            ):
                found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def settings_classes() -> list[type[PipelineSettings]]:
    classes: list[type[PipelineSettings]] = []
    for name in settings_modules():
        module = importlib.import_module(name)
        classes += [
            value for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, PipelineSettings) and value is not PipelineSettings
            and value.__module__ == name and value.model_fields
        ]  # fmt: skip
    return classes


def field_comments(model: type[PipelineSettings]) -> dict[str, str]:
    """Field name -> its comment: the one on its line, else the comment lines just above it."""
    source = inspect.getsource(model)
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(token.start[0])
    result = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = [comments[line] for line in range(node.lineno, node.end_lineno + 1) if line in comments]
        if not text:
            line = node.lineno - 1
            while line in comments and line not in code_lines:
                text.insert(0, comments[line])
                line -= 1
        result[node.target.id] = " ".join(text)
    return result


def type_text(field: FieldInfo) -> str:
    annotation = field.annotation
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) is Literal:
        return " \\| ".join(f"`{arg}`" for arg in get_args(annotation))
    if args and get_origin(annotation) is not Literal:
        annotation = args[0]
    if annotation is SecretStr:
        return "secret"
    bounds = []
    for item in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{sign} {getattr(item, attr)}")
    name = getattr(annotation, "__name__", str(annotation))
    return name + (f" ({', '.join(bounds)})" if bounds else "")


def default_text(field: FieldInfo) -> str:
    default: Any = field.get_default(call_default_factory=True)
    if isinstance(default, SecretStr):
        return "(secret)"
    if default is None:
        return "—"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, int):
        return f"{default:_}".replace("_", ",") if abs(default) >= 10_000 else str(default)
    return str(default) if default != "" else '""'


def section(model: type[PipelineSettings]) -> list[str]:
    comments = field_comments(model)
    doc = inspect.getdoc(model)
    own_doc = doc if doc and doc != inspect.getdoc(PipelineSettings) else ""
    lines = [f"## {model.__name__} (`{model.__module__}`)", ""]
    if own_doc:
        lines += [" ".join(own_doc.split()), ""]
    lines += ["| variable | default | type | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        meaning = (comments.get(name) or MEANINGS.get(env_name(model, name), "")).replace("|", "\\|")
        lines.append(f"| `{env_name(model, name)}` | {default_text(field)} | {type_text(field)} | {meaning} |")
    return [*lines, ""]


def render() -> str:
    lines = [HEADER]
    for model in settings_classes():
        lines += section(model)
    return "\n".join(lines).rstrip("\n") + "\n"


def documented_names(text: str) -> set[str]:
    return {cell.strip("` ") for line in text.splitlines() if line.startswith("| `") for cell in [line.split("|")[1]]}


def all_names() -> set[str]:
    return {env_name(model, name) for model in settings_classes() for name in model.model_fields}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{COMMAND}", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUTPUT.exists() and OUTPUT.read_text(encoding="utf-8") == text:
            return 0
        print(f"{OUTPUT.relative_to(ROOT)} is out of date: run `{COMMAND}`", file=sys.stderr)
        return 1
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(all_names())} settings)")
    return 0
