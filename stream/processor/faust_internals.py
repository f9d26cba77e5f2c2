"""Every touch of faust-streaming's and aiokafka's private API, all here, each with its
reason, checked against faust-streaming 0.15.3 and aiokafka 0.14.0.

Part 1, changes to Faust's behaviour (switchable off with CLICKSTREAM_FAUST_PATCHES=0,
for comparisons only; the processor refuses to run on the embedded broker without 1):

1. True high watermarks for table recovery. Faust asks ListOffsets(LATEST) where a
   changelog ends; the embedded broker (Tansu) answers with the base offset + 1 of the
   newest record batch, not the log end. Recovery then stops early and keeps stale
   state, and the RocksDB store even refuses to start ("persisted offset is higher than
   the highwater"). Fetch responses carry the true high watermark, so we read it from
   a fetch instead. On a real Kafka both answers agree and this costs one fetch per
   recovery.
2. A shorter fetch wait. Faust builds its consumer with fetch_max_wait_ms=1500, fixed;
   whenever a fetch finds less than a full batch the event waits there, and the
   stage-change latency showed it. FETCH_MAX_WAIT_MS bounds that wait.
3. Inline delivery. Faust hands every fetched message to its stream through
   `Service.wait_first(callback(message), suspend_flow.wait())`: two tasks and an
   `asyncio.wait` per message, a tenth of the processor's time. When the flow is
   running and flow control is open, the callback cannot block (channels put without
   waiting), so it is awaited directly; otherwise Faust's path runs unchanged. The
   loop is Faust's `Consumer._drain_messages` with only that line changed.
4. Batch delivery for the source topics. Per record, Faust's `getmany` makes a Message,
   feeds the monitor and checks the generation; the conductor then makes an Event, runs
   the sensors and queues it into the agent's channel, and `take_events` dequeues it:
   about half of the processor's main thread, measured (BENCHMARKS.md, fourth
   session). A topic registered with `deliver_in_batches` skips all of that: each
   fetch's records of that topic go, as aiokafka returned them, in one list into the
   topic's queue, which the agent's step reads (step.py). Nothing else changes: the
   step admits exactly the next offsets (positions.py), writes state and commits
   offsets itself, as it did with Faust's events. Other topics go Faust's way. It also
   keeps what Faust's way drops: Faust empties its stream queues whenever its flow
   control resumes, which it does once more at the end of a rebalance, after the
   partitions were resumed and read (`Recovery.on_recovery_completed`), so records
   fetched in between were lost; the batch queues are never emptied.

Part 2, private calls the processor's batch step makes (no public API does these):
- `seek`: aiokafka's seek is not thread-safe and Faust runs the consumer in a thread
  (`Consumer.seek_wait`); Faust's fetcher also drops records below its own read offset
  (`Consumer._read_offset`), which a seek back must lower.
- `commit`: the agent commits exactly the offsets whose state is acknowledged
  (`Consumer._commit`); Faust's own commit bookkeeping runs on its acks, which are off
  for the source topics.
- `committed`: the group's committed offset as Faust last read it.
- `write_store`: a table's local store, written only after the changelog acknowledged
  (`Table.data`), under the partition of the record being applied (the RocksDB store
  files a write under Faust's current event: `faust.streams._current_event`), and the
  changelog offset RocksDB remembers for recovery (`set_persisted_offset`).
- `store_reader`: a table's local store read without Faust's sensors (`Table.data`),
  as `write_store` writes it.
- `paused`: for the rebalance log (`Consumer._thread._ensure_consumer().paused()`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)
FAUST_VERSION = "0.15.3"
FETCH_MAX_WAIT_MS = 100
_applied = False
_batch_queues: dict[str, asyncio.Queue] = {}  # topic -> fetched [(tp, [records])] lists


def deliver_in_batches(topic: str, maxsize: int = 4) -> asyncio.Queue:
    """Patch 4: the queue that receives every fetch's records of `topic`, in lists of
    (tp, records); at most `maxsize` fetches wait in it (the fetch loop waits beyond)."""
    if not enabled() or os.environ.get("CLICKSTREAM_FAUST_BATCHES", "1") == "0":
        raise RuntimeError("batch delivery is off")
    return _batch_queues.setdefault(topic, asyncio.Queue(maxsize))


def batch_delivery() -> bool:
    return enabled() and os.environ.get("CLICKSTREAM_FAUST_BATCHES", "1") != "0"


def kafka_producer(producer):
    """The aiokafka producer inside Faust's (for its batch API: create_batch, send_batch)."""
    return producer._ensure_producer()


