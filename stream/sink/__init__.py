"""The ClickHouse sink: Kafka topics -> ClickHouse tables, no loss, no doubles.

Read in this order: rows.py (record -> row, pure), batches.py (batching and the
offsets a batch holds back, pure), writer.py (insert, error classes, bisection),
consumer.py (the loop, backoff, commits; `Sink`, `run_sink`), clickhouse.py (clients),
migrate.py (schema migrations from schemas/clickhouse/). `python -m stream.sink` runs
the sink and the query API in one process.
"""
