-- Every table unique by its natural key at insert time (common/unique_insert.py): the writer asks ClickHouse which
-- of a batch's ids it already holds, over the batch's time ranges. order_filled_events is ordered by
-- (timestamp, id) already; trades stays ordered by (token_id, timestamp, id) for analysts and gets a projection
-- ordered by (timestamp, id) for the check. On a ReplacingMergeTree a projection needs
-- deduplicate_merge_projection_mode (rebuild: merges that drop duplicates rebuild it).
-- Lightweight DELETE stays refused on trades (lightweight_mutation_projection_mode = 'throw', the default): in
-- ClickHouse 26.x 'rebuild' leaves deleted rows visible through the projection (ClickHouse#111791), which would
-- make the check see a deleted trade as stored. Delete trades with ALTER TABLE trades DELETE WHERE ... instead.

ALTER TABLE {database}.trades MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE {database}.trades ADD PROJECTION IF NOT EXISTS by_time (SELECT id, timestamp ORDER BY (timestamp, id));

ALTER TABLE {database}.trades MATERIALIZE PROJECTION by_time SETTINGS mutations_sync = 1;

-- With nothing stored twice the analyst views need no FINAL (which would also merge every part at read time).
CREATE OR REPLACE VIEW {database}.market_volume_hourly AS
SELECT
    market_id,
    toStartOfHour(timestamp) AS hour,
    sum(usd_amount)          AS volume_usd,
    sum(token_amount)        AS volume_tokens,
    count()                  AS matches
FROM {database}.trades
WHERE is_taker_side = 1
GROUP BY market_id, hour;

CREATE OR REPLACE VIEW {database}.token_candles AS
SELECT
    token_id,
    toStartOfInterval(timestamp, toIntervalSecond({bucket_s:UInt32}))      AS bucket,
    argMin(price, (timestamp, block_number, ifNull(log_index, 0), id))     AS open,
    max(price)                                                             AS high,
    min(price)                                                             AS low,
    argMax(price, (timestamp, block_number, ifNull(log_index, 0), id))     AS close,
    sum(usd_amount)                                                        AS volume_usd,
    sum(token_amount)                                                      AS volume_tokens,
    count()                                                                AS matches
FROM {database}.trades
WHERE is_taker_side = 1
GROUP BY token_id, bucket;
