DROP TABLE IF EXISTS {database}.erasures;
DROP TABLE IF EXISTS {database}.suppressions;
