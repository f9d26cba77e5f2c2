-- Journey records from the processor. Each table collapses replays on a key derived
-- from data (session id, idempotency key, visitor id), never on a clock.
--
-- Rule for every ReplacingMergeTree here: the ORDER BY and PARTITION BY columns must
-- never change for one logical row, because rows only collapse when their sorting
-- key is equal and they share a partition. So:
--   * sessions: ORDER BY session_id alone and no partition key. started_at can move
--     earlier (late events), source and visitor_id could be refined later, and any of
--     them in the key would leave two live versions of one session.
--   * stage_transitions / triggers: ORDER BY idempotency_key; partitioned by the month
--     of ts, which is part of the deterministic record (same key => same ts).
--   * visitors: ORDER BY visitor_id, no partition key (first_seen can move earlier).
-- Filters on other columns use data-skipping indexes. Read with FINAL (or argMax).

CREATE TABLE IF NOT EXISTS {database}.sessions
(
    session_id      String,
    visitor_id      String,
    anonymous_id    String,
    user_id         String,
    source          LowCardinality(String),
    started_at      DateTime64(3, 'UTC'),
    ended_at        DateTime64(3, 'UTC'),
    duration_s      Float64,
    pageviews       UInt32,
    events          UInt32,
    engaged_seconds Float64,
    bounce          Bool,
    landing_page    String,
    exit_page       String,
    referrer        String,
    ref_source      LowCardinality(String),
    ref_medium      LowCardinality(String),
    utm_source      LowCardinality(String),
    utm_medium      LowCardinality(String),
    utm_campaign    LowCardinality(String),
    click_id        String,
    device_type     LowCardinality(String),
    browser         LowCardinality(String),
    os              LowCardinality(String),
    is_bot          Bool,
    stage_reached   LowCardinality(String),
    cart_value      Float64,
    cart_items      UInt32,
    orders          UInt32,
    revenue         Float64,
    refunds         Float64,
    is_new_visitor  Bool,
    closed          Bool,
    close_reason    LowCardinality(String),
    version         UInt64,
    INDEX idx_source source TYPE set(256) GRANULARITY 4,
    INDEX idx_started started_at TYPE minmax GRANULARITY 4,
    INDEX idx_visitor visitor_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version)
ORDER BY session_id
;

CREATE TABLE IF NOT EXISTS {database}.stage_transitions
(
    idempotency_key String,
    visitor_id      String,
    anonymous_id    String,
    user_id         String,
    source          LowCardinality(String),
    from_stage      LowCardinality(String),
    to_stage        LowCardinality(String),
    ts              DateTime64(3, 'UTC'),
    session_id      String,
    event_id        String,
    INDEX idx_source source TYPE set(256) GRANULARITY 4,
    INDEX idx_ts ts TYPE minmax GRANULARITY 4,
    INDEX idx_visitor visitor_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY idempotency_key
;

CREATE TABLE IF NOT EXISTS {database}.triggers
(
    idempotency_key     String,
    trigger             LowCardinality(String),
    visitor_id          String,
    anonymous_id        String,
    user_id             String,
    source              LowCardinality(String),
    ts                  DateTime64(3, 'UTC'),
    session_id          String,
    cart_items          String,
    cart_value          Float64,
    currency            LowCardinality(String),
    last_product_viewed String,
    order_id            String,
    revenue             Float64,
    INDEX idx_source source TYPE set(256) GRANULARITY 4,
    INDEX idx_ts ts TYPE minmax GRANULARITY 4,
    INDEX idx_visitor visitor_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY idempotency_key
;

CREATE TABLE IF NOT EXISTS {database}.visitors
(
    visitor_id         String,
    anonymous_id       String,
    user_id            String,
    source             LowCardinality(String),
    first_seen         DateTime64(3, 'UTC'),
    last_seen          DateTime64(3, 'UTC'),
    sessions           UInt32,
    orders             UInt32,
    revenue            Float64,
    lifetime_value     Float64,
    stage              LowCardinality(String),
    first_utm_source   LowCardinality(String),
    first_utm_medium   LowCardinality(String),
    first_utm_campaign LowCardinality(String),
    first_referrer     String,
    first_landing_page String,
    version            UInt64,
    INDEX idx_source source TYPE set(256) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(version)
ORDER BY visitor_id
;