class RecoveryProbeError(RuntimeError):
    """The true end of a changelog could not be read."""


def enabled() -> bool:
    return os.environ.get("CLICKSTREAM_FAUST_PATCHES", "1") not in ("0", "false", "no", "off")


async def true_end_offsets(
    bootstrap_servers: str | list[str], partitions: Iterable[TopicPartition], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """The log end of each partition, from fetch responses (not from ListOffsets)."""
    tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    if not tps:
        return {}
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=16
        * 1024
        * 1024,  # a batch larger than this would hide the watermark
    )
    await probe.start()
    try:
        probe.assign(tps)
        listed = await probe.end_offsets(tps)
        for tp in tps:
            # ListOffsets is never past the end, so start a little before its answer.
            probe.seek(tp, max(0, listed[tp] - 1))
        ends: dict[TopicPartition, int] = {}
        deadline = asyncio.get_running_loop().time() + timeout
        while len(ends) < len(tps) and asyncio.get_running_loop().time() < deadline:
            await probe.getmany(timeout_ms=100, max_records=1)
            for tp in tps:
                high = probe.highwater(tp)
                if high is not None:
                    ends[tp] = max(high, listed[tp])
                    probe.pause(tp)
        missing = [tp for tp in tps if tp not in ends]
        if missing:  # recovering short of the end would keep stale state: never do that
            raise RecoveryProbeError(f"no fetch answered for {missing} within {timeout} s")
        return ends
    finally:
        await probe.stop()


def apply() -> bool:
    """Install the patches once, if enabled and the Faust version is the pinned one;
    whether they are installed."""
    global _applied
    if _applied or not enabled():
        return _applied
    import faust
    from faust.transport.drivers import aiokafka as driver

    if faust.__version__ != FAUST_VERSION:
        log.warning(
            "faust %s is not %s: patches not applied; table recovery may be short on Tansu",
            faust.__version__,
            FAUST_VERSION,
        )
        return False
    original = driver.AIOKafkaConsumerThread._highwaters

    async def _highwaters(self, partitions) -> Mapping:
        if self.consumer.in_transaction:
            return await original(self, partitions)
        consumer = self._ensure_consumer()
        ends = await true_end_offsets(consumer._client._bootstrap_servers, partitions)
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in partitions}

    driver.AIOKafkaConsumerThread._highwaters = _highwaters

    create_worker_consumer = driver.AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self, transport):
        consumer = create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start(), which comes later
        return consumer

    driver.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer

    from faust.transport import consumer as consumer_module

    if os.environ.get("CLICKSTREAM_FAUST_INLINE", "1") != "0":  # for A/B measurements
        consumer_module.Consumer._drain_messages = _drain_messages
    _applied = True
    return True


# --- part 2: private calls of the batch step ----------------------------------------


async def seek(consumer, seeks: Mapping) -> None:
    """Seek in the consumer's thread, and lower Faust's read offset below which its
    fetcher drops records. A partition revoked meanwhile is left to its next owner
    (seeking it raised IllegalStateError and crashed the worker during a join)."""
    from aiokafka.errors import IllegalStateError

    assigned = consumer.assignment()
    seeks = {tp: offset for tp, offset in seeks.items() if tp in assigned}
    if not seeks:
        return
    try:
        await consumer.seek_wait(seeks)
    except IllegalStateError as exc:
        log.info("seek skipped, a partition was revoked meanwhile: %s", exc)
        return
    for tp, offset in seeks.items():
        consumer._read_offset[tp] = offset or None


async def commit(consumer, offsets: Mapping) -> None:
    """Commit exactly these offsets (next offset to read, per partition), and record them
    where Faust keeps the group's commits (`_commit` does not; Faust refreshes that map
    from the broker only at a rebalance, so it would otherwise lag our commits)."""
    if not offsets:  # every partition revoked meanwhile; an empty commit crashes aiokafka
        return
    if await consumer._commit(offsets) is not False:
        consumer._committed_offset.update(offsets)


