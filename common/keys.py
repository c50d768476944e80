"""Every Redis name of the data contract (docs/CONTRACT.md §3), in one place.

Operators type these into `redis-cli`; changing one is a breaking change. Every key starts with REDIS_KEY_PREFIX
(`PREFIX`, read once at import: empty by default, so the names below are the documented ones; `{pm}:` on Redis
Cluster puts every key in one hash slot, the one shard that keeps a page, its cursor and their acks consistent).
Consumer group names are not keys and carry no prefix. `logical_name` and `under` translate between prefixes
(`python -m pipeline migrate-keys`, the startup check in `common.key_prefix`).
"""

from common.config import RedisKeySettings, load

PREFIX = load(RedisKeySettings).key_prefix

# Streams: one field `data` holding compact JSON.
STREAM_MARKETS = PREFIX + "stream:markets"
STREAM_EVENTS = PREFIX + "stream:events"
STREAM_ORDER_EVENTS = PREFIX + "stream:order_events"
STREAM_TRADES = PREFIX + "stream:trades"
# Dead letters: original stream, id, payload, error, delivery count, time.
STREAM_DLQ = PREFIX + "stream:dlq"

ALL_STREAMS = (STREAM_MARKETS, STREAM_EVENTS, STREAM_ORDER_EVENTS, STREAM_TRADES, STREAM_DLQ)
# Items appended to each stream since it was created (a hash, field: the stream's key, value: a count), written by
# the same scripts that append the entries: an entry is a page of 1..N items (common/pages.py), so XLEN and
# XINFO's entries-added count pages, and this counts what they hold.
STREAM_ITEMS = PREFIX + "stream:items"

# Consumer groups.
GROUP_TRADE_PROCESSOR = "trade-processor"
GROUP_CLICKHOUSE_WRITER = "clickhouse-writer"

# Which groups must have consumed an entry before it may be trimmed. A stream is not trimmed at all until each
# of its groups exists, so a consumer that starts later than the others still finds every entry. The writer reads
# stream:trades only (order_filled_events is a view over trades), so stream:order_events has the processor alone.
STREAM_GROUPS = {
    STREAM_MARKETS: (GROUP_CLICKHOUSE_WRITER,),
    STREAM_EVENTS: (GROUP_CLICKHOUSE_WRITER,),
    STREAM_ORDER_EVENTS: (GROUP_TRADE_PROCESSOR,),
    STREAM_TRADES: (GROUP_CLICKHOUSE_WRITER,),
}

# Cursors: plain strings, readable with `redis-cli GET`.
STATE_POLYMARKET_OFFSET = PREFIX + "state:polymarket_offset"
STATE_POLYMARKET_EVENTS_OFFSET = PREFIX + "state:polymarket_events_offset"
STATE_GOLDSKY_LAST_TIMESTAMP = PREFIX + "state:goldsky_last_timestamp"
STATE_GOLDSKY_LAST_ID = PREFIX + "state:goldsky_last_id"  # tie-breaker among fills sharing the last timestamp
STATE_CHAIN_LAST_BLOCK = PREFIX + "state:chain_last_block"


def backfill_key(source: str, first: int, last: int, field: str) -> str:
    """Cursor key of one backfill range, e.g. `state:goldsky_backfill:1700000000-1700086399:last_timestamp`."""
    return f"{PREFIX}state:{source}_backfill:{first}-{last}:{field}"


# Token -> market map (compact JSON: market_id, condition_id, outcome, outcome_index), written by the markets
# ingester in the same script as the markets, read by every trade processor worker.
MARKETS_BY_TOKEN = PREFIX + "markets:by_token"
# Token ids the trade processor could not resolve; the markets ingester looks them up (SET).
TOKEN_LOOKUPS = PREFIX + "markets:token_lookups"
# Content hash per id, so unchanged markets and events are not appended again.
MARKETS_CONTENT_HASH = PREFIX + "markets:content_hash"
EVENTS_CONTENT_HASH = PREFIX + "events:content_hash"

