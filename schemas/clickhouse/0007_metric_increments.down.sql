-- Back to one absolute row per (window, key, partition): the increments summed.
DROP VIEW IF EXISTS {database}.journey_metrics_1h;
RENAME TABLE IF EXISTS {database}.journey_metrics_1m TO {database}.journey_metrics_1m_v2;
CREATE TABLE IF NOT EXISTS {database}.journey_metrics_1m
(
    window_start           DateTime('UTC'),
    source                 LowCardinality(String),
    campaign               LowCardinality(String),
    device_type            LowCardinality(String),
    visitor_type           LowCardinality(String),
    partition              UInt16,
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
INSERT INTO {database}.journey_metrics_1m (window_start, source, campaign, device_type, visitor_type, partition, visitors, new_visitors, returning_visitors, sessions, bounces, pageviews, engaged_seconds, sessions_awareness, sessions_consideration, sessions_decision, sessions_purchase, sessions_retention, sessions_advocacy, stage_transitions, carts_created, carts_abandoned, checkouts, orders, revenue, refunds, ratings_count, ratings_sum, nps_count, nps_promoters, nps_detractors, version)
SELECT window_start, source, campaign, device_type, visitor_type, partition, greatest(sum(visitors), 0), greatest(sum(new_visitors), 0), greatest(sum(returning_visitors), 0), greatest(sum(sessions), 0), greatest(sum(bounces), 0), greatest(sum(pageviews), 0), sum(engaged_seconds), greatest(sum(sessions_awareness), 0), greatest(sum(sessions_consideration), 0), greatest(sum(sessions_decision), 0), greatest(sum(sessions_purchase), 0), greatest(sum(sessions_retention), 0), greatest(sum(sessions_advocacy), 0), greatest(sum(stage_transitions), 0), greatest(sum(carts_created), 0), greatest(sum(carts_abandoned), 0), greatest(sum(checkouts), 0), greatest(sum(orders), 0), sum(revenue), sum(refunds), greatest(sum(ratings_count), 0), sum(ratings_sum), greatest(sum(nps_count), 0), greatest(sum(nps_promoters), 0), greatest(sum(nps_detractors), 0), max(version)
FROM {database}.journey_metrics_1m_v2 FINAL GROUP BY window_start, source, campaign, device_type, visitor_type, partition;
DROP TABLE IF EXISTS {database}.journey_metrics_1m_v2;

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
