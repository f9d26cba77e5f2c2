"""The floor under the collector's CPU: what the HTTP stack and the Kafka producer cost for
the collector benchmark's traffic when our own per-event work is taken out.

    .venv/bin/python -m benchmarks.collector_floor --seconds 15

Same load as benchmarks/collector.py (its raw load generator, batches of 20, 32
keep-alive connections) against four servers (a fifth on request), each on uvloop and
aiohttp configured as the collector's (`stream.collector.server.serve`: no access log, no
auto-decompress):

- `http`: reads the body and answers the collector's JSON answer. No parsing.
- `http+json`: also parses the body with orjson and counts the calls.
- `http+json+kafka`: also publishes every call as its own record through the collector's
  own `Publisher` (same rounds, same batches, acks=all), keyed by its anonymousId. No
  validation, normalisation, enrichment or metrics.
- `http+json+aiokafka.send`: the same records through aiokafka's own `send` (one future
  per record, 5 ms linger, acks=all) instead of our `Publisher`: the stock way, for
  comparison.
- `http+json+librdkafka` (only with `--levels`; confluent-kafka is not a dependency:
  `pip install --target /tmp/ck confluent-kafka`, then `PYTHONPATH=/tmp/ck`): the same
  records through librdkafka (5 ms linger, acks=all, its poll loop in a thread, one
  delivery callback per record), to see whether a C client would lower the floor.

It prints each server's CPU per 1,000 events next to the real collector's, so the share
of the collector that is the stack and the share that is ours are measured, not guessed
from a profile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import orjson

from benchmarks.collector import BATCH, Run, bench_env, make_bodies, measure, run_load
from benchmarks.harness import Proc, free_port, processes, spawn, wait_http

LEVELS = ("http", "http+json", "http+json+kafka", "http+json+aiokafka.send")
EXTRA = ("http+json+librdkafka",)


Publish = Callable[[list[dict]], Awaitable[None]]


async def _publisher(level: str) -> Publish | None:
    """How the level sends a request's calls to Kafka, acknowledged; None: it does not."""
    from stream import config, topics
    from stream.collector.publish import Publisher

    settings = config.load(dict(os.environ))
    events_topic = settings.topic(topics.EVENTS)
    if level == "http+json+kafka":
        publisher = Publisher(settings)
        await publisher.start()

        async def ours(calls: list[dict]) -> None:
            now = int(time.time() * 1000)
            for call in calls:
                call["visitor_id"], call["ts"] = call["anonymousId"], now
            await publisher.publish(calls, [])

        return ours
    if level == "http+json+aiokafka.send":
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_batch_size=1024 * 1024,
        )
        await producer.start()

        async def stock(calls: list[dict]) -> None:
            sent = [
                await producer.send(events_topic, orjson.dumps(c), key=c["anonymousId"].encode())
                for c in calls
            ]
            await asyncio.gather(*sent)

        return stock
    if level == "http+json+librdkafka":
        import threading

        import confluent_kafka

        loop = asyncio.get_running_loop()
        rdk = confluent_kafka.Producer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "acks": "all",
                "linger.ms": 5,
                "enable.idempotence": False,
                "batch.size": 1024 * 1024,
            }
        )

        def poll() -> None:
            while True:
                rdk.poll(0.1)

        threading.Thread(target=poll, daemon=True).start()

        async def librdkafka(calls: list[dict]) -> None:
            done = loop.create_future()
            left = [len(calls)]

            def delivered(err, msg) -> None:  # in the poll thread
                left[0] -= 1
                if left[0] == 0:
                    loop.call_soon_threadsafe(done.set_result, err)

            for c in calls:
                rdk.produce(
                    events_topic, orjson.dumps(c), c["anonymousId"].encode(), on_delivery=delivered
                )
            await done

        return librdkafka
    return None


async def _serve(level: str, port: int) -> None:
    from aiohttp import web

    publish = await _publisher(level)

    async def batch(request: web.Request) -> web.Response:
        raw = await request.read()
        accepted = BATCH
        if level != "http":
            calls = orjson.loads(raw)["batch"]
            accepted = len(calls)
            if publish is not None:
                await publish(calls)
        answer = {"success": True, "accepted": accepted, "rejected": 0}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=512 * 1024)
    app.router.add_post("/v1/batch", batch)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    await asyncio.Event().wait()


def report_line(level: str, run: Run) -> str:
    """One server's figures; `make bench` parses them (benchmarks/__main__.py FLOOR_LINE)."""
    return (
        f"{level:>23}: {run.rate:>7,.0f} events/s, CPU {run.per_k(run.collector_cpu):.4f} s "
        f"per 1,000 events ({run.collector_cpu / run.elapsed:.0%} of a core), broker "
        f"{run.per_k(run.broker_cpu):.4f}, errors {run.tally.errors}"
    )


def _spawn_floor(level: str, port: int, env: dict[str, str]) -> Proc:
    popen = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.collector_floor", "--serve", level, "--port", f"{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    return Proc(level, popen)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument(
        "--no-collector", action="store_true", help="the floors only, not the real collector"
    )
    parser.add_argument("--serve", choices=LEVELS + EXTRA, help=argparse.SUPPRESS)
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    with contextlib.suppress(ImportError):  # as the collector and the load generator run
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.serve:
        asyncio.run(_serve(args.serve, args.port))
        return

    broker_port = free_port()
    env = bench_env(broker_port)
    bodies = make_bodies(2000)
    with tempfile.TemporaryDirectory() as logs, processes() as procs:
        broker = spawn("broker", ["broker"], {**env, "KAFKA_BOOTSTRAP_SERVERS": ""}, logs)
        procs.append(broker)
        time.sleep(1.0)
        servers: list[tuple[str, Proc, int]] = []
        levels = args.levels.split(",")
        for level in levels if args.no_collector else (*levels, "collector"):
            port = free_port()
            if level == "collector":
                server_env = {**env, "CLICKSTREAM_HTTP_PORT": str(port)}
                server = spawn("collector", ["role", "collector"], server_env, logs)
            else:
                server = _spawn_floor(level, port, env)
            procs.append(server)
            wait_http(f"http://127.0.0.1:{port}/healthz")
            servers.append((level, server, port))
        for level, server, port in servers:
            run_load("raw", port, bodies, args.warmup, args.concurrency)
            run = measure(
                server,
                broker,
                lambda port=port: run_load("raw", port, bodies, args.seconds, args.concurrency),
            )
            print(report_line(level, run), flush=True)


if __name__ == "__main__":
    main()
