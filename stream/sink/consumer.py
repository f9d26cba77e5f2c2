"""The sink: Kafka topics -> ClickHouse tables, at least once, idempotent, never losing a row.

Its own aiokafka consumer (group `clickstream-sink`, manual commits), one loop:

    read  -> row per record (rows.py)  -> per-table batch (batches.py)
          -> insert when a batch is full or old (writer.py)
          -> commit, per partition, the offset below which everything is in ClickHouse

Checkpoint order, the only one: insert the batch -> (rows ClickHouse refused become
invalid_events rows, written by the same rule) -> commit offsets. A crash anywhere
replays from the last commit; replayed rows are identical and ReplacingMergeTree
collapses them.

When ClickHouse is unavailable: every assigned partition is paused (lag grows; the
SINK_PAUSED gauge is 1), the failed batches are retried after 0.1 s, 0.2 s, ... up
to 30 s between attempts, with a WARNING per retry, and consumption resumes by itself
once an insert succeeds. The loop keeps calling getmany() while paused, so the
consumer stays in its group however long the outage lasts.

A rebalance drops every batch not yet written: nothing of it was committed, and
aiokafka restarts every newly assigned partition at its committed offset, so whoever
gets the partitions reads those records again. What getmany() returns is never dropped
(its position has moved past it), even when a rebalance happened during the call: it
belongs to the new assignment.

Processor state: when Settings.archives_state (by default with the embedded broker),
the sink also reads the processor's changelog topics (topics.changelog_topics) and
writes every record, raw, to processor_state (rows.state_row: why the newest record
wins across broker restarts is explained there); stream/restore.py re-seeds a fresh
broker from it. Same batches, same checkpoint order.

Erased ids (stream/privacy/): before a batch is inserted, its rows that name an id on
the suppression list are taken out (`_suppress`), so nothing of an erased person is
written again, whether it was still in Kafka, replayed or late. The list is read to
its end before the first record is consumed.

Stop: the loop first reads on until a poll returns nothing (at most STOP_CATCHUP_S), so
what the processor wrote just before it stopped is written too (the embedded broker
forgets everything else), then writes what is buffered and commits.

Lag per partition = high watermark - committed offset. The high watermark comes from
fetch responses (`consumer.highwater`); while paused there are no fetches, so the
sink also asks ListOffsets (which on the embedded broker is up to one record batch
short) and takes the larger of the two.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from clickhouse_connect.driver.exceptions import OperationalError

from stream import telemetry, topics
from stream.api.app import build_app
from stream.config import Settings
from stream.privacy.rows import row_ids_reader
from stream.privacy.suppressions import SuppressionList
from stream.sink import migrate, rows
from stream.sink.batches import Batch, Batches
from stream.sink.clickhouse import connect
from stream.sink.writer import Fault, Unavailable, Writer

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 30.0
POLL_MAX_S = 0.5
POLL_WHILE_WRITING_S = 0.02
INGEST_SLICE = 500  # records turned into rows between two yields to the event loop
LAG_EVERY_S = 1.0
STOP_FLUSH_S = 15.0
STOP_CATCHUP_S = 2.0
CATCHUP_POLL_S = 0.3
# A fetch returns once it has this much, or after FETCH_MAX_WAIT_MS. With 1 byte, a live
# trickle made ~75 fetches a second, each asking for every partition of ~8 topics (about
# 1.5 ms of the sink's CPU apiece); 64 KiB brings it to ~10-15 at 800 events/s for at most
# 100 ms more before a batch's first row is read (~10 ms at 5,000 events/s).
FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 100


def tune_gc() -> None:
    """For a process that runs the sink: batches keep tens of thousands of rows alive, and
    with Python's default thresholds the collector scans them again and again. Freeze
    what start-up allocated and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def idle_floors(routes: dict[str, rows.Table], settings: Settings) -> dict[str, float]:
    """Table name -> the least idle age of its batches: sink_journey_flush_seconds for the
    processor's outputs; the events (and invalid events) keep sink_idle_flush_seconds."""
    own = (rows.EVENTS, rows.INVALID_EVENTS)
    return {t.name: settings.sink_journey_flush_seconds for t in routes.values() if t not in own}


