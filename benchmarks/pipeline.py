"""The full pipeline under a steady HTTP load: sustained events/s and end-to-end latency.

    .venv/bin/python -m benchmarks.pipeline [--rate 5000] [--seconds 30]

`clickstream broker`, `worker --roles sink,api`, `worker --roles processor` and
`worker --roles collector`, each its own process (so each one's CPU and RSS can be
read), product defaults otherwise. This process offers live traffic from the traffic
model (timestamps restamped to now, as `clickstream simulate` does) in batches of 20,
as `clickstream simulate`'s HTTP sender posts them but over bare keep-alive connections
(benchmarks/rawhttp.py: aiohttp's client was ~40 % of the load generator's CPU, taken
from the two cores the pipeline runs on), at a steady rate, after a few seconds of
warm-up at the same rate. The calls for the warm-up and the measured window are
generated before the warm-up (the same calls in the same order as generating them on
the way; it kept ~45 µs per event of traffic-model work out of the load
generator's measured CPU).

Latency, for events sent in the measured window, from the moment the HTTP answer
came back (the collector answers after Kafka has the events, acks=all):
- HTTP -> ClickHouse: a sample of 1 in 50 message ids is looked up through the query
  API every 50 ms until seen; the first-seen time counts. Also, for every row, the
  sink's insert time minus the collector's receive time (`_inserted_at - received_at`).
- HTTP -> stage change: an aiokafka consumer reads journey.stage-changes as the
  processor produces them; a record counts against the accept time of its `event_id`
  (the message id of the event that moved the stage). The record's CreateTime (when the
  processor sent it) gives the same figure without the last hop.

Sustained means: at least 99 % of the offered events accepted, and the processor's lag
(events accepted by the collector minus events committed by `clickstream-processor`,
read every second) at the end of the load no more than 2 s of traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
from collections import deque
from itertools import islice

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from benchmarks.common import (
    EVENTS_TOPIC,
    PROCESSOR_GROUP,
    SINK_GROUP,
    WRITE_KEY,
    Cluster,
    Committed,
    Peak,
    Result,
    highwaters,
    load_now,
    machine_busy,
    per_1k,
    sql,
    use_uvloop,
)
from benchmarks.harness import percentile
from benchmarks.rawhttp import RawSender
from stream import topics

BATCH = 20
CONCURRENCY = 64
SAMPLE_EVERY = 50
POLL_S = 0.05


class Load:
    """Paced batches through HttpSender; accept times of every message id."""

    def __init__(self, url: str, rate: float) -> None:
        from stream.simulate import Mix, generate
        from stream.simulate.driver import LIVE_SESSION_INTERVAL_S

        self.rate = rate
        self.calls = generate(
            11, 20_000, mix=Mix(session_interval_s=LIVE_SESSION_INTERVAL_S), endless=True
        )
        self.sender = RawSender(url, WRITE_KEY, CONCURRENCY)
        self.ready: deque[list[dict]] = deque()  # batches generated ahead (prepare)
        self.accepted_at: dict[str, float] = {}  # message id -> wall time of the HTTP answer
        self.sampled: list[str] = []
        self.accepted = self.rejected = self.failed = self.sent = 0
        self.all_accepted = 0  # warm-up included: what the events topic holds
        self.request_s: list[float] = []
        self.recording = False

    def batches(self, seconds: float) -> int:
        """How many batches `run(seconds)` sends."""
        return math.ceil(seconds * self.rate / BATCH)

    def prepare(self, batches: int) -> None:
        """Generate the next `batches` batches now, for run() to send as they are."""
        self.ready.extend(list(islice(self.calls, BATCH)) for _ in range(batches))

    async def run(self, seconds: float) -> float:
        """Offer `rate` events/s for `seconds`; returns the seconds it took (answers included)."""
        from stream.simulate.session import iso

        slots = asyncio.Semaphore(CONCURRENCY)
        tasks: set[asyncio.Task] = set()
        started = time.monotonic()
        step = BATCH / self.rate
        i = 0
        while i * step < seconds:
            wait = started + i * step - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            calls = self.ready.popleft() if self.ready else list(islice(self.calls, BATCH))
            stamp = iso(time.time_ns() // 1_000_000)
            for call in calls:
                call["timestamp"] = stamp
            await slots.acquire()  # every connection busy: the offered rate slips
            task = asyncio.create_task(self._post(calls, slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)
        return time.monotonic() - started

    async def _post(self, calls: list[dict], slots: asyncio.Semaphore) -> None:
        try:
            sent = time.perf_counter()
            answer = await self.sender.send(calls)
            now = time.time()
            self.all_accepted += answer.accepted
            if not self.recording:
                return
            self.request_s.append(time.perf_counter() - sent)
            self.sent += len(calls)
            self.accepted += answer.accepted
            self.rejected += answer.rejected
            if answer.error:
                self.failed += 1
                return
            for call in calls:
                mid = call["messageId"]
                self.accepted_at[mid] = now
                if len(self.accepted_at) % SAMPLE_EVERY == 0:
                    self.sampled.append(mid)
        except Exception:  # noqa: BLE001 - a failed request is counted, the load goes on
            self.failed += 1
        finally:
            slots.release()


class StageChanges:
    """Arrival wall time of each stage change's event id, read as the processor produces."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        self.tps = [TopicPartition(topics.STAGE_CHANGES, p) for p in range(partitions)]
        self.arrived: dict[str, float] = {}
        self.created: dict[str, float] = {}  # the record's CreateTime: when the processor sent it
        self.records = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    self.records += 1
                    event_id = orjson.loads(record.value).get("event_id", "")
                    self.arrived.setdefault(event_id, now)
                    self.created.setdefault(event_id, record.timestamp / 1000)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()


