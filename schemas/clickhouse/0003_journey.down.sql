DROP TABLE IF EXISTS {database}.visitors;
DROP TABLE IF EXISTS {database}.triggers;
DROP TABLE IF EXISTS {database}.stage_transitions;
DROP TABLE IF EXISTS {database}.sessions;
