"""Every Redis name of the data contract (DESIGN §3), in one place.

Operators type these into `redis-cli`; changing one is a breaking change.
"""

# Streams: one field `data` holding compact JSON.
STREAM_MARKETS = "stream:markets"
STREAM_EVENTS = "stream:events"
STREAM_ORDER_EVENTS = "stream:order_events"
STREAM_TRADES = "stream:trades"
# Dead letters: original stream, id, payload, error, delivery count, time.
STREAM_DLQ = "stream:dlq"

ALL_STREAMS = (STREAM_MARKETS, STREAM_EVENTS, STREAM_ORDER_EVENTS, STREAM_TRADES, STREAM_DLQ)

# Consumer groups.
GROUP_TRADE_PROCESSOR = "trade-processor"
GROUP_CLICKHOUSE_WRITER = "clickhouse-writer"

# Which groups must have consumed an entry before it may be trimmed. A stream is not trimmed at all until each
# of its groups exists, so a consumer that starts later than the others still finds every entry. The writer fills
# order_filled_events from stream:trades, so stream:order_events has the processor alone (a `clickhouse-writer`
# group left there by an earlier writer is drained and destroyed by the writer at start).
STREAM_GROUPS = {
    STREAM_MARKETS: (GROUP_CLICKHOUSE_WRITER,),
    STREAM_EVENTS: (GROUP_CLICKHOUSE_WRITER,),
    STREAM_ORDER_EVENTS: (GROUP_TRADE_PROCESSOR,),
    STREAM_TRADES: (GROUP_CLICKHOUSE_WRITER,),
}

# Cursors: plain strings, readable with `redis-cli GET`.
STATE_POLYMARKET_OFFSET = "state:polymarket_offset"
STATE_POLYMARKET_EVENTS_OFFSET = "state:polymarket_events_offset"
STATE_GOLDSKY_LAST_TIMESTAMP = "state:goldsky_last_timestamp"
STATE_GOLDSKY_LAST_ID = "state:goldsky_last_id"  # tie-breaker among fills sharing the last timestamp
STATE_CHAIN_LAST_BLOCK = "state:chain_last_block"


def backfill_key(source: str, first: int, last: int, field: str) -> str:
    """Cursor key of one backfill range, e.g. `state:goldsky_backfill:1700000000-1700086399:last_timestamp`."""
    return f"state:{source}_backfill:{first}-{last}:{field}"


# Token -> market map (compact JSON: market_id, condition_id, outcome, outcome_index), written by the markets
# ingester in the same script as the markets, read by every trade processor worker.
MARKETS_BY_TOKEN = "markets:by_token"
# Token ids the trade processor could not resolve; the markets ingester looks them up (SET).
TOKEN_LOOKUPS = "markets:token_lookups"
# Content hash per id, so unchanged markets and events are not appended again.
MARKETS_CONTENT_HASH = "markets:content_hash"
EVENTS_CONTENT_HASH = "events:content_hash"

# One lock per ClickHouse table, held while a batch is checked against the table and inserted, so two writers
# never both find a fill absent and both insert it (common/unique_insert.py). Value: the owner's name.
INSERT_LOCK_PREFIX = "lock:insert:"

# Last error text per pending entry of a group, kept until the entry is acked or dead-lettered.
FAILURES_PREFIX = "failures:"


# The services of DESIGN §1, by the names their heartbeats (service:<name>) and supervisord programs carry.
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
    return f"service:{name}"


def gauge_field(gauge: str) -> str:
    """Field of a gauge (a value set, not added to) in a service's heartbeat hash (`common.payloads.Heartbeat`)."""
    return f"gauge:{gauge}"


# The chain ingester's gauges, block numbers: the chain's head, and the safe head it reads up to (`finalized`, or
# head minus CHAIN_CONFIRMATIONS). Head minus safe head is the finality lag; Polygon's can stall for minutes.
GAUGE_CHAIN_HEAD = "chain_head"
GAUGE_SAFE_HEAD = "safe_head"


def failures_key(stream: str, group: str) -> str:
    return f"{FAILURES_PREFIX}{stream}:{group}"


def insert_lock_key(table: str) -> str:
    return f"{INSERT_LOCK_PREFIX}{table}"


def writer_lease_key(table: str) -> str:
    """`lock:insert:<table>:writer`: held by the one writer of `table` for its life (common/unique_insert.py)."""
    return f"{insert_lock_key(table)}:writer"
