-- Trades without a market (`market_id = ''`, docs/CONTRACT.md §5) counted cheaply at any table size: a minmax
-- skip index on market_id lets `count() ... WHERE market_id = ''` (the dashboard, `status`, `/metrics`, every
-- refresh) read only the granules whose smallest market_id is '' instead of the whole column. `trades` is ordered
-- by (token_id, timestamp), and a token's trades without a market are those stored before its market was known:
-- one run of rows per token in each part, so the granules read are about those rows' own. The index holds two
-- strings per granule (8,192 rows); docs/performance-fleet.md "Trades without a market" has the figures.
-- MATERIALIZE builds it for the parts stored before, as a background mutation: until it is done those parts
-- are read in full, which only costs time (the count is the same).

ALTER TABLE {database}.trades ADD INDEX IF NOT EXISTS market_id_minmax market_id TYPE minmax GRANULARITY 1;

ALTER TABLE {database}.trades MATERIALIZE INDEX market_id_minmax
