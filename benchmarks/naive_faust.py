"""The naive baseline: the Faust agent one would write first, measured like our processor.

    .venv/bin/python -m benchmarks.naive_faust [--events 50000]       # the benchmark
    .venv/bin/python -m benchmarks.naive_faust worker                 # the worker alone (env below)

The agent decodes every event into a `faust.Record` model of the EventRecord, and
writes a small Record per visitor to a Table once per event, in a per-event
`async for`. Stock Faust settings, except what the embedded broker needs to start
quickly (session timeout 6 s, no leader topic) and the commit interval (1 s, as our
processor's, so the end of the backlog is seen as soon): no uvloop, no batching, no
tuning. It runs as its own worker process on a fresh embedded broker, over a
pre-loaded backlog of the same traffic-model events as the processor benchmark, and is
timed the same way (committed offsets of its group reaching the end).

Worker environment: KAFKA_BOOTSTRAP_SERVERS, NAIVE_PARTITIONS, NAIVE_WEB_PORT, NAIVE_DATA_DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import faust

from benchmarks.common import (
    EVENTS_TOPIC,
    Cluster,
    Peak,
    Result,
    all_partitions,
    describe,
    drain,
    load_now,
    model_events,
    per_1k,
    produce,
    use_uvloop,
)
from benchmarks.harness import Proc, free_port

APP_ID = "naive-baseline"
SESSION_GAP_MS = 30 * 60 * 1000


class Event(faust.Record, serializer="json"):
    """stream/records.py: EventRecord, as a Faust model."""

    message_id: str
    type: str
    event: str
    name: str
    visitor_id: str
    anonymous_id: str
    user_id: str
    previous_id: str
    ts: int
    received_at: int
    sent_at: int | None
    source: str
    url: str
    path: str
    referrer: str
    title: str
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]
    ip: str
    user_agent: str
    browser: str
    os: str
    device_type: str
    is_bot: bool
    ref_source: str
    ref_medium: str
    search_engine: str
    utm_source: str
    utm_medium: str
    utm_campaign: str
    utm_term: str
    utm_content: str
    click_id: str


class Visitor(faust.Record, serializer="json"):
    events: int = 0
    sessions: int = 0
    last_ts: int = 0
    last_event: str = ""


def create_app(bootstrap: str, partitions: int, web_port: int, data_dir: str) -> faust.App:
    app = faust.App(
        APP_ID,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=partitions,
        topic_disable_leader=True,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        web_port=web_port,
        datadir=data_dir,
    )
    events = app.topic(EVENTS_TOPIC, value_type=Event)
    visitors = app.Table("visitors", default=Visitor, value_type=Visitor, partitions=partitions)

    @app.agent(events)
    async def track(stream):
        async for event in stream:
            seen = visitors[event.visitor_id]
            new_session = event.ts - seen.last_ts > SESSION_GAP_MS
            visitors[event.visitor_id] = Visitor(
                events=seen.events + 1,
                sessions=seen.sessions + int(new_session),
                last_ts=event.ts,
                last_event=event.event or event.type,
            )

    return app


def worker() -> None:
    app = create_app(
        os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        int(os.environ.get("NAIVE_PARTITIONS", "4")),
        int(os.environ.get("NAIVE_WEB_PORT", "6067")),
        os.environ.get("NAIVE_DATA_DIR", "/tmp/naive-faust"),
    )
    app.main()  # Faust's own command line: `worker -l warn`


async def run(n: int = 50_000, partitions: int = 4) -> Result:
    events = model_events(n)
    with Cluster(partitions) as cluster:
        broker = cluster.start_broker()
        ends = all_partitions(await produce(cluster.bootstrap, EVENTS_TOPIC, events), partitions)
        port = free_port()
        env = {
            **cluster.env,
            "NAIVE_PARTITIONS": str(partitions),
            "NAIVE_WEB_PORT": str(port),
            "NAIVE_DATA_DIR": str(cluster.dir / "naive"),
        }
        started = time.monotonic()
        log = open(cluster.dir / "naive.log", "wb")  # noqa: SIM115 - closed with the cluster dir
        popen = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.naive_faust", "worker", "-l", "warn"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc = Proc("naive", popen)
        cluster.procs["naive"] = proc
        cluster.wait(proc, f"http://127.0.0.1:{port}/", timeout=60)
        with Peak([proc]) as peak:
            result = await drain(
                cluster.bootstrap, APP_ID, EVENTS_TOPIC, ends, [proc], broker, started, timeout=900
            )
    return Result(
        "naive Faust agent",
        events_per_s=result.rate,
        cpu_s_per_1k=per_1k(result.cpu, result.events),
        broker_cpu_s_per_1k=per_1k(result.broker_cpu, result.events),
        peak_rss_mb=peak.peaks["naive"],
        events=result.events,
        seconds=result.seconds,
        extra={
            **describe(events),
            "partitions": partitions,
            "busy_cores": round(result.cpu / result.seconds, 2) if result.seconds else None,
            "others_busy_cores": round(result.others_busy, 2),
            "wall_from_process_start_s": round(result.wall_from_start, 2),
            "load_average_after": load_now(),
        },
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker()
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    use_uvloop()
    r = asyncio.run(run(args.events))
    print(
        f"naive Faust: {r.events_per_s:,.0f} events/s ({r.events:,} in {r.seconds:.1f} s), "
        f"{r.cpu_s_per_1k:.3f} CPU s per 1,000 events, peak RSS {r.peak_rss_mb:.0f} MB; {r.extra}"
    )


if __name__ == "__main__":
    main()
