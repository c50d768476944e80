-- Protocol V2 markets (docs/upstream.md §1.4): Gamma's `version` ('v1', 'v2', or '' when absent, which means v1) and the
-- native `positionIds` array of V2 markets, whose fills carry these ids instead of `clob_token_ids`. Rows written
-- before this migration read as '' and [] (ADD COLUMN with defaults rewrites nothing).

ALTER TABLE {database}.markets ADD COLUMN IF NOT EXISTS version LowCardinality(String) DEFAULT '' AFTER clob_token_ids;

ALTER TABLE {database}.markets ADD COLUMN IF NOT EXISTS position_ids Array(String) DEFAULT [] AFTER version;
