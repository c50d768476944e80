-- Gamma as it answers since 2026-12 (docs/upstream-gamma.md). Additive and idempotent (services starting together
-- may both run it):
-- - markets without `volume`/`liquidity` (and their `*Num` twins) at all store NULL, not a zero that looks real:
--   the two columns become Nullable, and the rows stored before whose raw object had neither key get NULL;
-- - `resolution_status`: Protocol V2 markets' `resolutionStatus` ('' when absent), filled from `raw` for the rows
--   stored before;
-- - `events.version`: the event's `version`, as markets have it ('' when absent, which means v1).
-- The UPDATEs are mutations over `markets` only (one row per market: thousands, not millions).

ALTER TABLE {database}.markets MODIFY COLUMN volume Nullable(Float64);

ALTER TABLE {database}.markets MODIFY COLUMN liquidity Nullable(Float64);

ALTER TABLE {database}.markets ADD COLUMN IF NOT EXISTS resolution_status LowCardinality(String) DEFAULT '' AFTER position_ids;

ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS version LowCardinality(String) DEFAULT '' AFTER market_ids;

ALTER TABLE {database}.markets
    UPDATE volume = if(JSONHas(raw, 'volume') OR JSONHas(raw, 'volumeNum'), volume, NULL),
           liquidity = if(JSONHas(raw, 'liquidity') OR JSONHas(raw, 'liquidityNum'), liquidity, NULL),
           resolution_status = JSONExtractString(raw, 'resolutionStatus')
    WHERE NOT (JSONHas(raw, 'volume') OR JSONHas(raw, 'volumeNum'))
       OR NOT (JSONHas(raw, 'liquidity') OR JSONHas(raw, 'liquidityNum'))
       OR JSONHas(raw, 'resolutionStatus')
    SETTINGS mutations_sync = 1;

ALTER TABLE {database}.events UPDATE version = JSONExtractString(raw, 'version') WHERE JSONHas(raw, 'version')
    SETTINGS mutations_sync = 1
