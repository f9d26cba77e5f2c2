"""The sink alone under a live trickle: CPU per 1,000 rows and inserts/s.

    PYTHONPATH=. .venv/bin/python -m benchmarks.sink_live RATE SECONDS JOURNEY_FLOOR FETCH_MIN_BYTES [TABLE_SETTINGS]

The `Sink` class in this process, on a fresh embedded broker and chdb directory; a child
process produces traffic-model events at RATE/s, plus sessions, stage changes and visitors
(40 per 1,000 events each), metrics (16) and triggers (2.5), as the processor would. After
5 s of warm-up, this process's CPU (the sink's loop and the engine's threads) over SECONDS,
divided by the rows written, and the inserts per second. JOURNEY_FLOOR sets
CLICKSTREAM_SINK_JOURNEY_FLUSH_SECONDS; FETCH_MIN_BYTES overrides the consumer's
FETCH_MIN_BYTES (1 = the behaviour before the sixth session). TABLE_SETTINGS, e.g.
`min_parts_to_merge_at_once=10`, is applied to every table (ALTER TABLE ... MODIFY SETTING)
before the sink starts, to try MergeTree settings. Prints one JSON line.
No query API, no look-ups: the figure is the sink's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

PRODUCER = r"""
import asyncio, sys, time, orjson
from aiokafka import AIOKafkaProducer
from benchmarks.common import model_events
from stream import config, topics
RATE, SECONDS = float(sys.argv[1]), float(sys.argv[2])
s = config.load()
events = model_events(int(RATE * SECONDS) + 100)
B = 1_767_225_600_000


def session(i, v):
    return {"session_id": f"s{i}", "visitor_id": v, "anonymous_id": v, "user_id": "",
            "source": "web", "started_at": B, "ended_at": B + 60000, "duration_s": 60.0,
            "pageviews": 3, "events": 5, "bounce": False, "stage_reached": "consideration",
            "closed": False, "version": 1}


async def main():
    p = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, linger_ms=5)
    await p.start()
    t0, i = time.monotonic(), 0
    while i < len(events) - 100:
        for _ in range(20):
            key, value = events[i]
            i += 1
            await p.send(s.topic(topics.EVENTS), value, key=key)
            v = f"v{i}".encode()
            if i % 25 == 0:
                await p.send(s.topic(topics.SESSIONS), orjson.dumps(session(i, v.decode())), key=v)
                change = {"idempotency_key": f"k{i}", "visitor_id": v.decode(), "source": "web",
                          "from_stage": "", "to_stage": "awareness", "ts": B,
                          "session_id": f"s{i}", "event_id": f"m{i}"}
                await p.send(s.topic(topics.STAGE_CHANGES), orjson.dumps(change), key=v)
                visitor = {"visitor_id": v.decode(), "source": "web", "first_seen": B,
                           "stage": "awareness"}
                await p.send(s.topic(topics.VISITORS), orjson.dumps(visitor), key=v)
            if i % 60 == 0:
                window = {"window_start": B + i * 1000, "source": "web", "visitors": 3,
                          "version": 1}
                await p.send(s.topic(topics.METRICS), orjson.dumps(window), key=b"m")
            if i % 400 == 0:
                trigger = {"idempotency_key": f"t{i}", "trigger": "cart_abandoned",
                           "visitor_id": v.decode(), "source": "web", "ts": B,
                           "cart_items": [], "cart_value": 1.0, "currency": "EUR",
                           "last_product_viewed": {}}
                await p.send(s.topic(topics.TRIGGERS), orjson.dumps(trigger), key=b"t")
        wait = t0 + i / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
    await p.flush()
    await p.stop()


asyncio.run(main())
"""


def _counter(name: str, suffix: str) -> float:
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == name
        for sample in family.samples
        if sample.name.endswith(suffix)
    )


async def run(
    rate: float, seconds: float, floor: str, min_bytes: int, table_settings: str = ""
) -> dict:
    from benchmarks.harness import free_port

    port = free_port()
    data = tempfile.mkdtemp(prefix="clickstream-sink-live-")
    os.environ.update(
        CLICKSTREAM_DATA_DIR=data,
        CLICKSTREAM_BROKER_PORT=str(port),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        CLICKSTREAM_SINK_JOURNEY_FLUSH_SECONDS=floor,
        CLICKSTREAM_STATE_ARCHIVE="off",
    )
    from stream import config
    from stream.broker import EmbeddedBroker, create_topics
    from stream.sink import consumer, migrate
    from stream.sink.clickhouse import open_client

    consumer.FETCH_MIN_BYTES = min_bytes
    broker = EmbeddedBroker(port)
    broker.start()
    settings = config.load()
    await create_topics(settings)
    client = open_client(f"chdb:{data}/ch")
    migrate.apply(client, settings)
    if table_settings:
        names = client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree'",
            parameters={"db": settings.database},
        ).result_rows
        for (name,) in names:
            client.command(
                f"ALTER TABLE {settings.database}.{name} MODIFY SETTING {table_settings}"
            )
    consumer.tune_gc()
    sink = consumer.Sink(settings, client)
    await sink.start()
    await asyncio.sleep(3)
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(rate), str(seconds + 5)], env=os.environ
    )
    await asyncio.sleep(5)  # warm-up
    inserts0 = _counter("clickstream_sink_batch_rows", "_count")
    rows0 = _counter("clickstream_sink_rows_written", "_total")
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    inserts = _counter("clickstream_sink_batch_rows", "_count") - inserts0
    rows = _counter("clickstream_sink_rows_written", "_total") - rows0
    cpu, elapsed = time.process_time() - cpu0, time.monotonic() - t0
    producer.wait()
    await sink.stop()
    return {
        "rate": rate,
        "journey_floor_s": float(floor),
        "fetch_min_bytes": min_bytes,
        "table_settings": table_settings,
        "cpu_s_per_1k_rows": round(cpu * 1000 / rows, 4) if rows else None,
        "busy_cores": round(cpu / elapsed, 3),
        "inserts_per_s": round(inserts / elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    rate, seconds, floor, min_bytes = sys.argv[1:5]
    table_settings = sys.argv[5] if len(sys.argv) > 5 else ""
    result = asyncio.run(run(float(rate), float(seconds), floor, int(min_bytes), table_settings))
    print(json.dumps(result), flush=True)
    os._exit(0)  # the broker child dies with us (PR_SET_PDEATHSIG)


if __name__ == "__main__":
    main()
