"""The processor-state archive against the real embedded broker and the real chdb engine:
the sink writes changelog records to processor_state (a tombstone marks the key
deleted, a sink restart keeps the newest value), and restore() re-seeds empty changelog
topics of a "fresh broker" (a new topic prefix) from it, rebased, and only when empty."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from stream import topics
from stream.broker import create_topics
from stream.config import Settings
from stream.journey.state import VisitorState, decode_state, encode_state
from stream.metrics.windows import PartitionRecord, partition_key
from stream.restore import restore
from stream.sink import migrate
from stream.sink.consumer import Sink
from tests.integration.test_sink import wait_committed

pytestmark = pytest.mark.integration


def home(key: bytes, partitions: int = 4) -> int:
    """The key's partition (the default partitioner), as the processor writes it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# A partition's record in the windows table: written to that partition, not by hash.
CLOCK_KEY = partition_key(2)
CLOCK = PartitionRecord(clock=1_767_225_600_000, published=3, tick_offset=40).encode()


def state(visitor: str, version: int, offsets: dict[int, int]) -> bytes:
    return encode_state(
        VisitorState(
            visitor, anonymous_id=visitor, stage="purchase", offsets=offsets, version=version
        )
    )


def changelog(settings: Settings, table: str) -> str:
    return settings.topic(f"{topics.PROCESSOR_APP_ID}-{table}-changelog")


async def send(settings: Settings, records: list[tuple[str, int, bytes, bytes | None]]):
    """(table, partition, key, value) to the changelog topics; the partitions' ends."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(changelog(settings, t), v, key=k, partition=p)
            for t, p, k, v in records
        ]
        ends: dict[TopicPartition, int] = {}
        for meta in await asyncio.gather(*futures):
            tp = TopicPartition(meta.topic, meta.partition)
            ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
        return ends
    finally:
        await producer.stop()


async def read_all(settings: Settings) -> list[tuple[str, int, bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        *topics.changelog_topics(settings),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out = []
    try:
        empty = 0
        while empty < 3:
            batch = await consumer.getmany(timeout_ms=300)
            empty = 0 if batch else empty + 1
            for tp, records in batch.items():
                table = topics.changelog_topics(settings)[tp.topic]
                out += [(table, tp.partition, r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return sorted(out)


def archived(client, db: str) -> dict:
    result = client.query(
        f"SELECT table_name, key, partition, value, deleted, version FROM {db}.processor_state"
        " FINAL",
        column_formats={"key": "bytes", "value": "bytes"},
    )
    return {(r[0], r[1]): r[2:] for r in result.result_rows}


async def test_the_sink_archives_changelog_records_and_restore_reseeds_a_fresh_broker(
    isolated_settings, embedded_broker, ch_client
):
    settings = isolated_settings(
        embedded_broker, CLICKSTREAM_STATE_ARCHIVE="on", CLICKSTREAM_SINK_BATCH_SECONDS="0.2"
    )
    db = settings.database
    await create_topics(settings)
    await asyncio.to_thread(migrate.apply, ch_client, settings)

    first = [
        ("visitors", home(b"v1"), b"v1", state("v1", 1, {1: 10})),
        ("visitors", home(b"v1"), b"v1", state("v1", 2, {1: 11})),
        ("visitors", home(b"v2"), b"v2", state("v2", 1, {2: 5})),
        ("visitors", home(b"gone"), b"gone", state("gone", 1, {3: 1})),
        ("windows", 2, CLOCK_KEY, CLOCK),
        ("people", home(b"u1"), b"u1", b'[1,"u1",[]]'),
    ]
    ends = await send(settings, first)
    sink = Sink(settings, ch_client, session_timeout_ms=1500)
    await sink.start()
    assert sink.epoch == 1
    await wait_committed(sink, ends)
    await sink.stop()
    rows = archived(ch_client, db)
    assert decode_state(rows[("visitors", b"v1")][1]).version == 2
    assert rows[("windows", CLOCK_KEY)][:2] == (2, CLOCK)
    assert rows[("visitors", b"v1")][0] == home(b"v1")  # partition

    # Same broker life: more records, a tombstone; a second sink instance (new epoch)
    # reads everything again from the group's commit, then the new records.
    more = [
        ("visitors", home(b"gone"), b"gone", None),
        ("visitors", home(b"v1"), b"v1", state("v1", 3, {1: 12})),
    ]
    ends = await send(settings, more)
    again = Sink(settings, ch_client, session_timeout_ms=1500)
    await again.start()
    assert again.epoch == 2
    await wait_committed(again, ends)
    await again.stop()
    rows = archived(ch_client, db)
    assert ("visitors", b"gone") not in rows
    newest_of_gone = ch_client.query(
        f"SELECT deleted, value FROM {db}.processor_state WHERE key = 'gone' "
        "ORDER BY version DESC LIMIT 1"
    ).result_rows
    assert newest_of_gone == [(1, "")]  # the tombstone: a deleted row
    assert decode_state(rows[("visitors", b"v1")][1]).version == 3
    assert decode_state(rows[("visitors", b"v2")][1]).version == 1
    assert len(rows) == 4

    # An undecodable visitors value is archived as it is; restore skips and counts it.
    # Values archived under another partition count: a visitor moves to its key's
    # partition; a windows value of a partition that no longer exists is left out.
    moved = next(k for i in range(100) if home(k := f"m{i}".encode()) != home(k, 8))
    ch_client.insert(
        f"{db}.processor_state",
        [
            ["visitors", home(b"bad"), b"bad", b"not a state", 0, 1, 0],
            ["visitors", home(moved, 8), moved, state(moved.decode(), 1, {}), 0, 1, 0],
            ["windows", 5, b"windows-5-0", b"[1]", 0, 1, 0],
        ],
        column_names=[
            "table_name",
            "partition",
            "key",
            "value",
            "deleted",
            "version",
            "archived_at",
        ],
    )

    # A fresh broker: the same database, new (empty) topics.
    fresh = isolated_settings(
        embedded_broker,
        CLICKSTREAM_STATE_ARCHIVE="on",
        CLICKSTREAM_DATABASE=db,
        CLICKSTREAM_TOPIC_PREFIX=f"{settings.topic_prefix}fresh.",
    )
    await create_topics(fresh)
    report = await restore(fresh, ch_client, block=2)
    assert not report.skipped
    assert dict(report.produced) == {"visitors": 3, "windows": 1, "people": 1}
    assert dict(report.undecodable) == {"visitors": 1}
    assert (report.rehomed, report.out_of_range) == (1, 1)
    seeded = {(t, k): (p, v) for t, p, k, v in await read_all(fresh)}
    assert {key: p for key, (p, _) in seeded.items()} == {
        ("people", b"u1"): home(b"u1"),
        ("visitors", b"v1"): home(b"v1"),
        ("visitors", b"v2"): home(b"v2"),
        ("visitors", moved): home(moved),
        ("windows", CLOCK_KEY): 2,
    }
    v1 = decode_state(seeded[("visitors", b"v1")][1])
    assert (v1.version, v1.offsets, v1.stage) == (3, {}, "purchase")
    assert seeded[("people", b"u1")][1] == b'[1,"u1",[]]'
    clock = PartitionRecord.decode(seeded[("windows", CLOCK_KEY)][1])
    assert (clock.clock, clock.published, clock.tick_offset) == (1_767_225_600_000, 3, -1)

    # The changelog is no longer empty: a second restore does nothing.
    report = await restore(fresh, ch_client)
    assert report.skipped.startswith("the changelog topics already hold records")
    assert len(await read_all(fresh)) == 5
