"""Shared pieces of the benchmark suite: the events, a cluster of separately started
processes, Kafka progress readings, and the shape of a result.

Every benchmark starts what it measures as its own processes (`clickstream broker`,
`clickstream worker --roles ...`) on free ports in a temporary directory, so psutil can
read each one's CPU and RSS, and stops them when it ends. The events come from the
traffic model (`stream.simulate.generate`) turned into EventRecords by the collector's
own `to_record` and `Enricher`, exactly as the collector would publish them.

The end of a topic is read from fetch responses (`consumer.highwater`) or from the
producer's acknowledgements, never from ListOffsets, which on the embedded broker is
one record batch short (see /work/shared/notes/faust-on-tansu.md).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from benchmarks.harness import Proc, free_port, spawn, wait_http
from stream import topics

EVENTS_TOPIC = topics.EVENTS
PROCESSOR_GROUP = topics.PROCESSOR_APP_ID
SINK_GROUP = topics.SINK_GROUP
WRITE_KEY = "dev-write-key"
SEED = 7
# Historic traffic starts this far back: far enough that the idle-partition tick closes
# every session, near enough that no purchaser lapses (90 days).
PAST_MS = 30 * 86_400_000
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --- results ---------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the table. `None` means "not measured here" (printed as a dash)."""

    name: str
    events_per_s: float | None = None
    cpu_s_per_1k: float | None = None  # the measured component's processes
    broker_cpu_s_per_1k: float | None = None
    peak_rss_mb: float | None = None
    events: int = 0
    seconds: float = 0.0
    unit: str = "events/s"
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
    }


def use_uvloop() -> None:
    """The load generators and readers of the suite run on uvloop: they share the cores."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


# --- events ----------------------------------------------------------------------------

_cache: dict[tuple[int, int, int], list[tuple[bytes, bytes]]] = {}


def model_calls(
    seed: int = SEED, visitors: int = 0, base_time_ms: int | None = None, mix=None
) -> Iterator[dict]:
    """Endless Segment calls from the traffic model; `visitors` bounds who may return."""
    from stream.simulate import generate

    base = int(time.time() * 1000) - PAST_MS if base_time_ms is None else base_time_ms
    return generate(seed, visitors or 50_000, base_time_ms=base, endless=True, mix=mix)


def to_event(call: dict, enricher, source: str = "bench") -> dict:
    """The EventRecord the collector would publish for `call`, received 30 ms after it happened."""
    from stream.collector.clock import parse_iso_ms
    from stream.collector.normalize import to_record

    ts = parse_iso_ms(call.get("timestamp") or "") or int(time.time() * 1000)
    context = call.get("context") or {}
    return to_record(
        call,
        source=source,
        received_at_ms=ts + 30,
        ip=context.get("ip") or "203.0.113.7",
        header_user_agent=context.get("userAgent") or "",
        enricher=enricher,
    )


def stream_events(
    seed: int = SEED, visitors: int = 0, base_time_ms: int | None = None, mix=None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of EventRecords from the traffic model, endless, historic (see PAST_MS)."""
    from stream.enrich import Enricher

    enricher = Enricher()
    for call in model_calls(seed, visitors, base_time_ms, mix):
        event = to_event(call, enricher)
        yield event["visitor_id"].encode(), orjson.dumps(event)


def model_events(n: int, seed: int = SEED, visitors: int = 0) -> list[tuple[bytes, bytes]]:
    """The first `n` events of `stream_events`, cached for the run (every benchmark uses the same)."""
    key = (n, seed, visitors)
    if key not in _cache:
        _cache[key] = list(islice(stream_events(seed, visitors), n))
    return _cache[key]


def describe(events: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "events": len(events),
        "visitors": len({k for k, _ in events}),
        "avg_event_bytes": round(sum(len(v) for _, v in events) / max(1, len(events))),
    }


# --- processes -------------------------------------------------------------------------


