DROP TABLE IF EXISTS {database}.invalid_events;
