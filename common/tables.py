"""Every ClickHouse table name of the data contract (docs/CONTRACT.md §4), in one place.

Analysts type these into SQL; changing one is a breaking change. Every query the services, the dashboard and the
ops commands build names its table through this module (tests/unit/test_layering.py checks it); the migrations
create them.
"""

MARKETS = "markets"
EVENTS = "events"
ORDER_FILLED_EVENTS = "order_filled_events"  # a view over trades since migration 007: each fill stored once
TRADES = "trades"

ALL = (MARKETS, EVENTS, ORDER_FILLED_EVENTS, TRADES)
# The names order fills are read under, unique by fill `id`: `trades`, filled from `stream:trades`, and its view.
FILL_TABLES = (TRADES, ORDER_FILLED_EVENTS)
# order_filled_events as the table it was until migration 007, kept by the upgrade with every row it held until an
# operator drops it (docs/operations.md, "The fills table kept by the upgrade"); absent where it was dropped.
FILLS_BEFORE_VIEW = "order_filled_events_before_view"
# What holds rows: what `reset` truncates (TRUNCATE of a view is refused).
STORED = (MARKETS, EVENTS, TRADES, FILLS_BEFORE_VIEW)
# The tables of Gamma objects, unique by `id` keeping the newest `updated_at`.
VERSIONED_TABLES = (MARKETS, EVENTS)