class Cluster:
    """`clickstream broker` plus workers, each its own process, on free ports."""

    def __init__(self, partitions: int = 4, **env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clickstream-bench-"))
        (self.dir / "data").mkdir()
        broker_port = free_port()
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("CLICKHOUSE_DSN", "PROMETHEUS_MULTIPROC_DIR", "KAFKA_BOOTSTRAP_SERVERS")
        }
        self.env = {
            **base,
            "CLICKSTREAM_DATA_DIR": str(self.dir / "data"),
            "CLICKSTREAM_BROKER_PORT": str(broker_port),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
            "CLICKSTREAM_HTTP_PORT": str(free_port()),
            "CLICKSTREAM_API_PORT": str(free_port()),
            "CLICKSTREAM_PROCESSOR_PORT": str(free_port()),
            "CLICKSTREAM_PARTITIONS": str(partitions),
            "CLICKSTREAM_WRITE_KEYS": f"{WRITE_KEY}:bench",
            "CLICKSTREAM_LOG_LEVEL": "WARNING",
            # As `clickstream run` on the embedded broker; a worker given KAFKA_BOOTSTRAP_SERVERS
            # would default to RocksDB. Set CLICKSTREAM_STATE_STORE to measure the other.
            "CLICKSTREAM_STATE_STORE": os.environ.get("CLICKSTREAM_STATE_STORE", "memory"),
            **env,
        }
        self.partitions = partitions
        self.procs: dict[str, Proc] = {}
        self.health: dict[str, str] = {}

    @property
    def bootstrap(self) -> str:
        return self.env["KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['CLICKSTREAM_API_PORT']}"

    @property
    def collector(self) -> str:
        return f"http://127.0.0.1:{self.env['CLICKSTREAM_HTTP_PORT']}"

    def spawn(self, name: str, args: list[str], **env: str) -> Proc:
        proc = spawn(name, args, {**self.env, **env}, str(self.dir))
        self.procs[name] = proc
        return proc

    def start_broker(self) -> Proc:
        proc = self.spawn("broker", ["broker"], KAFKA_BOOTSTRAP_SERVERS="")
        log = self.dir / "broker.log"
        deadline = time.monotonic() + 30
        while b"broker ready" not in log.read_bytes():
            if time.monotonic() > deadline or proc.popen.poll() is not None:
                raise RuntimeError(f"broker did not start:\n{self.logs()}")
            time.sleep(0.05)
        return proc

    def start_storage(self, name: str = "storage") -> Proc:
        proc = self.spawn(name, ["worker", "--roles", "sink,api"])
        self.wait(proc, f"{self.api}/healthz")
        return proc

    def start_processor(self, name: str = "processor", wait: bool = True) -> Proc:
        port = free_port()
        proc = self.spawn(
            name, ["worker", "--roles", "processor"], CLICKSTREAM_PROCESSOR_PORT=str(port)
        )
        self.health[name] = f"http://127.0.0.1:{port}/healthz"
        if wait:
            self.wait(proc, self.health[name])
        return proc

    def start_collector(self) -> Proc:
        proc = self.spawn("collector", ["worker", "--roles", "collector"])
        self.wait(proc, f"{self.collector}/healthz")
        return proc

    def wait(self, proc: Proc, url: str, timeout: float = 90.0) -> None:
        """Until `url` answers 200; fails at once when the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                wait_http(url, 0.5)
                return
            except RuntimeError:
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{proc.name} not healthy at {url}:\n{self.logs()}"
                    ) from None

    def logs(self, lines: int = 20) -> str:
        out = []
        for path in sorted(self.dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is not None:
            print(f"logs of the failed run:\n{self.logs()}", file=sys.stderr)
        self.stop()


class Peak:
    """Peak RSS of some processes (with their children), sampled in a thread every 0.2 s."""

    def __init__(self, procs: Iterable[Proc], every: float = 0.2) -> None:
        self.procs = list(procs)
        self.peaks: dict[str, float] = {p.name: 0.0 for p in self.procs}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = {p.name: p.rss_mb() for p in self.procs}
            self.samples.append((time.monotonic(), now))
            for name, mb in now.items():
                self.peaks[name] = max(self.peaks[name], mb)
            self._stop.wait(self.every)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every process, ours and others')."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def cpu_of(procs: Iterable[Proc]) -> float:
    return sum(p.cpu_seconds() for p in procs)


# --- Kafka -----------------------------------------------------------------------------


def producer(bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    """acks=all, as the collector produces; batches of up to 1 MiB with 5 ms linger."""
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        request_timeout_ms=30_000,
    )
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], chunk: int = 5_000
) -> dict[int, int]:
    """Produce every (key, value); return each partition's end (last acknowledged offset + 1)."""
    ends: dict[int, int] = {}
    prod = producer(bootstrap)
    await prod.start()
    try:
        it = iter(records)
        while batch := list(islice(it, chunk)):
            futures = [await prod.send(topic, value, key=key) for key, value in batch]
            for meta in await asyncio.gather(*futures):
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    finally:
        await prod.stop()
    return ends


def all_partitions(ends: dict[int, int], partitions: int) -> dict[int, int]:
    return {p: ends.get(p, 0) for p in range(partitions)}


async def highwaters(
    bootstrap: str, topic: str, partitions: int, timeout: float = 10.0
) -> dict[int, int]:
    """Each partition's high watermark, from fetch responses (not ListOffsets)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)  # at most one batch short: the fetch from there is small
        deadline = time.monotonic() + timeout
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            await consumer.getmany(*tps, timeout_ms=200, max_records=10_000)
        return {tp.partition: consumer.highwater(tp) or 0 for tp in tps}
    finally:
        await consumer.stop()


class Committed:
    """Reads a consumer group's committed offsets (OffsetFetch; joins nothing)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )

    async def __aenter__(self) -> Committed:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def read(self) -> dict[int, int]:
        out = {}
        for tp in self.tps:
            out[tp.partition] = await self.consumer.committed(tp) or 0
        return out


@dataclass
class Drain:
    """How a consumer group worked through a known backlog."""

    events: int  # consumed between the first commit seen and the end
    seconds: float  # from the first commit seen to the end
    cpu: float  # CPU seconds of the measured processes over that span
    broker_cpu: float
    wall_from_start: float  # from `started` (process start) to the end
    samples: list[tuple[float, int]]
    machine_busy: float  # busy cores of the whole machine over the span (others' work included)

    @property
    def others_busy(self) -> float:
        """Busy cores of everything else: other processes, this one included."""
        return max(0.0, self.machine_busy - (self.cpu + self.broker_cpu) / self.seconds)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


async def drain(
    bootstrap: str,
    group: str,
    topic: str,
    ends: dict[int, int],
    procs: list[Proc],
    broker: Proc,
    started: float,
    timeout: float,
    on_sample: Callable[[float, int], None] | None = None,
) -> Drain:
    """Poll `group`'s commits every 0.1 s until they reach `ends` (every partition, see
    `all_partitions`). The rate is taken from the
    first commit seen (start-up and group join excluded) to the end; CPU over the same span."""
    total = sum(ends.values())
    samples: list[tuple[float, int]] = []
    first: tuple[float, int, float, float, float] | None = None
    async with Committed(bootstrap, group, topic, len(ends)) as committed:
        deadline = time.monotonic() + timeout
        while True:
            offsets = await committed.read()
            now = time.monotonic()
            done = sum(min(offsets.get(p, 0), end) for p, end in ends.items())
            samples.append((now - started, done))
            if on_sample:
                on_sample(now, done)
            if first is None and done > 0:
                first = (now, done, cpu_of(procs), broker.cpu_seconds(), machine_busy())
            if done >= total:
                break
            if now > deadline:
                raise TimeoutError(f"{group} consumed {done:,} of {total:,} in {timeout:.0f}s")
            for proc in procs:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}")
            await asyncio.sleep(0.1)
    assert first is not None
    t0, done0, cpu0, broker0, machine0 = first
    return Drain(
        events=total - done0,
        seconds=now - t0,
        cpu=cpu_of(procs) - cpu0,
        broker_cpu=broker.cpu_seconds() - broker0,
        wall_from_start=now - started,
        samples=samples,
        machine_busy=(machine_busy() - machine0) / (now - t0),
    )


# --- ClickHouse through the query API --------------------------------------------------


def sql(api: str, query: str, timeout: float = 30.0) -> list[list]:
    import urllib.request

    request = urllib.request.Request(
        f"{api}/api/v1/sql",
        data=query.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
        return orjson.loads(response.read())["rows"]


def per_1k(seconds: float, events: int) -> float:
    return seconds * 1000 / events if events else float("nan")
