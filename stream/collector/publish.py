"""Kafka publishing for the collector: every record of a request is sent, and the call
returns only when the broker acknowledged all of them (acks=all).

Concurrent requests are published together. Their records go into a *round*: one
Kafka batch per partition, filled as requests arrive. One round is in flight at a
time (aiokafka sends one produce request per broker anyway); what arrives meanwhile
fills the next round, which leaves as soon as the broker acknowledged the previous
one. A request returns when the round holding its records is acknowledged; a
partition that failed fails only the requests that wrote to it.

Keys are partitioned exactly as aiokafka's DefaultPartitioner does (murmur2 of the
key over the sorted partition ids, like the Java client), so a visitor's events land
on the partition the processor expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from operator import itemgetter

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from stream import partitioning, topics
from stream.config import Settings
from stream.records import EventRecord, InvalidRecord
from stream.telemetry import PRODUCE_LATENCY

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 4 * 1024 * 1024
TopicPartition = tuple[str, int]

# A record's size beyond its key and value is far below this: only a value near the request
# limit needs aiokafka's exact estimate.
_RECORD_OVERHEAD = 1024
# (visitor_id, ts): each visitor's events in event-time order, a C key function.
_visitor_time = itemgetter("visitor_id", "ts")


class Round:
    """The records of the requests published together: batches per partition, then
    the outcome of each partition once the broker answered."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self.batches: dict[TopicPartition, list[BatchBuilder]] = {}
        self.failed: dict[TopicPartition, BaseException] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, tp: TopicPartition, key: bytes, value: bytes) -> None:
        batches = self.batches.get(tp)
        if batches is None:
            batches = self.batches[tp] = [self._producer.create_batch()]
        if batches[-1].append(timestamp=None, key=key, value=value) is None:  # full
            batches.append(self._producer.create_batch())
            batches[-1].append(timestamp=None, key=key, value=value)  # a first record always fits

    def extend(
        self, topic: str, partitions: tuple[int, ...], keys: list[bytes], values: list[bytes]
    ) -> set[TopicPartition]:
        """`add` for records of one topic, each on its key's partition; the partitions written."""
        written = set()
        by_tp = self.batches
        for key, value in zip(keys, values, strict=True):
            tp = (topic, partitioning.partition_for(key, partitions))
            written.add(tp)
            batches = by_tp.get(tp)
            if batches is None:
                batches = by_tp[tp] = [self._producer.create_batch()]
            if batches[-1].append(timestamp=None, key=key, value=value) is None:  # full
                batches.append(self._producer.create_batch())
                batches[-1].append(timestamp=None, key=key, value=value)
        return written

    async def send(self) -> None:
        """Queue every batch, wait for every acknowledgement, then resolve `done`."""
        acks: dict[TopicPartition, list[asyncio.Future]] = {}
        for tp, batches in self.batches.items():
            try:
                for batch in batches:
                    batch.close()  # complete: nothing to linger for
                    acks.setdefault(tp, []).append(
                        await self._producer.send_batch(batch, tp[0], partition=tp[1])
                    )
            except Exception as exc:  # noqa: BLE001 - recorded, raised to the requests concerned
                self.failed[tp] = exc
        for tp, futures in acks.items():
            for outcome in await asyncio.gather(*futures, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    self.failed.setdefault(tp, outcome)
        self.settle()

    def settle(self, error: BaseException | None = None) -> None:
        """Resolve `done`; with `error`, every partition of the round failed with it."""
        if error is not None:
            for tp in self.batches:
                self.failed.setdefault(tp, error)
        if not self.done.done():
            self.done.set_result(None)

    def raise_for(self, written: Iterable[TopicPartition]) -> None:
        for tp in written:
            if tp in self.failed:
                raise self.failed[tp]


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events_topic = settings.topic(topics.EVENTS)
        self.invalid_topic = settings.topic(topics.INVALID)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            max_batch_size=1024 * 1024,
            max_request_size=MAX_REQUEST_BYTES,
            request_timeout_ms=15_000,
        )
        self._round: Round | None = None  # filling; sent when the one in flight is acknowledged
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.producer.start()
        self._sender = asyncio.create_task(self._send_rounds(), name="collector-publisher")

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._round is not None:  # never sent: its requests answer 503
            self._round.settle(KafkaError("publisher stopped"))
            self._round = None
        await self.producer.stop()

    async def publish(
        self, events: Iterable[EventRecord], invalid: Iterable[InvalidRecord]
    ) -> None:
        """Send everything, then wait for every acknowledgement; raises if any send failed."""
        started = time.perf_counter()
        # Each visitor's events in event-time order: an offline queue or a mobile batch
        # sent out of order then reaches the journey in the order it happened.
        events = sorted(events, key=_visitor_time)
        invalid = list(invalid)
        if not events and not invalid:
            return
        # Every record is encoded and its size checked before any is added to the round.
        groups = (
            (self.events_topic, [e["visitor_id"].encode() for e in events], events),
            (self.invalid_topic, [r["message_id"].encode() for r in invalid], invalid),
        )
        encoded = []
        for topic, keys, items in groups:
            if not items:
                continue
            values = list(map(orjson.dumps, items))
            if max(map(len, keys)) + max(map(len, values)) + _RECORD_OVERHEAD > MAX_REQUEST_BYTES:
                for key, value in zip(keys, values, strict=True):
                    if (
                        DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
                        > MAX_REQUEST_BYTES
                    ):
                        raise MessageSizeTooLargeError(
                            f"a record of {len(value)} bytes exceeds the request size"
                        )
            encoded.append((topic, keys, values))
        partitions = [
            tuple(sorted(await self.producer.partitions_for(topic))) for topic, _, _ in encoded
        ]
        round_ = self._round
        if round_ is None:
            round_ = self._round = Round(self.producer)
            self._wakeup.set()
        written = set()
        for (topic, keys, values), ids in zip(encoded, partitions, strict=True):
            written |= round_.extend(topic, ids, keys, values)
        await asyncio.shield(round_.done)  # a cancelled request must not cancel the round
        round_.raise_for(written)
        PRODUCE_LATENCY.observe(time.perf_counter() - started)

    async def _send_rounds(self) -> None:
        """The one task talking to the producer: sends a round, waits for its acks, repeats."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            round_, self._round = self._round, None
            if round_ is None:
                continue
            try:
                await round_.send()
            except asyncio.CancelledError:
                round_.settle(KafkaError("publisher stopped"))
                raise
            except Exception as exc:  # noqa: BLE001 - this task must outlive any failure
                log.warning("kafka round failed: %s", type(exc).__name__)
                round_.settle(exc)

    async def healthy(self, timeout: float = 2.0) -> str:
        """An empty string when the broker answers a metadata request, else the reason."""
        try:
            await asyncio.wait_for(self.producer.client.force_metadata_update(), timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            return f"kafka unreachable: {type(exc).__name__}"
        if not self.producer.client.cluster.brokers():
            return "kafka unreachable: no brokers in metadata"
        return ""
