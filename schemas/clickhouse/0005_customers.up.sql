-- One person across devices: the journey states of every visitor linked to a user id
-- (identify/alias), merged by the processor (earliest first touch, counts added,
-- furthest stage). Filled from journey.customers; ORDER BY user_id alone, no partition
-- key (first_seen can move earlier when an older device is linked). Read with FINAL.
CREATE TABLE IF NOT EXISTS {database}.customers
(
    user_id            String,
    visitor_ids        Array(String),
    devices            UInt16,
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
    version            UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY user_id
;
