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

# Cursors: plain strings, readable with `redis-cli GET`.
STATE_POLYMARKET_OFFSET = "state:polymarket_offset"
STATE_POLYMARKET_EVENTS_OFFSET = "state:polymarket_events_offset"
STATE_GOLDSKY_LAST_TIMESTAMP = "state:goldsky_last_timestamp"
STATE_GOLDSKY_LAST_ID = "state:goldsky_last_id"  # tie-breaker among fills sharing the last timestamp
STATE_CHAIN_LAST_BLOCK = "state:chain_last_block"

# Last error text per pending entry of a group, kept until the entry is acked or dead-lettered.
FAILURES_PREFIX = "failures:"


def service_key(name: str) -> str:
    """Hash with a service's heartbeat, state and counters."""
    return f"service:{name}"


def failures_key(stream: str, group: str) -> str:
    return f"{FAILURES_PREFIX}{stream}:{group}"
