DROP TABLE IF EXISTS {database}.customers;