class Visibility:
    """First time each sampled message id is seen in ClickHouse, polled every 50 ms."""

    def __init__(self, api: str, load: Load) -> None:
        self.api, self.load = api, load
        self.seen: dict[str, float] = {}
        self.polls = 0
        self.poll_s: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def pending(self) -> list[str]:
        return [m for m in self.load.sampled if m not in self.seen]

    async def _run(self) -> None:
        while not self._stop.is_set():
            pending = self.pending()
            if pending:
                ids = ",".join("'" + m.replace("'", "") + "'" for m in pending)
                started = time.perf_counter()
                # One row whatever is found: an empty result makes the API ask the engine
                # again for its column names (DESCRIBE), a second query per poll.
                rows = await asyncio.to_thread(
                    sql,
                    self.api,
                    "SELECT groupArray(message_id) FROM clickstream.events"
                    f" WHERE message_id IN ({ids})",
                )
                now = time.time()
                self.poll_s.append(time.perf_counter() - started)
                self.polls += 1
                for mid in rows[0][0]:
                    self.seen.setdefault(mid, now)
            await asyncio.sleep(POLL_S)

    async def stop(self) -> None:
        self._stop.set()
        if self._task:
            await self._task


class Lag:
    """Every second: events accepted by the collector minus events committed by a group."""

    def __init__(self, cluster: Cluster, load: Load) -> None:
        self.cluster, self.load = cluster, load
        self.samples: dict[str, list[int]] = {PROCESSOR_GROUP: [], SINK_GROUP: []}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        groups = [
            Committed(self.cluster.bootstrap, group, EVENTS_TOPIC, self.cluster.partitions)
            for group in self.samples
        ]
        for committed in groups:
            await committed.__aenter__()
        try:
            while True:
                accepted = self.load.all_accepted
                for group, committed in zip(self.samples, groups, strict=True):
                    done = sum((await committed.read()).values())
                    self.samples[group].append(max(0, accepted - done))
                await asyncio.sleep(1.0)
        finally:
            for committed in groups:
                await committed.__aexit__(None, None, None)

    async def stop(self) -> dict:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return {
            group.removeprefix("clickstream-"): {
                "max": max(values, default=0),
                "at_end": values[-1] if values else None,
                "every_s": values,
            }
            for group, values in self.samples.items()
        }


async def caught_up(cluster: Cluster, group: str, timeout: float) -> float:
    """Seconds until `group` has committed the events topic's high watermark."""
    started = time.monotonic()
    async with Committed(cluster.bootstrap, group, EVENTS_TOPIC, cluster.partitions) as committed:
        while time.monotonic() - started < timeout:
            ends = await highwaters(cluster.bootstrap, EVENTS_TOPIC, cluster.partitions)
            if all(v >= ends[p] for p, v in (await committed.read()).items()):
                return time.monotonic() - started
            await asyncio.sleep(0.1)
    return float("nan")


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p99_ms": round(percentile(values, 99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


