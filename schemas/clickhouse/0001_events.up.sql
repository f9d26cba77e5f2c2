-- Raw events, one row per EventRecord (stream/records.py), written by the sink.
--
-- Replays must not double: ReplacingMergeTree collapses rows whose ORDER BY key is
-- equal (at merge time; `FINAL` or uniqExact(message_id) for exact counts before
-- that). The key holds only what is stable for one message: an SDK retry re-stamps
-- sentAt, so the skew-corrected `ts` of a retried event differs by the network delay
-- and must not be part of the key. (A retry that crosses a month boundary lands in
-- another partition; FINAL does not merge across partitions: count with uniqExact.)
--
-- properties / traits / context are JSON text: JSONExtractString(properties, 'sku').
-- {events_ttl} is `TTL ...` from CLICKSTREAM_EVENTS_TTL_DAYS, or nothing (0 = keep).
CREATE TABLE IF NOT EXISTS {database}.events
(
    message_id     String,
    type           LowCardinality(String),
    event          LowCardinality(String),
    name           String,
    visitor_id     String,
    anonymous_id   String,
    user_id        String,
    previous_id    String,
    session_id     String,
    ts             DateTime64(3, 'UTC'),
    received_at    DateTime64(3, 'UTC'),
    sent_at        Nullable(DateTime64(3, 'UTC')),
    source         LowCardinality(String),
    url            String,
    path           String,
    referrer       String,
    title          String,
    properties     String,
    traits         String,
    context        String,
    ip             String,
    user_agent     String,
    browser        LowCardinality(String),
    os             LowCardinality(String),
    device_type    LowCardinality(String),
    is_bot         Bool,
    ref_source     LowCardinality(String),
    ref_medium     LowCardinality(String),
    search_engine  LowCardinality(String),
    utm_source     LowCardinality(String),
    utm_medium     LowCardinality(String),
    utm_campaign   LowCardinality(String),
    utm_term       String,
    utm_content    String,
    click_id       String,
    _topic         LowCardinality(String),
    _partition     UInt16,
    _offset        UInt64,
    _inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (source, visitor_id, message_id)
{events_ttl}
;
