"""The batch step: the one place that states the processor's order of work.

    admit    exactly the next offset of each partition (positions.py), or seek back
    compute  the engine: the pure journey and metrics core, no I/O
    outputs  every record sent, every acknowledgement awaited
    state    the changelog records sent as one batch and acknowledged; only then the
             local store (RocksDB keeps it across a crash: a store ahead of its
             changelog would be lost on recovery)
    offsets  committed: exactly the batch's next offsets

Each step is acknowledged before the next starts. A crash between two steps repeats
work with the same idempotency keys, and never skips any: nothing is committed before
the state it covers is in the changelog. Batches overlap by one: batch n + 1 is
computed while batch n finishes (InFlight lends it n's state), and they finish in
order. Partitions revoked meanwhile are left to their next owner at every step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter

from faust.exceptions import ConsumerNotStarted

from stream import partitioning
from stream.processor import faust_internals as internals
from stream.processor.engine import BatchResult, Record
from stream.processor.inflight import InFlight
from stream.processor.positions import Positions, pair_offsets
from stream.telemetry import PROCESSING_LATENCY

log = logging.getLogger(__name__)

BATCH_MAX = 5000
BATCH_WITHIN = 0.1  # seconds: bounds the latency a batch adds

# compute(records, read) -> BatchResult; read(table name, key) -> stored value
Compute = Callable[[list[Record], Callable[[str, bytes], bytes | None]], BatchResult]


@dataclass
class Step:
    """One source topic's agent body: its tables by BatchResult field ("states", "rows")."""

    app: object
    source: str  # the topic whose records this step applies
    tables: Mapping[str, object]
    compute: Compute
    positions: Positions = field(init=False)
    inflight: dict[str, InFlight] = field(init=False)
    stores: dict[str, Callable[[bytes], bytes | None]] = field(init=False)  # name -> get
    starts: dict = field(init=False, default_factory=dict)  # tp -> the log's first offset
    finished: int = field(init=False, default=0)  # records of the batches finished so far

    def __post_init__(self) -> None:
        self.positions = Positions(
            lambda tp: internals.committed(self.app.consumer, tp), self.starts.get
        )
        self.inflight = {name: InFlight() for name in self.tables}
        self.stores = {name: internals.store_reader(t) for name, t in self.tables.items()}

    # --- the agent ----------------------------------------------------------------
    async def run(self, stream) -> None:
        """Batches from a Faust stream of this step's source."""
        await self._run(
            [(e.message.tp, [e.message]) for e in batch]
            async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN)
        )

    async def run_batches(self, queue: asyncio.Queue) -> None:
        """Batches from faust_internals' batch delivery (patch 4): each fetch's records,
        as many fetches as are waiting merged up to BATCH_MAX records."""

        async def batches() -> AsyncIterator[list]:
            while True:
                groups = await queue.get()
                size = sum(len(records) for _, records in groups)
                while size < BATCH_MAX and not queue.empty():
                    more = queue.get_nowait()
                    groups += more
                    size += sum(len(records) for _, records in more)
                yield groups

        await self._run(batches())

    async def _run(self, batches: AsyncIterator[list]) -> None:
        """`batches`: lists of (tp, records), each a partition's records in offset order;
        a record has topic, partition, offset, key and value (an aiokafka ConsumerRecord,
        or a Faust Message)."""
        finishing: asyncio.Future | None = None
        number = 0
        async for runs in batches:
            admitted = await self.admit(runs)
            if not admitted:
                continue
            result = self.compute([record for _, record in admitted], self.read)
            number += 1
            for name in self.tables:
                self.inflight[name].put(number, getattr(result, name))
            if finishing is not None:
                await finishing  # one batch in flight at most, finished in order
            finishing = asyncio.ensure_future(self.finish(number, result, admitted))
            if result.last_received_at:
                PROCESSING_LATENCY.observe(max(0.0, time.time() - result.last_received_at / 1000))

    def read(self, table: str, key: bytes) -> bytes | None:
        """A key's value as the next batch must see it: in flight, else stored."""
        return self.inflight[table].get(key, self.stores[table])

    async def admit(self, runs: list) -> list:
        """The (tp, record) pairs to apply, of (tp, records) runs."""
        assigned = self.assigned()
        await self.learn_starts(set(map(itemgetter(0), runs)) & assigned)
        admitted, seeks = self.positions.admit_runs(runs, assigned=assigned)
        if seeks:
            for tp in seeks:  # read again after the seek: retention may have moved it
                self.starts.pop(tp, None)
            await internals.seek(self.app.consumer, seeks)
        return admitted

    async def learn_starts(self, tps: set) -> None:
        """The log's first offset of the partitions the group has no commit for, where
        their first record must be (positions.py). Unknown when the broker does not
        answer: the first record is then taken as it comes, as before."""
        unknown = [
            tp
            for tp in tps
            if tp not in self.starts
            and tp not in self.positions.next
            and self.positions.committed(tp) is None
        ]
        if not unknown:
            return
        try:
            self.starts.update(await self.app.consumer.earliest_offsets(*unknown))
        except Exception as exc:  # noqa: BLE001 - only the check is lost, never a record
            log.warning("log start offsets unknown, first records unchecked: %r", exc)

    # --- outputs -> state -> offsets ----------------------------------------------
    async def finish(self, number: int, result: BatchResult, pairs: list) -> None:
        try:
            if result.outputs:
                await send_all(
                    self.app.producer, [(o.topic, o.key, o.value, None) for o in result.outputs]
                )
            owned = self.owned()
            writes = {
                name: [(k, v, p) for k, (p, v) in getattr(result, name).items() if p in owned]
                for name in self.tables
            }
            await write_state(self.app.producer, self.tables, writes, pairs)
            owned = self.owned()
            offsets = {tp: o for tp, o in pair_offsets(pairs).items() if tp.partition in owned}
            try:
                await internals.commit(self.app.consumer, offsets)
            except Exception as exc:  # noqa: BLE001 - the next batch's commit covers it
                log.warning("offset commit failed (the next batch's commit covers it): %r", exc)
            self.finished += len(pairs)
        except Exception as exc:  # nothing after this batch may be committed: stop
            log.exception("could not finish a batch; stopping the worker")
            await self.app.crash(exc)
            raise
        finally:
            for name in self.tables:
                self.inflight[name].release(number, getattr(result, name))

    # --- partitions -----------------------------------------------------------------
    def assigned(self) -> set:
        """This step's partitions; none while the consumer is still starting."""
        try:
            assignment = self.app.consumer.assignment()
        except ConsumerNotStarted:
            return set()
        return {tp for tp in assignment if tp.topic == self.source}

    def owned(self) -> set[int]:
        return {tp.partition for tp in self.assigned()}

    def revoke(self, tps: Iterable) -> list[int]:
        """Forget everything of the revoked partitions of this step's source."""
        mine = [tp for tp in tps if tp.topic == self.source]
        self.positions.forget(mine)
        for tp in mine:
            self.starts.pop(tp, None)
        partitions = [tp.partition for tp in mine]
        for inflight in self.inflight.values():
            inflight.forget(partitions)
        return partitions

    async def reseek(self) -> None:
        """Seek again where an earlier seek was undone, or nothing arrives (positions.py)."""
        seeks = self.positions.reseeks()
        ends = {tp: self.app.consumer.highwater(tp) for tp in self.assigned()}
        seeks.update(self.positions.stalled(ends))
        if seeks:
            log.warning(
                "seeking again: %s", {f"{t.topic}[{t.partition}]": o for t, o in seeks.items()}
            )
            await internals.seek(self.app.consumer, seeks)


