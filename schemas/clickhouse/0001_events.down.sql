DROP TABLE IF EXISTS {database}.events;