# `Upgraded` logs of the exchanges' proxies (ExchangeV3), field `<block>-<log index>`, value a JSON
# `ExchangeUpgrade`; written by the chain ingester (HSETNX: a range read again keeps an acknowledgement), marked
# acknowledged by `python -m pipeline ack-upgrade`. The chain ingester is degraded while one is unacknowledged.
EXCHANGE_UPGRADES = PREFIX + "chain:exchange_upgrades"
# Gauge of the chain ingester: how many of them are not acknowledged yet.
GAUGE_UNACKNOWLEDGED_UPGRADES = "exchange_upgrades_unacknowledged"

# One lock per ClickHouse table, held while a batch is checked against the table and inserted, so two writers
# never both find a fill absent and both insert it (common/unique_insert.py). Value: the owner's name.
INSERT_LOCK_PREFIX = PREFIX + "lock:insert:"

# Last error text per pending entry of a group, kept until the entry is acked or dead-lettered.
FAILURES_PREFIX = PREFIX + "failures:"


# The services of docs/CONTRACT.md §1, by the names their heartbeats (service:<name>) and supervisord programs carry.
SERVICES = (
    "polymarket_ingester",
    "polymarket_events_ingester",
    "goldsky_ingester",
    "chain_ingester",
    "trade_processor",
    "clickhouse_writer",
)


def service_key(name: str) -> str:
    """Hash with a service's heartbeat, state, counters (`count:<name>`) and gauges (`gauge:<name>`)."""
    return f"{PREFIX}service:{name}"


def gauge_field(gauge: str) -> str:
    """Field of a gauge (a value set, not added to) in a service's heartbeat hash (`common.payloads.Heartbeat`)."""
    return f"gauge:{gauge}"


# The chain ingester's gauges, block numbers: the chain's head, and the safe head it reads up to (`finalized`, or
# head minus CHAIN_CONFIRMATIONS). Head minus safe head is the finality lag; Polygon's can stall for minutes.
GAUGE_CHAIN_HEAD = "chain_head"
GAUGE_SAFE_HEAD = "safe_head"


def failures_key(stream: str, group: str) -> str:
    return f"{FAILURES_PREFIX}{logical_name(stream)}:{group}"


def insert_lock_key(table: str) -> str:
    return f"{INSERT_LOCK_PREFIX}{table}"


# What the pipeline keeps in Redis, by its names without the prefix: the streams, the cursors (`state:`), the
# markets' and events' hashes, the exchanges' upgrades, the failures hashes, the heartbeats and the insert locks.
# A key of the same Redis outside these patterns is not the pipeline's (reset, migrate-keys and the prefix check
# leave it alone).
LOGICAL_PATTERNS = ("stream:*", "state:*", "markets:*", "events:*", "chain:*", "failures:*", "service:*", "lock:*")
LOGICAL_STREAMS = tuple(stream.removeprefix(PREFIX) for stream in ALL_STREAMS)


def logical_name(key: str) -> str:
    """`key` without this process's prefix (the name the contract documents)."""
    return key.removeprefix(PREFIX)


def current_stream(recorded: str) -> str:
    """A stream name as recorded earlier (in a dead letter), under this process's prefix, whatever prefix it had."""
    logical = next((name for name in LOGICAL_STREAMS if recorded.endswith(name)), None)
    return PREFIX + logical if logical is not None else recorded


def under(prefix: str, key: str) -> str:
    """The same key under another prefix: `under("{pm}:", STREAM_TRADES)` is `{pm}:stream:trades`."""
    return prefix + logical_name(key)


def glob_escape(text: str) -> str:
    """`text` matched literally in a SCAN/KEYS pattern (a hash tag's braces are literal already)."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
def writer_lease_key(table: str) -> str:
    """`lock:insert:<table>:writer`: held by the one writer of `table` for its life (common/unique_insert.py)."""
    return f"{insert_lock_key(table)}:writer"
