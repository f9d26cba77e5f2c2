"""Sink throughput into chdb: rows/s from Kafka to ClickHouse, commits included.

    .venv/bin/python benchmarks/sink_throughput.py [--events 200000] [--batch-rows 10000]

Starts the embedded broker on a free port, produces N events (~800 B of JSON each,
keyed by visitor) to clickstream.events, then starts the sink on a fresh chdb
directory and times it from the group assignment until every partition's committed
offset reaches the end. Prints rows/s (wall) and rows per CPU second of the process
(less disturbed by other load on a shared machine). Target: >= 50,000 rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream import config, topics
from stream.broker import EmbeddedBroker, create_topics
from stream.sink.clickhouse import connect
from stream.sink.consumer import Sink, tune_gc
from stream.sink.migrate import apply

BASE_MS = 1_767_225_600_000  # 2026-01-01


def event(i: int, source: str = "bench") -> dict:
    visitor = f"v{i % 5000}"
    ts = BASE_MS + i * 37
    page = i % 300
    return {
        "message_id": f"m-{i:09d}",
        "type": "page" if i % 3 else "track",
        "event": "" if i % 3 else "Product Viewed",
        "name": "Product" if i % 3 else "",
        "visitor_id": visitor,
        "anonymous_id": visitor,
        "user_id": "",
        "previous_id": "",
        "ts": ts,
        "received_at": ts + 20,
        "sent_at": ts + 10,
        "source": source,
        "url": f"https://shop.example.com/p/{page}",
        "path": f"/p/{page}",
        "referrer": "https://www.google.com/",
        "title": "Product page",
        "properties": {"sku": f"sku-{page}", "price": 19.99, "currency": "EUR"},
        "traits": {},
        "context": {"locale": "en-US", "page": {"path": f"/p/{page}"}},
        "ip": "203.0.113.0",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
        "browser": "Chrome",
        "os": "Linux",
        "device_type": "desktop",
        "is_bot": False,
        "ref_source": "google",
        "ref_medium": "search",
        "search_engine": "google",
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "spring",
        "utm_term": "",
        "utm_content": "",
        "click_id": "",
    }


def cpu_seconds() -> float:
    """CPU time of this process, all threads (chdb's included): a figure that other load
    on the machine disturbs less than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def produce(settings: config.Settings, n: int) -> dict[TopicPartition, int]:
    """Produce n events; return each partition's end offset."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    ends: dict[TopicPartition, int] = {}
    try:
        topic = settings.topic(topics.EVENTS)
        for start in range(0, n, 10_000):
            futures = [
                await producer.send(topic, orjson.dumps(e), key=e["visitor_id"].encode())
                for e in (event(i) for i in range(start, min(n, start + 10_000)))
            ]
            for meta in await asyncio.gather(*futures):
                tp = TopicPartition(meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends


async def main(n: int, batch_rows: int) -> float:
    port = free_port()
    broker = EmbeddedBroker(port)
    broker.start()
    data = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    settings = config.load(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "CLICKSTREAM_DATA_DIR": str(data),
            "CLICKSTREAM_DATABASE": "bench",
            "CLICKSTREAM_SINK_BATCH_ROWS": str(batch_rows),
        }
    )
    try:
        await create_topics(settings)
        started = time.perf_counter()
        ends = await produce(settings, n)
        print(f"produced {n:,} events in {time.perf_counter() - started:.1f} s")
        client = connect(settings)
        apply(client, settings)
        tune_gc()
        sink = Sink(settings, client, session_timeout_ms=2000)
        await sink.start()
        assert sink.consumer is not None
        while not sink.consumer.assignment():
            await asyncio.sleep(0.01)
        started, cpu_started = time.perf_counter(), cpu_seconds()
        while any(sink.batches.committed.get(tp, 0) < end for tp, end in ends.items()):
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        await sink.stop()
        rows = client.query("SELECT count() FROM bench.events FINAL").result_rows[0][0]
        rate = n / elapsed
        print(
            f"sink: {rows:,} rows in {elapsed:.2f} s = {rate:,.0f} rows/s (batch {batch_rows:,}); "
            f"{cpu:.2f} CPU s in this process = {n / cpu:,.0f} rows per CPU second; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        return rate
    finally:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop")
    args = parser.parse_args()
    if not args.no_uvloop:  # as the storage process runs (stream/roles.py)
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main(args.events, args.batch_rows))
