-- Dead letters: InvalidRecord from the collector and the processor (clickstream.invalid),
-- plus what the sink itself refuses: records it cannot read and rows ClickHouse
-- rejected for their content (stage = 'sink', error = ClickHouse's message).
-- Deduplicated by message_id; received_at is the record's own, so a replay keeps its key.
CREATE TABLE IF NOT EXISTS {database}.invalid_events
(
    received_at  DateTime64(3, 'UTC'),
    source       LowCardinality(String),
    reasons      Array(String),
    payload      String,
    message_id   String,
    stage        LowCardinality(String),
    error        String,
    _topic       LowCardinality(String),
    _partition   UInt16,
    _offset      UInt64,
    _inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source, stage, message_id)
;
