DROP VIEW IF EXISTS {database}.funnel_daily;
DROP VIEW IF EXISTS {database}.journey_metrics_1h;
DROP TABLE IF EXISTS {database}.journey_metrics_1m;
