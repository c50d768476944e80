-- Analyst views over trades. Both count each match once: only taker-side rows (is_taker_side = 1: `taker` is an
-- exchange contract) enter the sums, because every match also emits one row per maker order (docs/upstream.md §3).
-- FINAL makes them exact even if a replay ever slipped a duplicate past the insert tokens.

CREATE VIEW IF NOT EXISTS {database}.market_volume_hourly AS
SELECT
    market_id,
    toStartOfHour(timestamp) AS hour,
    sum(usd_amount)          AS volume_usd,
    sum(token_amount)        AS volume_tokens,
    count()                  AS matches
FROM {database}.trades FINAL
WHERE is_taker_side = 1
GROUP BY market_id, hour;

-- OHLCV candles per token for any bucket size: SELECT * FROM token_candles(bucket_s = 60) WHERE token_id = '…'
CREATE VIEW IF NOT EXISTS {database}.token_candles AS
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
FROM {database}.trades FINAL
WHERE is_taker_side = 1
GROUP BY token_id, bucket;
