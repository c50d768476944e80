"""Every ClickHouse table name of the data contract (docs/CONTRACT.md §4), in one place.

Analysts type these into SQL; changing one is a breaking change. Every query the services, the dashboard and the
ops commands build names its table through this module (tests/unit/test_layering.py checks it); the migrations
create them.
"""

MARKETS = "markets"
EVENTS = "events"
ORDER_FILLED_EVENTS = "order_filled_events"
TRADES = "trades"

ALL = (MARKETS, EVENTS, ORDER_FILLED_EVENTS, TRADES)
# The tables of order fills, unique by fill `id`, filled from `stream:trades`.
FILL_TABLES = (TRADES, ORDER_FILLED_EVENTS)
# The tables of Gamma objects, unique by `id` keeping the newest `updated_at`.
VERSIONED_TABLES = (MARKETS, EVENTS)