async def send_all(
    producer, messages: list[tuple[str, bytes, bytes | None, int | None]]
) -> dict[tuple[str, int], int]:
    """Send every message and wait for every acknowledgement; the last offset written
    per (topic, partition). One closed record batch per partition, built here: the
    producer's per-message path (a coroutine, a future, a partitioner call per record)
    was a seventh of the processor, and a closed batch goes out without the linger."""
    kafka = internals.kafka_producer(producer)
    counts: dict[str, list[int]] = {}
    groups: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
    key_hash = partitioning.key_hash
    for topic, key, value, partition in messages:
        if partition is None:
            if topic not in counts:
                counts[topic] = sorted(await kafka.partitions_for(topic))
            ids = counts[topic]
            # partitioning.KEYS inline (a call less per output), keyless ones by it
            partition = (
                ids[key_hash(key) % len(ids)]
                if key is not None
                else partitioning.KEYS(key, ids, ())
            )
        groups.setdefault((topic, partition), []).append((key, value))
    sent = []
    for (topic, partition), items in groups.items():
        batch, n = kafka.create_batch(), 0
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                sent.append((await _send_batch(kafka, batch, topic, partition), n))
                batch, n = kafka.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value or b'')} B is larger than a batch")
            n += 1
        sent.append((await _send_batch(kafka, batch, topic, partition), n))
    last: dict[tuple[str, int], int] = {}
    for future, n in sent:
        meta = await future
        key = (meta.topic, meta.partition)
        last[key] = max(last.get(key, -1), meta.offset + n - 1)
    return last


async def _send_batch(kafka, batch, topic: str, partition: int) -> asyncio.Future:
    batch.close()  # complete: no linger
    return await kafka.send_batch(batch, topic, partition=partition)


class _Source:
    """What a store write is filed under: the RocksDB store reads the partition from
    Faust's current event (`event.message.partition`)."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, record) -> None:
        self.message = record


async def write_state(producer, tables: Mapping, writes: Mapping[str, list], pairs: list) -> None:
    """Every table's changelog records as one batch, acknowledged; then the stores.
    `pairs`: the batch's (tp, record)s, whose partitions the writes are filed under."""
    topics = {name: tables[name].changelog_topic.get_topic_name() for name in writes}
    messages = [(topics[name], k, v, p) for name, items in writes.items() for k, v, p in items]
    if not messages:
        return
    last = await send_all(producer, messages)
    records = {record.partition: record for _, record in pairs}  # the last of each
    sources = {partition: _Source(record) for partition, record in records.items()}
    for name, items in writes.items():
        topic = topics[name]
        offsets = {p: o for (t, p), o in last.items() if t == topic}
        internals.write_store(tables[name], sources, items, offsets)