def backoff_delay(attempt: int) -> float:
    """Seconds before retry `attempt` (1, 2, ...): 0.1 doubling, capped at 30."""
    return min(BACKOFF_FIRST_S * 2 ** (attempt - 1), BACKOFF_MAX_S)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, sink: Sink):
        self.sink = sink

    async def on_partitions_revoked(self, revoked):
        self.sink._revoked(revoked)

    async def on_partitions_assigned(self, assigned):
        self.sink._assigned(assigned)


class Sink:
    """Consumes every topic in rows.ROUTES and writes it to its table.

    `start()` joins the group and runs the loop in a task; `stop()` flushes what is
    buffered, commits, and leaves the group. `set_unavailable` / `inject_outage`
    simulate a ClickHouse outage (tests, rehearsals).
    """

    def __init__(
        self,
        settings: Settings,
        client,
        *,
        group_id: str = topics.SINK_GROUP,
        session_timeout_ms: int = 6_000,
        fault: Fault | None = None,
        suppressions: SuppressionList | None = None,
    ):
        self.settings = settings
        self.suppressions = suppressions  # created at start() when not given
        self._ids_of: dict[str, object] = {}  # table name -> row -> ids it names
        self.group_id = group_id
        self.session_timeout_ms = session_timeout_ms
        self.routes = rows.routes(settings)
        # Changelog topic -> processor table, when the processor's state is archived.
        self.state_topics = topics.changelog_topics(settings) if settings.archives_state else {}
        self.epoch = 0  # processor_state version epoch, taken at start
        self.writer = Writer(client, settings.database, fault or Fault.from_env())
        self.batches = Batches(
            settings.sink_batch_rows,
            settings.sink_batch_seconds,
            idle_floors(self.routes, settings),
        )
        self._caught_up = False  # the last fetch left nothing on the broker
        self.consumer: AIOKafkaConsumer | None = None
        self.retries = 0  # consecutive failed attempts; 0 when ClickHouse is fine
        self._retry_at = 0.0
        self._generation = 0  # bumped on every revocation
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._writing: asyncio.Task | None = None  # the insert in flight
        self._lag_at = 0.0
        # Partitions the group had no offset for: not asked again until a reassignment.
        self._never_committed: set[TopicPartition] = set()
        self._catchup_until: float | None = None  # set by stop(): read on until then

    # --- outage simulation -------------------------------------------------------

    def set_unavailable(self, on: bool) -> None:
        self.writer.fault.set_unavailable(on)

    def inject_outage(self, seconds: float) -> None:
        self.writer.fault.outage(seconds)

    @property
    def paused(self) -> bool:
        return self.retries > 0

    # --- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self.suppressions is None:
            self.suppressions = SuppressionList(self.settings)
        if not self.suppressions.ready.is_set():
            await self.suppressions.start()
        if self.state_topics:
            self.epoch = await asyncio.to_thread(self._next_epoch)
            log.info(
                "archiving processor state from %d changelog topics (epoch %d)",
                len(self.state_topics),
                self.epoch,
            )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=self.group_id,
            client_id=f"{self.group_id}-{self.settings.database}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.session_timeout_ms // 5),
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self.consumer.subscribe(list(self.routes), listener=_Rebalance(self))
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="clickstream-sink")

    async def stop(self, catchup_s: float = STOP_CATCHUP_S) -> None:
        """Read on until a poll returns nothing (at most `catchup_s`), write what is
        buffered (as long as ClickHouse takes it), commit, leave."""
        if catchup_s > 0 and self._task is not None and not self._task.done():
            self._catchup_until = time.monotonic() + catchup_s
        else:
            self._stopping.set()
        if self._task is not None:
            await self._task

    def _next_epoch(self) -> int:
        result = self.writer.client.query(
            f"SELECT max(version) FROM {self.settings.database}.{rows.PROCESSOR_STATE.name}"
        )
        return rows.epoch_after(result.result_rows[0][0] if result.result_rows else 0)

    async def wait(self) -> None:
        """Until the loop ends: after stop(), or on an error (which stop() then raises)."""
        if self._task is not None:
            await asyncio.wait([self._task])

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.consumer is not None
        try:
            while not self._stopping.is_set():
                await self._finish_write()
                poll_s = self._poll_seconds()
                if self._catchup_until is not None:
                    poll_s = max(poll_s, CATCHUP_POLL_S)
                result = await self.consumer.getmany(
                    timeout_ms=int(poll_s * 1000),
                    max_records=self.settings.sink_batch_rows,
                )
                # Never drop what getmany returned, even across a rebalance: the position
                # has moved past it. aiokafka returns records of assigned partitions only.
                await self._ingest(result)
                now = time.monotonic()
                if self._catchup_until is not None and (
                    not result or self.retries or now >= self._catchup_until
                ):
                    self._stopping.set()  # caught up (or out of time): write and leave
                if self._writing is None and (not self.retries or now >= self._retry_at):
                    self._start_write(self.batches.due(now, self._idle_age(result)))
                if now >= self._lag_at and self._catchup_until is None:
                    self._lag_at = now + LAG_EVERY_S
                    await self._report_lag()
            await self._finish_write(wait=True)
            await self._drain()
        finally:
            await self.consumer.stop()
            self._set_paused(False)
            if self.suppressions is not None:
                await self.suppressions.stop()

    def _idle_age(self, result: dict[TopicPartition, list]) -> float | None:
        """The age at which a batch is written early: when this fetch left nothing more
        on the broker (or was empty), sink_idle_flush_seconds; else None."""
        self._caught_up = True
        for tp, records in result.items():
            high = self.consumer.highwater(tp)
            if high is None or records[-1].offset + 1 < high:
                self._caught_up = False
                break
        return self.settings.sink_idle_flush_seconds if self._caught_up else None

    def _start_write(self, due: list[Batch]) -> None:
        """Insert due (and earlier failed) batches in a task, while reading goes on."""
        for batch in due:
            self.batches.take(batch)
        if self.batches.writing:
            self._writing = asyncio.create_task(self._write())
        elif self.retries:  # what failed was dropped by a rebalance: nothing left to retry
            self._resume()

    async def _finish_write(self, wait: bool = False) -> None:
        """Collect the insert task when done; wait for it when asked or when the rows
        buffered behind it reach two batches (memory stays bounded)."""
        task = self._writing
        if task is None:
            return
        if wait or task.done() or self.batches.open_rows() >= 2 * self.settings.sink_batch_rows:
            self._writing = None
            await task

    def _poll_seconds(self) -> float:
        now = time.monotonic()
        if self._writing is not None:
            return POLL_WHILE_WRITING_S
        if self.retries:
            return min(POLL_MAX_S, max(0.0, self._retry_at - now))
        idle = self.settings.sink_idle_flush_seconds if self._caught_up else None
        due = self.batches.seconds_to_next_due(now, idle)
        return POLL_MAX_S if due is None else min(POLL_MAX_S, due)

    async def _ingest(self, result: dict[TopicPartition, list]) -> None:
        """Rows for every record, yielding to the loop every INGEST_SLICE records so the
        fetcher asks for the next records while these are converted (no overlap otherwise:
        the conversion holds the loop)."""
        add = self.batches.add
        for tp, records in result.items():
            table = self.routes[tp.topic]
            if table is rows.PROCESSOR_STATE:
                name, epoch = self.state_topics[tp.topic], self.epoch
                for record in records:
                    row = rows.state_row(name, record.key, record.value, record, epoch)
                    add(table, row, record, tp)
                self.batches.read_up_to(tp, records[-1].offset + 1)
                await asyncio.sleep(0)
                continue
            for start in range(0, len(records), INGEST_SLICE):
                for record in records[start : start + INGEST_SLICE]:
                    if record.key == topics.TICK_KEY and table is rows.EVENTS:
                        continue  # the processor's clock in the events log: not an event
                    row_table, row = rows.to_row(table, record.value, record)
                    add(row_table, row, record, tp)
                await asyncio.sleep(0)
            self.batches.read_up_to(tp, records[-1].offset + 1)

    async def _write(self) -> None:
        """Insert the taken batches, oldest first, then commit what they cover."""
        generation = self._generation
        try:
            for batch in list(self.batches.writing):
                self._suppress(batch)
                rejected = await self.writer.write(batch.table, batch.rows)
                if generation != self._generation:
                    return  # revoked meanwhile: those offsets are no longer ours
                for r in rejected:
                    origin = batch.origins[r.index]
                    row = rows.rejected_row(
                        batch.table, batch.rows[r.index], origin, origin.value, r.error
                    )
                    self.batches.add(rows.INVALID_EVENTS, row, origin)
                if rejected:
                    log.warning(
                        "ClickHouse refused %d row(s) of %s; written to invalid_events",
                        len(rejected),
                        batch.table.name,
                        extra={"table": batch.table.name, "error": rejected[0].error},
                    )
                self.batches.written(batch)
        except Unavailable as exc:
            self._back_off(batch.table.name, exc)
        else:
            if self.retries:
                log.info("ClickHouse is back after %d failed attempt(s); resuming", self.retries)
                self._resume()
        finally:
            if generation == self._generation:
                await self._commit()

    def _suppress(self, batch: Batch) -> None:
        """Take out the rows that name an erased id (their offsets stay held back by the
        batch's first offsets, and are committed with it)."""
        if self.suppressions is None:
            return
        matcher = self.suppressions.matcher
        if not matcher.hashes:
            return
        ids_of = self._ids_of.get(batch.table.name)
        if ids_of is None:
            ids_of = self._ids_of[batch.table.name] = row_ids_reader(
                batch.table.name, batch.table.columns
            )
        keep = [i for i, row in enumerate(batch.rows) if not matcher.any(ids_of(row))]
        if len(keep) == len(batch.rows):
            return
        telemetry.ROWS_SUPPRESSED.labels(batch.table.name).inc(len(batch.rows) - len(keep))
        batch.rows = [batch.rows[i] for i in keep]
        batch.origins = [batch.origins[i] for i in keep]

    async def settled(self) -> None:
        """Once the insert in flight (if any) ended: every later insert filters with the
        suppression list as it is now."""
        task = self._writing
        if task is not None:
            await asyncio.wait([task])

    def _back_off(self, table: str, exc: Exception) -> None:
        self.retries += 1
        delay = backoff_delay(self.retries)
        self._retry_at = time.monotonic() + delay
        telemetry.SINK_RETRIES.labels(table).inc()
        self._set_paused(True)
        log.warning(
            "ClickHouse unavailable (%s): retry %d in %.1f s; consumption paused",
            exc,
            self.retries,
            delay,
            extra={"table": table, "attempt": self.retries, "wait_s": delay},
        )

    def _resume(self) -> None:
        self.retries = 0
        self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        if self.consumer is not None:
            assigned = self.consumer.assignment()
            if paused:
                self.consumer.pause(*assigned)
            else:
                self.consumer.resume(*assigned)
        telemetry.SINK_PAUSED.set(1 if paused else 0)

    async def _commit(self) -> None:
        if self.consumer is None:
            return
        assigned = self.consumer.assignment()
        offsets = {tp: o for tp, o in self.batches.committable().items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # written rows stay written; a replay collapses
            log.warning("offset commit failed: %s", exc)
            return
        self.batches.mark_committed(offsets)

    async def _drain(self) -> None:
        """On stop: write everything buffered, retrying until STOP_FLUSH_S has passed."""
        deadline = time.monotonic() + STOP_FLUSH_S
        self.batches.take_all()
        while self.batches.writing and time.monotonic() < deadline:
            await self._write()
            if self.batches.writing:
                await asyncio.sleep(min(backoff_delay(self.retries), deadline - time.monotonic()))
            self.batches.take_all()  # rows ClickHouse refused went to an invalid batch
        if self.batches.pending_rows():
            log.warning(
                "stopping with %d row(s) not written: they are read again on the next start",
                self.batches.pending_rows(),
            )

    # --- rebalance ------------------------------------------------------------------------

    def _revoked(self, revoked) -> None:
        self._generation += 1
        dropped = self.batches.pending_rows()
        self.batches.reset()
        self._never_committed.clear()
        if dropped:
            log.info("partitions revoked: %d unwritten row(s) will be read again", dropped)

    def _assigned(self, assigned) -> None:
        if self.retries and assigned and self.consumer is not None:
            self.consumer.pause(*assigned)

    # --- lag ------------------------------------------------------------------------------

    async def _report_lag(self) -> dict[TopicPartition, int]:
        assert self.consumer is not None
        assigned = list(self.consumer.assignment())
        ends: dict[TopicPartition, int] = {}
        if self.retries and assigned:
            try:
                ends = await self.consumer.end_offsets(assigned)
            except KafkaError:
                ends = {}
        lag = {}
        for tp in assigned:
            if tp not in self.consumer.assignment():
                continue  # revoked while we awaited the group (highwater() would assert)
            high = max(self.consumer.highwater(tp) or 0, ends.get(tp, 0))
            done = self.batches.committed.get(tp)
            if done is None:  # nothing committed since the assignment: ask the group, once
                if tp in self._never_committed:
                    continue  # (asked every second, this was 2 % of the sink's time)
                try:
                    done = await self.consumer.committed(tp)
                except KafkaError:
                    continue
                if done is None:
                    self._never_committed.add(tp)
                    continue
                self.batches.committed.setdefault(tp, done)
            lag[tp] = max(0, high - done)
            telemetry.CONSUMER_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(lag[tp])
        return lag


async def run_sink(
    settings: Settings,
    client_factory: Callable[[Settings], object] = connect,
    stop: asyncio.Event | None = None,
    *,
    sink: bool = True,
    serve_api: bool = True,
    group_id: str = topics.SINK_GROUP,
    session_timeout_ms: int = 6_000,
) -> None:
    """Migrate, then run the sink (and, with `serve_api`, the query API on
    settings.api_port: this process owns the embedded engine) until `stop` is set or the
    sink fails (raised here, so the supervisor restarts the process)."""
    stop = stop or asyncio.Event()
    client = await _connect_and_migrate(settings, client_factory, stop)
    if client is None:
        return
    runner = None
    suppressions = SuppressionList(settings)
    the_sink = (
        Sink(
            settings,
            client,
            group_id=group_id,
            session_timeout_ms=session_timeout_ms,
            suppressions=suppressions,
        )
        if sink
        else None
    )
    erasures = None
    if serve_api:
        from stream.privacy.erase import Erasures

        erasures = Erasures(settings, client, suppressions, the_sink)
        runner = web.AppRunner(build_app(settings, client, erasures=erasures), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", settings.api_port, reuse_address=True).start()
        log.info("query API listening on port %d", settings.api_port)
    stopped = asyncio.create_task(stop.wait())
    try:
        if erasures is not None:
            await erasures.start()
        waits = [stopped]
        if the_sink is not None:
            await the_sink.start()
            log.info("sink consuming %d topics as group %s", len(the_sink.routes), group_id)
            waits.append(asyncio.create_task(the_sink.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits[1:]:
            if task.done():
                task.result()  # the sink's error, if it failed
    finally:
        stopped.cancel()
        try:
            if the_sink is not None:
                await the_sink.stop()
        finally:
            if runner is not None:
                await runner.cleanup()
            if erasures is not None:
                await erasures.stop()


async def _connect_and_migrate(settings: Settings, client_factory, stop: asyncio.Event):
    """The client, once ClickHouse answers and the schema is migrated; None if stopped first."""
    attempt = 0
    while True:
        try:
            client = await asyncio.to_thread(client_factory, settings)
            await asyncio.to_thread(migrate.apply, client, settings)
            return client
        except (OperationalError, OSError) as exc:
            attempt += 1
            delay = backoff_delay(attempt)
            log.warning(
                "ClickHouse unavailable at start (%s): retry %d in %.1f s", exc, attempt, delay
            )
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return None
            except TimeoutError:
                pass