async def run(
    rate: float = 5000, seconds: float = 30, warmup: float = 5, partitions: int = 4
) -> Result:
    with Cluster(partitions) as cluster:
        broker = cluster.start_broker()
        storage = cluster.start_storage()
        processor = cluster.start_processor()
        collector = cluster.start_collector()
        components = {
            "collector": collector,
            "processor": processor,
            "storage": storage,
            "broker": broker,
        }
        load = Load(cluster.collector, rate)
        load.prepare(load.batches(warmup) + load.batches(seconds))
        await load.sender.start()
        changes = StageChanges(cluster.bootstrap, partitions)
        await changes.start()
        try:
            await load.run(warmup)  # not recorded
            visibility = Visibility(cluster.api, load)
            visibility.start()
            with Peak(components.values()) as peak:
                cpu0 = {name: p.cpu_seconds() for name, p in components.items()}
                own0, machine0 = time.process_time(), machine_busy()
                load.recording = True
                lag = Lag(cluster, load)
                lag.start()
                elapsed = await load.run(seconds)
                lags = await lag.stop()
                load.recording = False
                cpu = {name: p.cpu_seconds() - cpu0[name] for name, p in components.items()}
                own = time.process_time() - own0
                machine = machine_busy() - machine0
                processor_drain = await caught_up(cluster, PROCESSOR_GROUP, 120)
                sink_drain = await caught_up(cluster, SINK_GROUP, 120)
                deadline = time.monotonic() + 30
                while visibility.pending() and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)  # the last stage changes on their way to us
            await visibility.stop()
            insert_lag = sql(
                cluster.api,
                "SELECT quantiles(0.5, 0.99)(toUnixTimestamp64Milli(_inserted_at) - toUnixTimestamp64Milli(received_at)),"
                " max(toUnixTimestamp64Milli(_inserted_at) - toUnixTimestamp64Milli(received_at)), count()"
                " FROM clickstream.events",
            )[0]
        finally:
            await changes.stop()
            await load.sender.stop()
    accept = load.accepted_at
    to_clickhouse = [visibility.seen[m] - accept[m] for m in load.sampled if m in visibility.seen]
    to_stage = [t - accept[e] for e, t in changes.arrived.items() if e in accept]
    to_stage_sent = [t - accept[e] for e, t in changes.created.items() if e in accept]
    events = load.accepted
    out = Result(
        f"full pipeline @ {rate:,.0f}/s offered",
        events_per_s=events / elapsed,
        cpu_s_per_1k=per_1k(sum(v for k, v in cpu.items() if k != "broker"), events),
        broker_cpu_s_per_1k=per_1k(cpu["broker"], events),
        peak_rss_mb=sum(v for k, v in peak.peaks.items() if k != "broker"),
        events=events,
        seconds=elapsed,
    )
    inserted = {
        "p50_ms": insert_lag[0][0],
        "p99_ms": insert_lag[0][1],
        "max_ms": insert_lag[1],
        "rows": insert_lag[2],
    }
    out.extra = {
        "offered_rate": rate,
        "seconds": seconds,
        "warmup_s": warmup,
        "sent": load.sent,
        "accepted": load.accepted,
        "rejected": load.rejected,
        "failed_requests": load.failed,
        "http_request": stats(load.request_s),
        "http_to_clickhouse": stats(to_clickhouse),
        "sampled": len(load.sampled),
        "never_seen_in_clickhouse": len(load.sampled) - len(to_clickhouse),
        "received_to_inserted_all_rows": inserted,
        "http_to_stage_change": stats(to_stage),
        "http_to_stage_change_sent_by_processor": stats(to_stage_sent),
        "stage_changes_read": changes.records,
        "stage_changes_before_answer": sum(1 for v in to_stage if v < 0),
        "clickhouse_polls": visibility.polls,
        "clickhouse_poll": stats(visibility.poll_s),
        "lag_events": lags,
        "processor_lag_at_end_s_of_traffic": round((lags["processor"]["at_end"] or 0) / rate, 2),
        "processor_caught_up_s_after_load": round(processor_drain, 2),
        "sink_caught_up_s_after_load": round(sink_drain, 2),
        "cpu_s_per_1k_by_process": {k: round(per_1k(v, events), 4) for k, v in cpu.items()},
        "busy_cores_by_process": {k: round(v / elapsed, 2) for k, v in cpu.items()},
        "load_generator_cpu_s_per_1k": round(per_1k(own, events), 4),
        "others_busy_cores": round(max(0.0, machine - sum(cpu.values()) - own) / elapsed, 2),
        "peak_rss_mb_by_process": {k: round(v) for k, v in peak.peaks.items()},
        "load_average_after": load_now(),
    }
    out.notes.append("CPU and RSS: collector + processor + sink/api processes (broker apart)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    args = parser.parse_args()
    use_uvloop()
    r = asyncio.run(run(args.rate, args.seconds, args.warmup))
    print(
        f"{r.name}: {r.events_per_s:,.0f} events/s accepted over {r.seconds:.1f} s, "
        f"{r.cpu_s_per_1k:.3f} CPU s per 1,000 events, peak RSS {r.peak_rss_mb:.0f} MB"
    )
    for key, value in r.extra.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