def committed(consumer, tp) -> int | None:
    return consumer._committed_offset.get(tp)


def store_reader(table):
    """A key's value in the table's local store, as `table.get(key)` gives it, without
    Faust's per-read sensor calls (the step writes the store directly too, write_store):
    the in-memory store's dict as it is at each read, any other store through Faust."""
    from faust.stores.memory import Store as MemoryStore

    def get(key: bytes) -> bytes | None:
        data = table.data
        if type(data) is MemoryStore:
            return data.data.get(key)
        return table.get(key)

    return get


def paused(consumer) -> set:
    return set(consumer._thread._ensure_consumer().paused())


def write_store(table, partition_events: Mapping, writes, acked_offsets: Mapping) -> None:
    """Put acknowledged changelog writes into the table's local store.

    `writes`: (key, value or None, partition); `partition_events`: one source event per
    partition (the RocksDB store files a write under Faust's current event);
    `acked_offsets`: the changelog's last acknowledged offset per partition."""
    import weakref

    from faust.streams import _current_event
    from faust.types import TP

    data = table.data
    by_partition: dict[int, list] = {}
    for key, value, partition in writes:
        by_partition.setdefault(partition, []).append((key, value))
    changelog = table.changelog_topic.get_topic_name()
    for partition, items in by_partition.items():
        event = partition_events.get(partition)
        token = _current_event.set(weakref.ref(event)) if event is not None else None
        try:
            for key, value in items:
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            offset = acked_offsets.get(partition)
            if offset is not None:
                # What Faust's changelog callback does: RocksDB remembers how far its
                # changelog partition is applied, so recovery reads only what came after.
                data.set_persisted_offset(TP(changelog, partition), offset)
        finally:
            if token is not None:
                _current_event.reset(token)


async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - Faust's loop
    """faust 0.15.3's Consumer._drain_messages, delivering inline when it cannot block,
    and the records of batch topics (patch 4) a fetch at a time."""
    if _batch_queues:
        return await _drain_in_batches(self, fetcher)
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspended = self.suspend_flow.is_set
    flow_open = self.app.flow_control.is_active
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if not suspended() and flow_open():
                            await callback(message)  # the change: no tasks per message
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


async def _drain_in_batches(self, fetcher) -> None:  # pragma: no cover - Faust's loop
    """Faust's fetch loop (`_drain_messages` + `getmany`, 0.15.3) with patch 4: records
    of batch topics go to their queue a fetch at a time, the rest one message at a time
    as Faust does (inline delivery, patch 3)."""
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    suspended = self.suspend_flow.is_set
    flow_open = self.app.flow_control.is_active
    queues = _batch_queues
    to_message = self._to_message
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            records, active = await self._wait_next_records(1.0)
            await self.sleep(0)
            if records is None or self.should_stop:
                unset_flag(CONSUMER_FETCHING)
                continue
            if not self.flow_active:  # what Faust's getmany does then, warning included
                try:
                    await self.perform_seek()
                except Exception as exc:  # noqa: BLE001 - e.g. a partition revoked meanwhile
                    self.log.warning(f"exception performing seek when flow not active {exc}")
                unset_flag(CONSUMER_FETCHING)
                continue
            batches: dict[str, list] = {}
            rest: dict = {}
            for tp, tp_records in records.items():
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue
                r_offset = get_read_offset(tp)
                if r_offset is not None and tp_records and tp_records[0].offset < r_offset:
                    tp_records = [r for r in tp_records if r.offset >= r_offset]
                if not tp_records:
                    continue
                if tp.topic in queues:
                    batches.setdefault(tp.topic, []).append((tp, tp_records))
                    set_read_offset(tp, tp_records[-1].offset)
                else:
                    rest[tp] = tp_records
            for topic, batch in batches.items():
                await queues[topic].put(batch)
            generation = self.app.consumer_generation_id
            for n, (tp, record) in enumerate(self.scheduler.iterate(rest), 1):
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    break
                if n % 100 == 0:
                    await asyncio.sleep(0)
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                message = to_message(tp, record)
                if not suspended() and flow_open():
                    await callback(message)
                else:
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                set_read_offset(tp, record.offset)
            unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)
