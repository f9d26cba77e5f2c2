"""The Faust shell around the engine: topics, the visitor table, one agent and a timer.

Design choices forced by faust-streaming 0.15.3 and the embedded broker
(see ../shared/notes/faust-on-tansu.md and the sessions issue):
- one agent, concurrency 1, `take_events` batches; a failing record is dead-lettered
  inside the engine and never escapes the loop;
- per batch, in this order, each step acknowledged by Kafka before the next: outputs,
  state (one raw-bytes value per visitor, its changelog records sent by us as one
  batch), offsets (committed by us; Faust's acks are off for the source topics, its
  commit bookkeeping could commit offsets whose state was still in its send buffer).
  A crash repeats work, with the same idempotency keys, and never skips any;
- timeouts travel as tick records on a control topic co-partitioned with the events,
  so sessions close inside stream processing and the close is in the changelog.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import weakref

import faust
import mode.loop
from aiokafka.partitioner import murmur2
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.streams import _current_event
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from stream import topics
from stream.config import Settings
from stream.processor import faust_patches
from stream.processor.engine import Engine, Record
from stream.processor.inflight import InFlight
from stream.processor.positions import RESEEK_SECONDS, Positions, batch_offsets
from stream.telemetry import EVENT_TIME_LAG, PROCESSING_LATENCY, render

log = logging.getLogger(__name__)

BATCH_MAX = 5000
BATCH_WITHIN = 0.1  # seconds: bounds the latency a batch adds
TICK_SECONDS = 2.0
IDLE_SECONDS = 5.0


def faust_settings(settings: Settings, *, fast_join: bool = True) -> dict:
    """Faust configuration, tuned per the measurements in faust-on-tansu.md."""
    store = "rocksdb://" if settings.store == "rocksdb" else "memory://"
    return dict(
        id=settings.topic(topics.PROCESSOR_APP_ID),
        broker=[f"kafka://{s}" for s in settings.bootstrap_servers.split(",")],
        store=store,
        topic_partitions=settings.partitions,
        topic_allow_declare=False,  # topics are created up front with the right partitions
        topic_disable_leader=True,
        table_standby_replicas=0,
        producer_linger=0.05,
        producer_max_batch_size=1024 * 1024,
        producer_acks=-1,
        broker_max_poll_records=5000,
        consumer_max_fetch_size=16 * 1024 * 1024,
        stream_buffer_maxsize=200_000,
        broker_session_timeout=6.0 if fast_join else 60.0,
        broker_heartbeat_interval=1.0 if fast_join else 3.0,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        web_enabled=True,
        web_port=settings.processor_port,
        web_bind="0.0.0.0",
        web_tables_enabled=False,  # never publish table contents
        web_transport=f"tcp://0.0.0.0:{settings.processor_port}",
        datadir=str(settings.data_dir / "faust"),
        logging_config=None,
    )


def create_app(settings: Settings) -> faust.App:
    faust_patches.apply()
    app = faust.App(**faust_settings(settings))
    # Faust's own sensors (messages, events, commits, rebalances, table ops) as
    # faust_* metrics, in a registry of their own: served next to ours on /metrics.
    faust_registry = CollectorRegistry()
    if settings.faust_metrics:  # costs about a fifth of the processor's CPU (BENCHMARKS.md)
        app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(faust_registry, "faust"))
    engine = Engine(settings)
    events_topic_name = settings.topic(topics.EVENTS)
    control_topic_name = settings.topic(topics.CONTROL)

    def source_topic(*names: str):
        """Raw bytes in; Faust's acks off: offsets are committed by the agent, after
        the state they cover."""
        return app.topic(
            *names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            acks=False,
        )

    def state_table(name: str):
        """Raw bytes per key; the "raw" key serializer hashes a key to the partition of
        the source records keyed alike. use_partitioner: written inside take_events,
        outside a per-event context."""
        return app.Table(
            name,
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            use_partitioner=True,
        )

    source = source_topic(events_topic_name, control_topic_name)
    control = app.topic(control_topic_name, value_serializer="raw", key_serializer="raw")
    visitors = state_table("visitors")  # keyed by visitor: co-partitioned with the events
    windows = state_table("windows")
    window_keys = [partition_key(p, settings.partitions) for p in range(settings.partitions)]
    identities_topic_name = settings.topic(topics.IDENTITIES)
    identities = source_topic(identities_topic_name)
    people = state_table("people")  # keyed by user id: co-partitioned with the identities
    indexed: set[int] = set()
    # Faust's last reading of the group's commits (refreshed at every rebalance).
    positions = Positions(lambda tp: app.consumer._committed_offset.get(tp))

    def owned(topic: str) -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}

    async def finish(result, events, source_topic: str, states, windows_table=None) -> None:
        """1. Outputs, acknowledged. 2. State, acknowledged. 3. Offsets. A crash
        between steps repeats work (same idempotency keys, deduplicated downstream)
        and never skips any: nothing is committed before its state is in the changelog."""
        if result.outputs:
            await _send_all(app.producer, [(o.topic, o.key, o.value, None) for o in result.outputs])
        mine = owned(source_topic)
        await _store(app.producer, result, events, mine, states, windows_table, window_keys)
        await _commit(app.consumer, batch_offsets(events))

    async def batches(stream):
        """take_events batches, cut to exactly the next offsets of each partition."""
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
            events, seeks = positions.admit(batch)
            if seeks:
                await _seek(app.consumer, seeks)
            if events:
                records = [
                    Record(m.topic, m.partition, m.offset, m.key, e.value)
                    for e in events
                    for m in (e.message,)
                ]
                yield events, records

    inflight = InFlight()

    async def finish_batch(number: int, result, events, written: list[bytes]) -> None:
        try:
            await finish(result, events, events_topic_name, visitors, windows)
        except Exception as exc:  # nothing after this batch may be committed: stop
            log.exception("could not finish a batch; stopping the worker")
            await app.crash(exc)
            raise
        finally:
            inflight.release(number, written)

    @app.agent(source, concurrency=1)
    async def process(stream):
        finishing: asyncio.Future | None = None
        number = 0
        async for events, records in batches(stream):
            result = engine.run(
                records,
                lambda visitor: inflight.get(visitor.encode(), visitors.get),
                lambda partition: inflight.get(window_keys[partition], windows.get),
            )
            number += 1
            new = {key.encode(): value for key, value in result.states.items()}
            new.update((key.encode(), None) for key in result.deleted)
            new.update((window_keys[p], value) for p, value in result.windows.items())
            inflight.put(number, new)
            if finishing is not None:
                await finishing  # one batch in flight at most, finished in order
            finishing = asyncio.ensure_future(finish_batch(number, result, events, list(new)))
            if result.last_received_at:
                PROCESSING_LATENCY.observe(max(0.0, time.time() - result.last_received_at / 1000))
            for partition, clock in engine.clocks.items():
                if clock.max_ts:
                    EVENT_TIME_LAG.labels(str(partition)).set(
                        max(0.0, time.time() - clock.max_ts / 1000)
                    )

    @app.agent(identities, concurrency=1)
    async def link_people(stream):
        async for events, records in batches(stream):
            result = engine.link(records, lambda user: people.get(user.encode()))
            await finish(result, events, identities_topic_name, people)

    @app.timer(RESEEK_SECONDS)
    async def reseek():
        seeks = positions.reseeks()
        sources = (events_topic_name, control_topic_name, identities_topic_name)
        ends = {
            tp: app.consumer.highwater(tp)
            for tp in app.consumer.assignment()
            if tp.topic in sources
        }
        seeks.update(positions.stalled(ends))
        if seeks:
            log.warning(
                "seeking again: %s", {f"{t.topic}[{t.partition}]": o for t, o in seeks.items()}
            )
            await _seek(app.consumer, seeks)

    @app.timer(TICK_SECONDS)
    async def send_ticks():
        assigned = sorted(owned(events_topic_name))
        try:
            _index_recovered(engine, visitors, settings.partitions, assigned, indexed)
        except Exception:  # a timer that raises would crash the whole worker
            log.exception("could not index recovered visitors")

        def caught_up(partition: int) -> bool:
            """Nothing left to read: the next offset to apply is the log end (the
            highwater from fetches; unknown until a fetch came back, so not yet)."""
            tp = TP(events_topic_name, partition)
            end = app.consumer.highwater(tp)
            position = positions.next.get(tp)
            if position is None:
                position = app.consumer._committed_offset.get(tp)
            return end is not None and position is not None and position >= end

        for partition, value in engine.ticks(assigned, IDLE_SECONDS, caught_up):
            await control.send(key=b"tick", value=value, partition=partition)

    @app.page("/metrics")
    async def metrics(web, request):
        body, content_type = render()
        body += generate_latest(faust_registry)
        return web.bytes(body, content_type=content_type.split(";")[0])

    ready = {"rebalanced": False}

    @app.on_rebalance_complete.connect
    async def _on_rebalanced(sender, **kwargs):
        ready["rebalanced"] = True
        log.info(
            "rebalance complete: generation %s, partitions %s, paused %s",
            app.consumer_generation_id,
            _tps(app.consumer.assignment()),
            _tps(app.consumer._thread._ensure_consumer().paused()),
        )

    @app.page("/healthz")
    async def healthz(web, request):
        partitions = sorted(
            tp.partition for tp in app.consumer.assignment() if tp.topic == events_topic_name
        )
        if not ready["rebalanced"]:
            return web.json(
                {"status": "starting", "reason": "joining the consumer group"}, status=503
            )
        return web.json({"status": "ok", "partitions": partitions})

    return app


async def _send_all(producer, messages: list[tuple[str, bytes, bytes, int | None]]) -> list:
    """Send, flush at once (the agent waits for these acknowledgements, and the
    producer's linger would idle it on every batch) and wait for every ack."""
    futures = [await producer.send(t, k, v, p, None, None) for t, k, v, p in messages]
    await producer.flush()
    return await asyncio.gather(*futures)


async def _store(producer, result, events, owned: set[int], states, windows, window_keys) -> None:
    """Write the batch's state: to the local store, and to the changelog as one batch
    whose acknowledgements we wait for (Faust's own path queues each write in a buffer
    that its flush may leave non-empty, so an offset commit could precede the state
    it covers). Partitions revoked meanwhile are skipped: their new owner replays
    them from the last commit.

    The RocksDB store files a write under the partition of Faust's *current event*;
    inside take_events that is the last event of the batch, so each partition's
    writes run with one of its own events as the current event."""
    by_partition: dict[int, object] = {}
    for event in events:
        by_partition[event.message.partition] = event
    grouped: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, state in result.states.items():
        grouped.setdefault(result.state_partitions[key], []).append((key.encode(), state))
    for key in result.deleted:  # expired: a tombstone in the changelog
        grouped.setdefault(result.state_partitions[key], []).append((key.encode(), None))
    changelog: list[tuple[str, bytes, bytes, int]] = []
    written: list[tuple[object, int]] = []  # (table, partition) whose offset to persist
    window_partitions = set(result.windows) if windows is not None else set()
    for partition in (set(grouped) | window_partitions) & owned:
        event = by_partition.get(partition)
        token = _current_event.set(weakref.ref(event)) if event is not None else None
        try:
            for key, state in grouped.get(partition, ()):
                # The store only; the changelog record follows.
                if state is None:
                    states.data.pop(key, None)
                else:
                    states.data[key] = state
                changelog.append((states.changelog_topic.get_topic_name(), key, state, partition))
            if partition in grouped:
                written.append((states, partition))
            if windows is not None and partition in result.windows:
                key, value = window_keys[partition], result.windows[partition]
                windows.data[key] = value
                changelog.append((windows.changelog_topic.get_topic_name(), key, value, partition))
                written.append((windows, partition))
        finally:
            if token is not None:
                _current_event.reset(token)
    if not changelog:
        return
    acked = await _send_all(producer, changelog)
    # What Faust's changelog callback does: RocksDB remembers how far its changelog
    # partition is already applied, so recovery reads only what came after.
    last: dict[tuple[str, int], int] = {}
    for meta in acked:
        key = (meta.topic, meta.partition)
        last[key] = max(last.get(key, -1), meta.offset)
    for table, partition in written:
        offset = last.get((table.changelog_topic.get_topic_name(), partition))
        if offset is not None:
            table.data.set_persisted_offset(
                TP(table.changelog_topic.get_topic_name(), partition), offset
            )


async def _seek(consumer, seeks: dict) -> None:
    """Seek in the consumer's thread (aiokafka's seek is not thread-safe), and lower
    Faust's read offset, below which its fetcher drops records."""
    await consumer.seek_wait(seeks)
    for tp, offset in seeks.items():
        consumer._read_offset[tp] = offset or None


async def _commit(consumer, offsets: dict) -> None:
    """Commit the next offset of every partition in the batch (the source topics have
    Faust's acks off, so Faust never commits them itself). A failed commit is not
    fatal: the next batch's commit covers it, or the partition's next owner replays."""
    try:
        await consumer._commit(offsets)
    except Exception as exc:  # noqa: BLE001
        log.warning("offset commit failed (will be retried by the next batch): %r", exc)


def _tps(tps) -> str:
    return ",".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps))


