-- One stored copy of each fill (docs/CONTRACT.md §4): `order_filled_events` keeps its name, columns, order and types
-- as a view over `trades`. The writer used to rebuild every fill row exactly from its trade, so the table held
-- nothing `trades` lacks: a fill has exactly one asset id '0' (USDC), and the trade keeps its direction, token and
-- both exact amounts. The view computes the four asset and amount columns as the writer did: maker BUY: maker
-- gives USDC ('0') for the token, maker_amount the USD in millionths, taker_amount the tokens; maker SELL: the other
-- way round. The amounts are widened to Decimal128 before the scaling: Decimal(18, 6) times 10^6 overflows
-- Decimal64 above 9.2 million (ClickHouse throws DECIMAL_OVERFLOW); the product is whole, so toUInt64 is exact.
--
-- The upgrade keeps the rows stored before: the table is renamed, never dropped (on a fresh install it is empty).
-- docs/operations.md "The fills table kept by the upgrade" has the query that checks it against `trades` and how to
-- drop it. RENAME has IF EXISTS for its source and none for its target: a second run (a service that migrated at
-- the same moment, or a run that stopped before recording this migration) finds the view under the old name and
-- its rename stops on the target; `apply_migrations` takes that as done, and the last statement checks the end state.

RENAME TABLE IF EXISTS {database}.order_filled_events TO {database}.order_filled_events_before_view;

CREATE VIEW IF NOT EXISTS {database}.order_filled_events AS
SELECT
    id,
    source,
    exchange,
    block_number,
    log_index,
    tx_hash,
    order_hash,
    timestamp,
    maker,
    taker,
    if(maker_direction = 'BUY', '0', token_id)                                     AS maker_asset_id,
    if(maker_direction = 'BUY', token_id, '0')                                     AS taker_asset_id,
    toUInt64(toDecimal128(if(maker_direction = 'BUY', usd_amount, token_amount), 6) * 1000000) AS maker_amount,
    toUInt64(toDecimal128(if(maker_direction = 'BUY', token_amount, usd_amount), 6) * 1000000) AS taker_amount,
    fee,
    ingested_at
FROM {database}.trades;

SELECT throwIf(
    (SELECT engine FROM system.tables WHERE database = '{database}' AND name = 'order_filled_events') != 'View',
    'migration 007: order_filled_events is still a table: a table order_filled_events_before_view existed already'
)
