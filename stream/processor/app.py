"""The processor as Faust declares it: topics, tables, agents, timers, pages.

    clickstream.events ──▶ journey agent ──▶ journey.* topics, clickstream.identities
      (events + ticks)       tables: visitors, windows
    clickstream.identities ──▶ people agent ──▶ journey.customers
                                 table: people

Every agent body is a `Step` (step.py: admit → compute → outputs → state → offsets);
the work is the engine's (engine.py, around the pure core); every touch of Faust's
internals is in faust_internals.py. Design choices forced by faust-streaming 0.15.3 and
the embedded broker are in ../shared/notes/faust-on-tansu.md: one agent per source,
concurrency 1, both sources a fetch at a time (faust_internals patch 4), raw bytes
everywhere, changelog records and offsets written by the step, not by Faust.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time

import faust
import mode.loop
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import CollectorRegistry, generate_latest

from stream import partitioning, topics
from stream.config import Settings, SettingsError
from stream.metrics import windows
from stream.privacy.purge import Purge
from stream.privacy.suppressions import SuppressionList
from stream.processor import faust_internals, heap
from stream.processor.engine import TICK_KEY, Engine, tick_value
from stream.processor.positions import RESEEK_SECONDS
from stream.processor.step import Step
from stream.telemetry import EVENT_TIME_LAG, render

log = logging.getLogger(__name__)

TICK_SECONDS = 2.0  # how often the partition clock is written into each owned partition


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
        producer_partitioner=partitioning.KEYS,
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
    if not faust_internals.apply() and _embedded(settings):
        raise SettingsError(
            "the embedded broker needs the processor's Faust patches (its ListOffsets is one"
            " record batch short, so table recovery would skip records): unset"
            " CLICKSTREAM_FAUST_PATCHES or pin faust-streaming==" + faust_internals.FAUST_VERSION
        )
    app = faust.App(**faust_settings(settings))
    faust_registry = CollectorRegistry()
    if settings.faust_metrics:  # costs about a fifth of the processor's CPU (BENCHMARKS.md)
        app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(faust_registry, "faust"))
    engine = Engine(settings)
    events_topic = settings.topic(topics.EVENTS)
    identities_topic = settings.topic(topics.IDENTITIES)

    def source(name: str):
        """Raw bytes in; Faust's acks off: the step commits offsets, after their state."""
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            acks=False,
        )

    def table(name: str):
        """Raw bytes per key, written by the step to the changelog partition of the
        source record (use_partitioner: written outside a per-event context)."""
        return app.Table(
            name,
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            use_partitioner=True,
        )

    events = source(events_topic)
    identities = source(identities_topic)
    visitors = table("visitors")  # by visitor id: co-partitioned with the events
    window_rows = table("windows")  # metric increments and partition clocks, by partition
    people = table("people")  # by user id: co-partitioned with the identities

    def scan(partition: int):
        """Both tables' items of one events partition, for the engine's index."""
        for key, raw in visitors.items():
            if partitioning.partition_of(key, settings.partitions) == partition:
                yield key, raw
        for key, raw in window_rows.items():
            if windows.key_partition(key) == partition:
                yield key, raw

    # Erased ids (stream/privacy/): their events dropped, their state deleted.
    suppressions = SuppressionList(settings)
    purge = Purge(settings, suppressions)

    journey = Step(
        app,
        events_topic,
        {"states": visitors, "rows": window_rows},
        lambda records, read: purge.journey(
            records,
            lambda key: read("states", key),
            lambda kept, load: engine.run(kept, load, lambda key: read("rows", key), scan),
            visitors.items,
            lambda: journey.owned(),
        ),
    )
    linking = Step(
        app,
        identities_topic,
        {"states": people},
        lambda records, read: purge.people(
            records, lambda user: read("states", user.encode()), engine.link
        ),
    )

    # Both sources come a fetch at a time, past Faust's per-message delivery (patch 4):
    # the agents stay declared, for the subscription and the partitions' assignment.
    # Faust's own path also loses records: its stream queues are emptied whenever its
    # flow control resumes, which it does once more at the end of a rebalance, after the
    # partitions were resumed and read (seen at restart: the identities records waiting
    # on the broker were fetched, queued, dropped; an erasure's tombstone among them).
    batched = _batched()
    batches = faust_internals.deliver_in_batches(events_topic) if batched else None
    identity_batches = faust_internals.deliver_in_batches(identities_topic) if batched else None

    @app.task
    async def read_suppressions():
        try:
            await suppressions.start()
        except Exception as exc:  # the agents wait for the list: stop rather than hang
            log.exception("cannot read the suppression list; stopping the worker")
            await app.crash(exc)

    @app.agent(events, concurrency=1)
    async def journeys(stream):
        await suppressions.ready.wait()  # read to its end before the first event
        await (journey.run(stream) if batches is None else journey.run_batches(batches))

    @app.agent(identities, concurrency=1)
    async def link_people(stream):
        await suppressions.ready.wait()
        if identity_batches is None:
            await linking.run(stream)
        else:
            await linking.run_batches(identity_batches)

    @app.timer(TICK_SECONDS)
    async def send_ticks():
        """The partition clock into each owned, indexed partition's log: sessions close,
        buyers lapse and metrics publish at these records, in log order."""
        now = int(time.time() * 1000)
        for partition in sorted(journey.owned()):
            if engine.indexed(partition):
                await app.producer.send(
                    events_topic, TICK_KEY, tick_value(now), partition, None, None
                )
            clock = engine.clocks.get(partition)
            if clock:
                EVENT_TIME_LAG.labels(str(partition)).set(max(0.0, now / 1000 - clock / 1000))

    trim = heap.malloc_trim()
    if trim is not None:
        trims = heap.TrimPlan(at=time.monotonic())

        @app.timer(heap.CHECK_SECONDS)
        async def give_back_memory():
            """Freed C heap back to the OS (heap.py), in a thread: the loop goes on."""
            if trims.due(journey.finished + linking.finished, time.monotonic()):
                await asyncio.to_thread(trim, 0)

    @app.timer(RESEEK_SECONDS)
    async def reseek():
        await journey.reseek()
        await linking.reseek()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked, **kwargs):
        for partition in journey.revoke(revoked):
            engine.revoke(partition)
        linking.revoke(revoked)

    ready = {"rebalanced": False}

    @app.on_rebalance_complete.connect
    async def on_rebalanced(sender, **kwargs):
        ready["rebalanced"] = True
        log.info(
            "rebalance complete: generation %s, partitions %s, paused %s",
            app.consumer_generation_id,
            _tps(app.consumer.assignment()),
            _tps(faust_internals.paused(app.consumer)),
        )

    @app.page("/metrics")
    async def metrics(web, request):
        body, content_type = render()
        body += generate_latest(faust_registry)
        return web.bytes(body, content_type=content_type.split(";")[0])

    @app.page("/healthz")
    async def healthz(web, request):
        if not ready["rebalanced"]:
            return web.json(
                {"status": "starting", "reason": "joining the consumer group"}, status=503
            )
        return web.json({"status": "ok", "partitions": sorted(journey.owned())})

    return app


def _batched() -> bool:
    return faust_internals.batch_delivery() and faust_internals.apply()


def _embedded(settings: Settings) -> bool:
    """The one-command pipeline's broker (the runner hands its children this address)."""
    return settings.bootstrap_servers == f"127.0.0.1:{settings.broker_port}"


def _tps(tps) -> str:
    return ",".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps))


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
