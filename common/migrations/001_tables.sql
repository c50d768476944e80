-- The four tables of docs/CONTRACT.md §4. Each MergeTree keeps a dedup log of its last 10,000 insert blocks, so a batch
-- re-sent with the same insert_deduplication_token adds nothing; ReplacingMergeTree on the natural key is the
-- backstop for what the token cannot cover (read with FINAL when it matters).

CREATE TABLE IF NOT EXISTS {database}.order_filled_events
(
    id              String,
    source          LowCardinality(String),
    exchange        LowCardinality(String),
    block_number    UInt64,
    log_index       Nullable(UInt32),
    tx_hash         String,
    order_hash      String,
    timestamp       DateTime('UTC'),
    maker           String,
    taker           String,
    maker_asset_id  String,
    taker_asset_id  String,
    maker_amount    UInt64,
    taker_amount    UInt64,
    fee             UInt64,
    ingested_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp, id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.trades
(
    id               String,
    timestamp        DateTime('UTC'),
    block_number     UInt64,
    tx_hash          String,
    log_index        Nullable(UInt32),
    order_hash       String,
    source           LowCardinality(String),
    exchange         LowCardinality(String),
    market_id        String,
    condition_id     String,
    token_id         String,
    outcome          String,
    outcome_index    Int16,
    maker            String,
    taker            String,
    maker_direction  LowCardinality(String),
    taker_direction  LowCardinality(String),
    price            Float64,
    usd_amount       Decimal(18, 6),
    token_amount     Decimal(18, 6),
    fee              UInt64,
    is_taker_side    UInt8,
    ingested_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (token_id, timestamp, id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.markets
(
    id              String,
    question        String,
    condition_id    String,
    slug            String,
    outcomes        Array(String),
    outcome_prices  Array(Float64),
    clob_token_ids  Array(String),
    volume          Float64,
    liquidity       Float64,
    active          Bool,
    closed          Bool,
    archived        Bool,
    neg_risk        Bool,
    start_date      Nullable(DateTime64(6, 'UTC')),
    end_date        Nullable(DateTime64(6, 'UTC')),
    created_at      Nullable(DateTime64(6, 'UTC')),
    updated_at      DateTime64(6, 'UTC'),
    event_ids       Array(String),
    raw             String,
    ingested_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY id
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.events
(
    id              String,
    title           String,
    slug            String,
    ticker          String,
    active          Bool,
    closed          Bool,
    archived        Bool,
    featured        Bool,
    restricted      Bool,
    neg_risk        Bool,
    volume          Float64,
    liquidity       Float64,
    open_interest   Float64,
    start_date      Nullable(DateTime64(6, 'UTC')),
    end_date        Nullable(DateTime64(6, 'UTC')),
    created_at      Nullable(DateTime64(6, 'UTC')),
    updated_at      DateTime64(6, 'UTC'),
    tag_labels      Array(String),
    tag_slugs       Array(String),
    market_ids      Array(String),
    raw             String,
    ingested_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY id
SETTINGS non_replicated_deduplication_window = 10000;
