"""Collector benchmark: accepted events/s and request latency for batches of 20 events,
one collector process on loopback, the embedded broker, acks=all.

    .venv/bin/python -m benchmarks.collector --seconds 10 --concurrency 16

The default load generator (`--client raw`) posts pre-encoded HTTP/1.1 requests over
keep-alive connections from a bare asyncio protocol, so it costs the shared CPUs little;
`--client aiohttp` is the older, heavier aiohttp client. Both count only 200 answers,
by the `accepted` number of their JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import orjson

from benchmarks.harness import (
    Proc,
    free_port,
    percentile,
    processes,
    record_profile,
    spawn,
    wait_http,
)
from benchmarks.rawhttp import request_head, split_answer

BATCH = 20
WRITE_KEY = "dev-write-key"
AUTH = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


@dataclass
class Tally:
    accepted: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


def iso_ms(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def make_bodies(n: int) -> list[bytes]:
    """`n` batches of 20 track calls: 20,000 visitors, 500 product pages, one browser.
    Each event has its own timestamp (ms apart), as a real client's would."""
    started = int(time.time() * 1000) - 60_000
    now = iso_ms(started + 60_000)
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
                    "timestamp": iso_ms(started + k),
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


def make_requests(host: str, port: int, path: str, bodies: list[bytes]) -> list[bytes]:
    """Complete HTTP/1.1 POST requests, headers and body, ready to write as they are."""
    head = request_head(host, port, path, WRITE_KEY, "clickstream-bench")
    return [head + b"Content-Length: %d\r\n\r\n" % len(body) + body for body in bodies]


class KeepAlive(asyncio.Protocol):
    """One connection posting requests back to back until the deadline; one in flight."""

    def __init__(
        self, requests: list[bytes], start: int, step: int, deadline: float, tally: Tally
    ) -> None:
        self.requests, self.next, self.step = requests, start, step
        self.deadline, self.tally = deadline, tally
        self.buffer = b""
        self.sent_at = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._post()

    def _post(self) -> None:
        if time.monotonic() >= self.deadline:
            self.transport.close()
            return
        request = self.requests[self.next % len(self.requests)]
        self.next += self.step
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            answer = split_answer(self.buffer)
        except RuntimeError as exc:  # the load must not quietly drop
            self.done.set_exception(exc)
            self.transport.close()
            return
        if answer is None:
            return
        status, body, self.buffer = answer
        self.tally.latencies.append(time.perf_counter() - self.sent_at)
        if status == 200:
            self.tally.accepted += orjson.loads(body)["accepted"]
        else:
            self.tally.errors += 1
        self._post()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is not None or time.monotonic() < self.deadline:  # the load must not quietly drop
            self.done.set_exception(exc or RuntimeError("the collector closed a connection"))
        else:
            self.done.set_result(None)


async def load_raw(
    host: str, port: int, requests: list[bytes], seconds: float, concurrency: int
) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    loop = asyncio.get_running_loop()
    connections = [
        (
            await loop.create_connection(
                lambda i=i: KeepAlive(requests, i, concurrency, deadline, tally), host, port
            )
        )[1]
        for i in range(concurrency)
    ]
    await asyncio.gather(*(c.done for c in connections))
    return tally


async def load_aiohttp(url: str, bodies: list[bytes], seconds: float, concurrency: int) -> Tally:
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}
    tally = Tally()
    deadline = time.monotonic() + seconds
    counter = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal counter
        while time.monotonic() < deadline:
            body = bodies[counter % len(bodies)]
            counter += 1
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
            tally.latencies.append(time.perf_counter() - started)
            if response.status == 200:
                tally.accepted += orjson.loads(answer)["accepted"]
            else:
                tally.errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return tally


def run_load(
    client: str, port: int, bodies: list[bytes], seconds: float, concurrency: int
) -> Tally:
    if client == "raw":
        requests = make_requests("127.0.0.1", port, "/v1/batch", bodies)
        return asyncio.run(load_raw("127.0.0.1", port, requests, seconds, concurrency))
    return asyncio.run(
        load_aiohttp(f"http://127.0.0.1:{port}/v1/batch", bodies, seconds, concurrency)
    )


