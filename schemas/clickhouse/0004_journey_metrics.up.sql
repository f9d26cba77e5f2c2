-- Completed 1-minute metric windows from the processor (journey.metrics), one row per
-- (window_start, source, campaign, device_type, visitor_type, partition). A window re-emitted
-- after a restart carries the same key and a higher (or equal) version, so it
-- replaces the earlier row instead of adding to it: read with FINAL.
--
-- visitors / new_visitors / returning_visitors are distinct per minute; summed over
-- minutes (as the hourly view does) they are visitor-minutes, not distinct visitors.
CREATE TABLE IF NOT EXISTS {database}.journey_metrics_1m
(
    window_start           DateTime('UTC'),
    source                 LowCardinality(String),
    campaign               LowCardinality(String),
    device_type            LowCardinality(String),
    visitor_type           LowCardinality(String),
    partition              UInt16,  -- the Kafka partition that computed the row: rows add up across partitions
    visitors               UInt64,
    new_visitors           UInt64,
    returning_visitors     UInt64,
    sessions               UInt64,
    bounces                UInt64,
    pageviews              UInt64,
    engaged_seconds        Float64,
    sessions_awareness     UInt64,
    sessions_consideration UInt64,
    sessions_decision      UInt64,
    sessions_purchase      UInt64,
    sessions_retention     UInt64,
    sessions_advocacy      UInt64,
    stage_transitions      UInt64,
    carts_created          UInt64,
    carts_abandoned        UInt64,
    checkouts              UInt64,
    orders                 UInt64,
    revenue                Float64,
    refunds                Float64,
    ratings_count          UInt64,
    ratings_sum            Float64,
    nps_count              UInt64,
    nps_promoters          UInt64,
    nps_detractors         UInt64,
    version                UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, source, campaign, device_type, visitor_type, partition)
;

-- Hourly rollup: a plain VIEW over journey_metrics_1m FINAL, not a materialized view.
-- A materialized view sees every inserted block, so a window re-emitted after a
-- restart (or replayed by the sink) would be added twice to an AggregatingMergeTree
-- target; FINAL first and then group is exact, and one hour is at most 60 rows per key.
CREATE VIEW IF NOT EXISTS {database}.journey_metrics_1h AS
SELECT
    toStartOfHour(m.window_start) AS window_start,
    m.source AS source,
    m.campaign AS campaign,
    m.device_type AS device_type,
    m.visitor_type AS visitor_type,
    sum(m.visitors) AS visitors,
    sum(m.new_visitors) AS new_visitors,
    sum(m.returning_visitors) AS returning_visitors,
    sum(m.sessions) AS sessions,
    sum(m.bounces) AS bounces,
    sum(m.pageviews) AS pageviews,
    sum(m.engaged_seconds) AS engaged_seconds,
    sum(m.sessions_awareness) AS sessions_awareness,
    sum(m.sessions_consideration) AS sessions_consideration,
    sum(m.sessions_decision) AS sessions_decision,
    sum(m.sessions_purchase) AS sessions_purchase,
    sum(m.sessions_retention) AS sessions_retention,
    sum(m.sessions_advocacy) AS sessions_advocacy,
    sum(m.stage_transitions) AS stage_transitions,
    sum(m.carts_created) AS carts_created,
    sum(m.carts_abandoned) AS carts_abandoned,
    sum(m.checkouts) AS checkouts,
    sum(m.orders) AS orders,
    sum(m.revenue) AS revenue,
    sum(m.refunds) AS refunds,
    sum(m.ratings_count) AS ratings_count,
    sum(m.ratings_sum) AS ratings_sum,
    sum(m.nps_count) AS nps_count,
    sum(m.nps_promoters) AS nps_promoters,
    sum(m.nps_detractors) AS nps_detractors
FROM {database}.journey_metrics_1m AS m FINAL
GROUP BY window_start, source, campaign, device_type, visitor_type
;

-- Daily funnel: distinct visitors entering each stage per day and source, from the
-- stage transitions (deduplicated with FINAL, so replays do not count twice).
CREATE VIEW IF NOT EXISTS {database}.funnel_daily AS
SELECT
    toDate(t.ts) AS day,
    t.source AS source,
    t.to_stage AS stage,
    uniqExact(t.visitor_id) AS visitors,
    count() AS transitions
FROM {database}.stage_transitions AS t FINAL
GROUP BY day, source, stage
;
