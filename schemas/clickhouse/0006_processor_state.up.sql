-- The processor's state (its Faust tables' changelog records), archived by the sink so
-- that `clickstream run` can re-seed the changelog topics of a fresh embedded broker
-- (which keeps its log in memory only) before the processor starts: see
-- stream/restore.py. One row per changelog record; key and value are raw bytes (a
-- String column holds any bytes). A tombstone is a row with deleted = 1. version makes
-- the newest record win: (sink epoch << 40) | changelog offset (stream/sink/rows.py).
-- Read with FINAL: the latest row per (table_name, key), deleted ones left out.
CREATE TABLE IF NOT EXISTS {database}.processor_state
(
    table_name  LowCardinality(String),
    partition   UInt16,
    key         String,
    value       String,
    deleted     UInt8,
    version     UInt64,
    archived_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version, deleted)
ORDER BY (table_name, key)
;
