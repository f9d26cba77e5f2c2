"""The suppression list: salted hashes of erased ids, on a compacted topic and in a table.

Every process that could bring an erased person back keeps the list in memory: the
collector (drops their new events), the processor (drops their events, deletes their
state) and the sink (drops their rows before inserting). `SuppressionList.start`
reads the topic from its beginning to its end before it returns, so a process that
awaits it before its first event cannot let a replay slip through; a task then
follows the topic. Records: key = hash, value = {"hash", "erasure_id", "requested_at"}.

The embedded broker forgets its log on restart: `reseed` (run by `clickstream run`
before any worker starts, next to the processor state's restore) produces the rows of
the `suppressions` table to an empty topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream import topics
from stream.config import Settings
from stream.privacy.subject import Matcher, load_salt

log = logging.getLogger(__name__)

POLL_MS = 200


@dataclass(frozen=True, slots=True)
class Suppression:
    hash: str
    erasure_id: str
    requested_at: int  # ms
    # Published again by an erasure resumed after a restart: the processor purges and
    # acknowledges it as if it were new, though its list already holds it.
    again: bool = False

    def encode(self) -> tuple[bytes, bytes]:
        value = {
            "hash": self.hash,
            "erasure_id": self.erasure_id,
            "requested_at": self.requested_at,
        }
        if self.again:
            value["again"] = True
        return self.hash.encode(), orjson.dumps(value)

    @classmethod
    def decode(cls, value: bytes) -> Suppression:
        data = orjson.loads(value)
        return cls(
            str(data["hash"]),
            str(data.get("erasure_id", "")),
            int(data.get("requested_at", 0)),
            bool(data.get("again", False)),
        )


class Follower:
    """Reads one single-partition topic from its beginning, hands every record to
    `take`, and follows it. `start` returns once the end (as of the start) is read."""

    def __init__(self, settings: Settings, topic: str, take: Callable[[object], None]):
        self.settings = settings
        self.tp = TopicPartition(settings.topic(topic), 0)
        self.take = take
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=POLL_MS,
        )
        await self.consumer.start()
        try:
            self.consumer.assign([self.tp])
            await self.consumer.seek_to_beginning(self.tp)
            end = (await self.consumer.end_offsets([self.tp]))[self.tp]
            # The embedded broker's ListOffsets can be one record batch short: read on
            # until a poll at or past that end returns nothing.
            while True:
                got = await self.consumer.getmany(self.tp, timeout_ms=POLL_MS)
                self._take_all(got)
                if not got and await self.consumer.position(self.tp) >= end:
                    break
        except BaseException:
            await self.consumer.stop()
            self.consumer = None
            raise
        self._task = asyncio.create_task(self._follow(), name=f"follow-{self.tp.topic}")

    def _take_all(self, got) -> None:
        for record in got.get(self.tp, []):
            try:
                self.take(record)
            except Exception as exc:  # noqa: BLE001 - one bad record never stops the list
                log.warning("skipping an unreadable %s record: %s", self.tp.topic, exc)

    async def _follow(self) -> None:
        assert self.consumer is not None
        while True:
            try:
                self._take_all(await self.consumer.getmany(self.tp, timeout_ms=1000))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep following
                log.warning("following %s: %s", self.tp.topic, exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.consumer is not None:
            await self.consumer.stop()


class SuppressionList:
    """The hashes of erased ids, as this process knows them; `listeners` are called
    with every Suppression taken in (new or repeated)."""

    def __init__(self, settings: Settings, salt: bytes | None = None):
        self.settings = settings
        self.matcher = Matcher(salt if salt is not None else load_salt(settings))
        self.listeners: list[Callable[[Suppression], None]] = []
        self.ready = asyncio.Event()
        self._follower = Follower(settings, topics.SUPPRESSIONS, self._record)

    def _record(self, record) -> None:
        if record.value is None:
            return  # a suppression is never lifted by the pipeline; ignore tombstones
        self.add(Suppression.decode(record.value))

    def add(self, suppression: Suppression) -> None:
        known = self.matcher.hashes.get(suppression.hash)
        if known == suppression.erasure_id and not suppression.again:
            return  # the same record again (this process wrote it, then read it back)
        self.matcher.add(suppression.hash, suppression.erasure_id)
        for listener in self.listeners:
            listener(suppression)

    def suppressed(self, subject_id: str) -> bool:
        return self.matcher.suppressed(subject_id)

    async def start(self, attempts: int = 30) -> None:
        """Read the list to its end (retrying while Kafka does not answer), then follow."""
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            try:
                await self._follower.start()
                break
            except Exception as exc:
                if attempt == attempts:
                    raise
                log.warning("reading the suppression list failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
        self.ready.set()
        log.info(
            "suppression list read: %d erased id hash(es) in %.2fs",
            len(self.matcher),
            time.monotonic() - started,
        )

    async def stop(self) -> None:
        await self._follower.stop()


async def publish(settings: Settings, producer: AIOKafkaProducer, items: list[Suppression]) -> None:
    """Every suppression to the topic, acknowledged (acks=all on the producer)."""
    topic = settings.topic(topics.SUPPRESSIONS)
    futures = [
        await producer.send(topic, value=v, key=k, partition=0)
        for k, v in (s.encode() for s in items)
    ]
    await asyncio.gather(*futures)


def table_rows(items: list[Suppression]) -> list[tuple]:
    return [(s.hash, s.erasure_id, s.requested_at) for s in items]


async def reseed(settings: Settings, client) -> int:
    """Produce the suppressions table to an empty topic (a fresh embedded broker)."""
    tp = TopicPartition(settings.topic(topics.SUPPRESSIONS), 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        end = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    if end:
        return 0
    rows = await asyncio.to_thread(
        lambda: (
            client.query(
                "SELECT hash, argMax(erasure_id, requested_at),"
                " toUnixTimestamp64Milli(max(requested_at)) "
                f"FROM {settings.database}.suppressions GROUP BY hash"
            ).result_rows
        )
    )
    if not rows:
        return 0
    items = [Suppression(h, e, int(t)) for h, e, t in rows]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await publish(settings, producer, items)
    finally:
        await producer.stop()
    return len(items)
