-- Metric rows become INCREMENTS (issue: state whose writes grow with what changed).
-- The processor publishes, on each tick of a partition, what every row it changed
-- since the previous tick added: `version` is the partition's publish sequence, so a
-- row is one (window, key, partition, version) and a replay of the same increment
-- collapses (ReplacingMergeTree over the whole key). Figures are sums over all rows of
-- a window; an amended session takes back its bounce with a negative increment, so
-- counts are signed. Old rows (one absolute row per window, key and partition) carry
-- over as increments of version 0.
DROP VIEW IF EXISTS {database}.journey_metrics_1h;
RENAME TABLE IF EXISTS {database}.journey_metrics_1m TO {database}.journey_metrics_1m_v1;
CREATE TABLE IF NOT EXISTS {database}.journey_metrics_1m
(
    window_start           DateTime('UTC'),
    source                 LowCardinality(String),
    campaign               LowCardinality(String),
    device_type            LowCardinality(String),
    visitor_type           LowCardinality(String),
    partition              UInt16,
    visitors               Int64,
    new_visitors           Int64,
    returning_visitors     Int64,
    sessions               Int64,
    bounces                Int64,
    pageviews              Int64,
    engaged_seconds        Float64,
    sessions_awareness     Int64,
    sessions_consideration Int64,
    sessions_decision      Int64,
    sessions_purchase      Int64,
    sessions_retention     Int64,
    sessions_advocacy      Int64,
    stage_transitions      Int64,
    carts_created          Int64,
    carts_abandoned        Int64,
    checkouts              Int64,
    orders                 Int64,
    revenue                Float64,
    refunds                Float64,
    ratings_count          Int64,
    ratings_sum            Float64,
    nps_count              Int64,
    nps_promoters          Int64,
    nps_detractors         Int64,
    version                UInt64  -- the partition's publish sequence
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, source, campaign, device_type, visitor_type, partition, version)
;
INSERT INTO {database}.journey_metrics_1m (window_start, source, campaign, device_type, visitor_type, partition, visitors, new_visitors, returning_visitors, sessions, bounces, pageviews, engaged_seconds, sessions_awareness, sessions_consideration, sessions_decision, sessions_purchase, sessions_retention, sessions_advocacy, stage_transitions, carts_created, carts_abandoned, checkouts, orders, revenue, refunds, ratings_count, ratings_sum, nps_count, nps_promoters, nps_detractors, version)
SELECT window_start, source, campaign, device_type, visitor_type, partition, visitors, new_visitors, returning_visitors, sessions, bounces, pageviews, engaged_seconds, sessions_awareness, sessions_consideration, sessions_decision, sessions_purchase, sessions_retention, sessions_advocacy, stage_transitions, carts_created, carts_abandoned, checkouts, orders, revenue, refunds, ratings_count, ratings_sum, nps_count, nps_promoters, nps_detractors, 0 FROM {database}.journey_metrics_1m_v1 FINAL;
DROP TABLE IF EXISTS {database}.journey_metrics_1m_v1;

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
