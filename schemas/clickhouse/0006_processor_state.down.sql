DROP TABLE IF EXISTS {database}.processor_state;