@dataclass
class Run:
    """One measured run: what the load generator saw and what each process spent."""

    tally: Tally
    elapsed: float
    collector_cpu: float
    broker_cpu: float
    generator_cpu: float
    rss_mb: float

    @property
    def rate(self) -> float:
        return self.tally.accepted / self.elapsed

    def per_k(self, seconds: float) -> float:
        return seconds * 1000 / max(self.tally.accepted, 1)

    def report(self, concurrency: int, client: str) -> str:
        t = self.tally
        return (
            f"collector: {self.rate:,.0f} events/s accepted ({t.accepted:,} in {self.elapsed:.1f}s, {t.errors} errors), "
            f"batches of {BATCH}, concurrency {concurrency}, client {client}\n"
            f"latency p50 {percentile(t.latencies, 50) * 1000:.1f} ms, p99 {percentile(t.latencies, 99) * 1000:.1f} ms; "
            f"collector CPU {self.per_k(self.collector_cpu):.3f} s per 1,000 events; RSS {self.rss_mb:.0f} MB\n"
            f"collector busy {self.collector_cpu / self.elapsed:.0%} of one core; other CPU per 1,000 events: "
            f"broker {self.per_k(self.broker_cpu):.3f} s, load generator {self.per_k(self.generator_cpu):.3f} s; "
            f"load average {os.getloadavg()[0]:.1f}"
        )


def measure(collector: Proc, broker: Proc, load: Callable[[], Tally]) -> Run:
    cpu0, broker0, own0 = collector.cpu_seconds(), broker.cpu_seconds(), time.process_time()
    started = time.monotonic()
    tally = load()
    elapsed = time.monotonic() - started
    return Run(
        tally,
        elapsed,
        collector.cpu_seconds() - cpu0,
        broker.cpu_seconds() - broker0,
        time.process_time() - own0,
        collector.rss_mb(),
    )


def bench_env(broker_port: int) -> dict[str, str]:
    """The environment of the benchmark's processes: its own embedded broker, quiet logs."""
    env = {
        **os.environ,
        "CLICKSTREAM_BROKER_PORT": str(broker_port),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
        "CLICKSTREAM_LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument(
        "--runs", type=int, default=1, help="measured runs against the same processes"
    )
    parser.add_argument(
        "--client", choices=("raw", "aiohttp"), default="raw", help="load generator"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy the collector during the first run into FILE (.json: speedscope)",
    )
    args = parser.parse_args()

    with contextlib.suppress(
        ImportError
    ):  # the load generator's own CPU matters: the cores are shared
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    broker_port, http_port = free_port(), free_port()
    env = {**bench_env(broker_port), "CLICKSTREAM_HTTP_PORT": str(http_port)}
    bodies = make_bodies(2000)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as logs, processes() as procs:
        broker = spawn("broker", ["broker"], {**env, "KAFKA_BOOTSTRAP_SERVERS": ""}, logs)
        procs.append(broker)
        time.sleep(1.0)
        collector = spawn("collector", ["role", "collector"], env, logs)
        procs.append(collector)
        wait_http(f"http://127.0.0.1:{http_port}/healthz")
        run_load(args.client, http_port, bodies, args.warmup, args.concurrency)
        profiler = (
            record_profile(collector.popen.pid, args.profile, args.seconds)
            if args.profile
            else None
        )
        for _ in range(args.runs):
            run = measure(
                collector,
                broker,
                lambda: run_load(args.client, http_port, bodies, args.seconds, args.concurrency),
            )
            print(run.report(args.concurrency, args.client), flush=True)
            runs.append(run)
        if profiler is not None:
            profiler.wait(30)
            profiler.stop()
    if len(runs) > 1:
        print(
            f"median of {len(runs)} runs: {statistics.median(r.rate for r in runs):,.0f} events/s, "
            f"p50 {statistics.median(percentile(r.tally.latencies, 50) for r in runs) * 1000:.1f} ms, "
            f"p99 {statistics.median(percentile(r.tally.latencies, 99) for r in runs) * 1000:.1f} ms, "
            f"collector CPU {statistics.median(r.per_k(r.collector_cpu) for r in runs):.3f} s per 1,000 events"
        )


if __name__ == "__main__":
    main()
