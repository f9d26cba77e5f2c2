"""Collector benchmark: accepted events/s and request latency for batches of 20 events,
one collector process on loopback, the embedded broker, acks=all.

    .venv/bin/python -m benchmarks.collector --seconds 20 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import tempfile
import time

import aiohttp
import orjson

from benchmarks.harness import free_port, percentile, processes, spawn, wait_http

BATCH = 20


def make_bodies(n: int) -> list[bytes]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"
    bodies = []
    for b in range(n):
        batch = []
        for i in range(BATCH):
            k = b * BATCH + i
            batch.append(
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "messageId": f"bench-{k}",
                    "anonymousId": f"visitor-{k % 20000}",
                    "timestamp": now,
                    "properties": {"product_id": f"p{k % 500}", "price": 19.99, "currency": "USD"},
                    "context": {
                        "userAgent": ua,
                        "ip": "203.0.113.7",
                        "page": {
                            "url": f"https://shop.example/p/{k % 500}?utm_source=news&utm_medium=email",
                            "path": f"/p/{k % 500}",
                            "referrer": "https://www.google.com/",
                            "title": "Product",
                        },
                    },
                }
            )
        bodies.append(orjson.dumps({"batch": batch, "sentAt": now}))
    return bodies


async def load(url: str, bodies: list[bytes], seconds: float, concurrency: int) -> tuple[int, int, list[float]]:
    auth = {"Authorization": "Basic " + base64.b64encode(b"dev-write-key:").decode(), "Content-Type": "application/json"}
    latencies: list[float] = []
    accepted = errors = 0
    deadline = time.monotonic() + seconds
    counter = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, errors, counter
        while time.monotonic() < deadline:
            body = bodies[counter % len(bodies)]
            counter += 1
            started = time.perf_counter()
            async with session.post(url, data=body, headers=auth) as response:
                answer = await response.read()
            latencies.append(time.perf_counter() - started)
            if response.status == 200:
                accepted += orjson.loads(answer)["accepted"]
            else:
                errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return accepted, errors, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=3)
    args = parser.parse_args()

    broker_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "CLICKSTREAM_BROKER_PORT": str(broker_port),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
        "CLICKSTREAM_HTTP_PORT": str(http_port),
        "CLICKSTREAM_LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    bodies = make_bodies(2000)
    with tempfile.TemporaryDirectory() as logs, processes() as procs:
        procs.append(spawn("broker", ["broker"], {**env, "KAFKA_BOOTSTRAP_SERVERS": ""}, logs))
        time.sleep(1.0)
        collector = spawn("collector", ["role", "collector"], env, logs)
        procs.append(collector)
        wait_http(f"http://127.0.0.1:{http_port}/healthz")
        url = f"http://127.0.0.1:{http_port}/v1/batch"
        asyncio.run(load(url, bodies, args.warmup, args.concurrency))
        cpu0 = collector.cpu_seconds()
        started = time.monotonic()
        accepted, errors, latencies = asyncio.run(load(url, bodies, args.seconds, args.concurrency))
        elapsed = time.monotonic() - started
        cpu = collector.cpu_seconds() - cpu0
        rss = collector.rss_mb()
    rate = accepted / elapsed
    print(f"collector: {rate:,.0f} events/s accepted ({accepted:,} in {elapsed:.1f}s, {errors} errors), "
          f"batches of {BATCH}, concurrency {args.concurrency}")
    print(f"latency p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms; "
          f"collector CPU {cpu / max(accepted, 1) * 1000:.3f} s per 1,000 events; RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
