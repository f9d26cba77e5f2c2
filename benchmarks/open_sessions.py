"""The cost of a batch against the number of open sessions (issue: state whose writes grow
with what changed, not with what is open).

    .venv/bin/python -m benchmarks.open_sessions [--open 1000,100000] [--batches 40]

In process (the engine and its two tables as dicts, stream/processor/local.py), so the
figure is the engine's own cost and the bytes it hands to the changelog, without Kafka:
1. N visitors each open a session (one page view, arriving now): N open sessions.
2. Then timed: batches of 5,000 events from 1,000 active visitors (page views, product
   views, cart adds), each batch followed by one tick per partition (metric rows
   published). Per batch: wall time, records and bytes written to the state.
Before this design, one metric value per partition held every open session's visitor
and was rewritten whole by every batch: its size, and the batch cost, grew with N.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from benchmarks.harness import percentile

PARTITIONS = 4
BATCH = 5000
ACTIVE = 1000


def _record(Record, offsets, visitor: str, ts: int, arrival: int, name: str = ""):  # noqa: N803
    from stream import partitioning, topics

    event = {
        "message_id": f"{visitor}-{ts}-{name}",
        "type": "track" if name else "page",
        "event": name,
        "name": "",
        "visitor_id": visitor,
        "anonymous_id": visitor,
        "user_id": "",
        "previous_id": "",
        "ts": ts,
        "received_at": arrival,
        "source": "bench",
        "url": "https://shop.example/p/1",
        "path": "/p/1",
        "referrer": "",
        "properties": {"product_id": "p1", "price": 9.5, "quantity": 1} if name else {},
        "device_type": "desktop",
        "is_bot": False,
        "utm_campaign": "",
    }
    key = visitor.encode()
    partition = partitioning.partition_of(key, PARTITIONS)
    offsets[partition] += 1
    return Record(topics.EVENTS, partition, offsets[partition], key, orjson.dumps(event))


def measure(open_sessions: int, batches: int) -> dict:
    from stream import config, topics
    from stream.processor.engine import TICK_KEY, Engine, Record, tick_value
    from stream.processor.local import LocalTables

    settings = config.load({"CLICKSTREAM_PARTITIONS": str(PARTITIONS)})
    engine = Engine(settings)
    tables = LocalTables(PARTITIONS)
    offsets = [0] * PARTITIONS
    now = int(time.time() * 1000)
    crowd = [f"open-{i}" for i in range(open_sessions)]
    for start in range(0, len(crowd), BATCH):
        tables.run(
            engine, [_record(Record, offsets, v, now, now) for v in crowd[start : start + BATCH]]
        )
    active = crowd[:ACTIVE] if open_sessions >= ACTIVE else [f"active-{i}" for i in range(ACTIVE)]
    names = ["", "Product Viewed", "Product Added"]
    costs, written_records, written_bytes = [], [], []
    for b in range(batches):
        ts = now + (b + 1) * 1000
        records = [
            _record(Record, offsets, active[i % ACTIVE], ts + i, ts + i, names[i % 3])
            for i in range(BATCH)
        ]
        for p in range(PARTITIONS):
            offsets[p] += 1
            records.append(Record(topics.EVENTS, p, offsets[p], TICK_KEY, tick_value(ts + BATCH)))
        started = time.perf_counter()
        result = tables.run(engine, records)
        costs.append(time.perf_counter() - started)
        writes = [*result.states.values(), *result.rows.values()]
        written_records.append(len(writes))
        written_bytes.append(sum(len(v or b"") for _, v in writes))
    largest = max(len(v) for v in (*tables.visitors.values(), *tables.rows.values()))
    return {
        "open_sessions": open_sessions,
        "batch_ms_median": round(statistics.median(costs) * 1000, 1),
        "batch_ms_p90": round(percentile(costs, 90) * 1000, 1),
        "events_per_s_in_process": round(BATCH / statistics.median(costs)),
        "records_written_per_batch": round(statistics.median(written_records)),
        "bytes_written_per_batch": round(statistics.median(written_bytes)),
        "largest_state_record_bytes": largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open", default="1000,100000", help="open sessions to measure at")
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    for n in (int(x) for x in args.open.split(",")):
        print(orjson.dumps(measure(n, args.batches)).decode(), flush=True)


if __name__ == "__main__":
    main()