def partition_key(partition: int, partitions: int) -> bytes:
    """A table key that the default partitioner puts on `partition`: the metrics
    accumulator of partition p must live in changelog partition p, so the worker that
    owns p recovers it."""
    i = 0
    while True:
        key = f"windows-{partition}-{i}".encode()
        if (murmur2(key) & 0x7FFFFFFF) % partitions == partition:
            return key
        i += 1


def _index_recovered(
    engine: Engine, table, partitions: int, assigned: list[int], indexed: set[int]
) -> None:
    """Once per newly assigned partition: put recovered visitors back on the watch list."""
    fresh = set(assigned) - indexed
    indexed.intersection_update(assigned)
    if not fresh:
        return
    for key, raw in list(table.items()):
        if raw is None:
            continue
        partition = (murmur2(key) & 0x7FFFFFFF) % partitions
        if partition in fresh:
            engine.index_visitor(partition, key.decode(), raw)
    indexed.update(fresh)


def run_worker(settings: Settings) -> None:
    """Run the processor in the foreground until SIGTERM/SIGINT."""
    if os.environ.get("CLICKSTREAM_PROCESSOR_UVLOOP", "1") != "0":
        mode.loop.use("uvloop")
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)

    @app.task
    async def _after_start():
        # faust.Worker sets the ROOT logger to DEBUG for its spinner; every debug record
        # of aiokafka and Faust would then be built for nobody (18 % of CPU measured).
        logging.getLogger().setLevel(settings.log_level)
        # Start-up objects never die: keep them out of every collection, and collect the
        # young generation less often (full collections were ~11 % of CPU, notes).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    worker.execute_from_commandline()
