"""The sink against the real embedded broker and the real chdb engine.

Every event once, replays collapse, malformed records and rows ClickHouse refuses go
to invalid_events without blocking their partition, and a ClickHouse outage (the fault
switch, 5 s here instead of 30 s) pauses consumption and loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from prometheus_client import REGISTRY

from stream import topics
from stream.broker import create_topics
from stream.config import Settings
from stream.sink import migrate
from stream.sink.consumer import Sink

pytestmark = pytest.mark.integration

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def make_event(i: int, source: str = "web") -> dict:
    """An EventRecord as the collector writes it; message ids m-000000000, m-000000001..."""
    visitor = f"v{i % 2000}"
    ts = BASE_MS + i * 50
    return {
        "message_id": f"m-{i:09d}",
        "type": "track" if i % 4 == 0 else "page",
        "event": "Product Viewed" if i % 4 == 0 else "",
        "name": "" if i % 4 == 0 else "Product",
        "visitor_id": visitor,
        "anonymous_id": visitor,
        "user_id": "",
        "previous_id": "",
        "ts": ts,
        "received_at": ts + 15,
        "sent_at": ts + 5 if i % 2 else None,
        "source": source,
        "url": f"https://shop.example/p/{i % 97}",
        "path": f"/p/{i % 97}",
        "referrer": "",
        "title": "Product",
        "properties": {"sku": f"sku-{i}", "price": 10 + i % 7},
        "traits": {},
        "context": {"locale": "en-US"},
        "ip": "198.51.100.0",
        "user_agent": "Mozilla/5.0",
        "browser": "Firefox",
        "os": "Linux",
        "device_type": "desktop",
        "is_bot": False,
        "ref_source": "(direct)",
        "ref_medium": "(none)",
        "search_engine": "",
        "utm_source": "",
        "utm_medium": "",
        "utm_campaign": "",
        "utm_term": "",
        "utm_content": "",
        "click_id": "",
    }


async def produce(
    settings: Settings, topic: str, records: list[tuple[bytes, bytes]]
) -> dict[TopicPartition, int]:
    """Send (key, value) pairs to `topic` (name without prefix); return each partition's end."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    ends: dict[TopicPartition, int] = {}
    try:
        for start in range(0, len(records), 5000):
            futures = [
                await producer.send(settings.topic(topic), value, key=key)
                for key, value in records[start : start + 5000]
            ]
            for meta in await asyncio.gather(*futures):
                tp = TopicPartition(meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends


async def produce_events(settings: Settings, first: int, last: int) -> dict[TopicPartition, int]:
    events = (make_event(i) for i in range(first, last))
    return await produce(
        settings, topics.EVENTS, [(e["visitor_id"].encode(), orjson.dumps(e)) for e in events]
    )


def merge_ends(*ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for part in ends:
        for tp, end in part.items():
            out[tp] = max(out.get(tp, 0), end)
    return out


async def wait_committed(sink: Sink, ends: dict[TopicPartition, int], timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while any(sink.batches.committed.get(tp, 0) < end for tp, end in ends.items()):
        if time.monotonic() > deadline:
            raise AssertionError(f"committed {sink.batches.committed} never reached {ends}")
        await asyncio.sleep(0.05)


def one(client, sql: str):
    return client.query(sql).result_rows[0]


async def prepare(settings: Settings, client) -> None:
    await create_topics(settings)
    await asyncio.to_thread(migrate.apply, client, settings)


async def test_every_event_lands_once_and_a_replay_adds_nothing(
    isolated_settings, embedded_broker, ch_client
):
    settings = isolated_settings(embedded_broker, CLICKSTREAM_SINK_BATCH_SECONDS="0.2")
    db = settings.database
    await prepare(settings, ch_client)
    ends = await produce_events(settings, 0, 20_000)
    bad = [
        (b"v1", b"not json at all"),
        (b"v2", orjson.dumps({"type": "page", "ts": BASE_MS})),  # no message_id
        (b"v3", orjson.dumps({**make_event(999_999), "ts": "yesterday"})),
    ]
    ends = merge_ends(ends, await produce(settings, topics.EVENTS, bad))

    sink = Sink(settings, ch_client, session_timeout_ms=1500)
    await sink.start()
    await wait_committed(sink, ends)
    await sink.stop()

    assert one(ch_client, f"SELECT count(), uniqExact(message_id) FROM {db}.events FINAL") == (
        20_000,
        20_000,
    )
    sku, offset, topic = one(
        ch_client,
        f"SELECT JSONExtractString(properties, 'sku'), _offset, _topic FROM {db}.events "
        "WHERE message_id = 'm-000000007'",
    )
    assert (sku, topic) == ("sku-7", settings.topic(topics.EVENTS))
    invalid = ch_client.query(
        f"SELECT message_id, reasons FROM {db}.invalid_events FINAL "
        "WHERE stage = 'sink' ORDER BY _partition, _offset"
    ).result_rows
    assert len(invalid) == 3
    reasons = " | ".join(r for _, rs in invalid for r in rs)
    assert "not JSON" in reasons and "message_id: required" in reasons and "ts:" in reasons
    assert "m-000999999" in {mid for mid, _ in invalid}

    replay = Sink(settings, ch_client, group_id="replay-from-zero", session_timeout_ms=1500)
    await replay.start()
    await wait_committed(replay, ends)
    await replay.stop()

    assert one(ch_client, f"SELECT count(), uniqExact(message_id) FROM {db}.events FINAL") == (
        20_000,
        20_000,
    )
    assert one(ch_client, f"SELECT count() FROM {db}.invalid_events FINAL")[0] == 3
    ch_client.command(f"OPTIMIZE TABLE {db}.events FINAL")
    ch_client.command(f"OPTIMIZE TABLE {db}.invalid_events FINAL")
    assert one(ch_client, f"SELECT count() FROM {db}.events")[0] == 20_000
    assert one(ch_client, f"SELECT count() FROM {db}.invalid_events")[0] == 3


def journey_records() -> dict[str, list[dict]]:
    session = {
        "session_id": "s1",
        "visitor_id": "v1",
        "anonymous_id": "v1",
        "user_id": "",
        "source": "web",
        "started_at": BASE_MS,
        "ended_at": BASE_MS + 60_000,
        "duration_s": 60.0,
        "pageviews": 3,
        "events": 5,
        "bounce": False,
        "stage_reached": "consideration",
        "closed": False,
        "version": 1,
    }
    return {
        topics.SESSIONS: [
            session,
            {**session, "pageviews": 4, "closed": True, "close_reason": "timeout", "version": 2},
            session,  # a replay of version 1 after version 2
            {**session, "session_id": "s-bad", "pageviews": -1},  # out of range for UInt32
            {**session, "session_id": "s2", "version": 1},  # after the bad one, same partition
        ],
        topics.STAGE_CHANGES: [
            {
                "idempotency_key": "k1",
                "visitor_id": "v1",
                "source": "web",
                "from_stage": "",
                "to_stage": "awareness",
                "ts": BASE_MS,
                "session_id": "s1",
                "event_id": "m-1",
            }
        ]
        * 2,
        topics.TRIGGERS: [
            {
                "idempotency_key": "t1",
                "trigger": "cart_abandoned",
                "visitor_id": "v1",
                "source": "web",
                "ts": BASE_MS,
                "cart_items": [{"sku": "a", "qty": 2}],
                "cart_value": 20.5,
                "currency": "EUR",
                "last_product_viewed": {"sku": "a"},
            }
        ],
        topics.VISITORS: [
            {"visitor_id": "v1", "source": "web", "first_seen": BASE_MS, "stage": "awareness"},
            {
                "visitor_id": "v1",
                "source": "web",
                "first_seen": BASE_MS,
                "stage": "consideration",
                "sessions": 1,
                "version": 2,
            },
        ],
        topics.METRICS: [
            # increments: the first, replayed, then the next one of the same row
            {"window_start": BASE_MS, "source": "web", "visitors": 3, "revenue": 9.5, "version": 1},
            {"window_start": BASE_MS, "source": "web", "visitors": 3, "revenue": 9.5, "version": 1},
            {"window_start": BASE_MS, "source": "web", "visitors": 1, "version": 2},
            {"window_start": BASE_MS + 60_000, "source": "web", "visitors": 1, "version": 1},
        ],
        topics.INVALID: [
            {
                "received_at": BASE_MS,
                "source": "web",
                "reasons": ["type: unknown"],
                "payload": '{"type": "nope"}',
                "message_id": "inv-1",
                "stage": "collector",
            }
        ],
    }


async def test_journey_topics_land_deduplicated_and_a_refused_row_does_not_block(
    isolated_settings, embedded_broker, ch_client
):
    settings = isolated_settings(embedded_broker, CLICKSTREAM_SINK_BATCH_SECONDS="0.2")
    db = settings.database
    await prepare(settings, ch_client)
    ends: dict[TopicPartition, int] = {}
    for topic, records in journey_records().items():
        # one key per topic: every record of a topic on one partition, in order
        pairs = [(b"v1", orjson.dumps(r)) for r in records]
        ends = merge_ends(ends, await produce(settings, topic, pairs))

    sink = Sink(settings, ch_client, session_timeout_ms=1500)
    await sink.start()
    await wait_committed(sink, ends)
    await sink.stop()

    sessions = ch_client.query(
        f"SELECT session_id, pageviews, closed, close_reason, version "
        f"FROM {db}.sessions FINAL ORDER BY session_id"
    ).result_rows
    assert sessions == [("s1", 4, True, "timeout", 2), ("s2", 3, False, "", 1)]
    refused = ch_client.query(
        f"SELECT source, reasons, error, payload FROM {db}.invalid_events FINAL WHERE stage = 'sink'"
    ).result_rows
    assert len(refused) == 1
    source, reasons, error, payload = refused[0]
    assert source == "web" and reasons == ["sessions: rejected by ClickHouse"]
    assert "pageviews" in error and '"s-bad"' in payload
    assert one(ch_client, f"SELECT count() FROM {db}.stage_transitions FINAL")[0] == 1
    cart, items = one(
        ch_client,
        f"SELECT cart_value, JSONExtractInt(cart_items, 1, 'qty') FROM {db}.triggers FINAL",
    )
    assert (cart, items) == (20.5, 2)
    assert one(ch_client, f"SELECT stage, sessions FROM {db}.visitors FINAL") == (
        "consideration",
        1,
    )
    assert ch_client.query(
        f"SELECT toUnixTimestamp(window_start), sum(visitors) FROM {db}.journey_metrics_1m FINAL "
        "GROUP BY window_start ORDER BY window_start"
    ).result_rows == [(BASE_MS // 1000, 4), (BASE_MS // 1000 + 60, 1)]
    hourly = one(ch_client, f"SELECT sum(visitors), sum(revenue) FROM {db}.journey_metrics_1h")
    assert hourly == (5, 9.5)
    assert one(
        ch_client,
        f"SELECT stage, reasons FROM {db}.invalid_events FINAL WHERE message_id = 'inv-1'",
    ) == ("collector", ["type: unknown"])


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_an_outage_pauses_consumption_and_loses_nothing(
    isolated_settings, embedded_broker, ch_client, caplog
):
    settings = isolated_settings(embedded_broker, CLICKSTREAM_SINK_BATCH_SECONDS="0.2")
    db = settings.database
    await prepare(settings, ch_client)
    caplog.set_level(logging.WARNING, logger="stream.sink.consumer")
    sink = Sink(settings, ch_client, session_timeout_ms=1500)
    await sink.start()
    ends = await produce_events(settings, 0, 5_000)
    await wait_committed(sink, ends)

    paused_seen: list[float] = []
    lag_seen: list[float] = []

    async def watch():
        while True:
            paused_seen.append(sample("clickstream_sink_paused"))
            lag_seen.append(
                sum(
                    sample(
                        "clickstream_consumer_lag_records",
                        group=sink.group_id,
                        topic=tp.topic,
                        partition=str(tp.partition),
                    )
                    for tp in ends
                )
            )
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    sink.inject_outage(5.0)
    started = time.monotonic()
    for first in range(5_000, 15_000, 2_000):  # the stream goes on during the outage
        ends = merge_ends(ends, await produce_events(settings, first, first + 2_000))
        await asyncio.sleep(0.3)
    await wait_committed(sink, ends, timeout=40)
    recovered_after = time.monotonic() - started
    watcher.cancel()
    await sink.stop()

    assert recovered_after >= 5.0
    assert one(ch_client, f"SELECT count(), uniqExact(message_id) FROM {db}.events FINAL") == (
        15_000,
        15_000,
    )
    first_pause = paused_seen.index(1.0)
    assert 0.0 in paused_seen[first_pause:], "the sink never resumed"
    assert max(lag_seen) > 0, "lag did not show while paused"
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) >= 3 and all(r.levelno == logging.WARNING for r in retries)
    assert "consumption paused" in retries[0].getMessage()
    assert not sink.paused


async def test_a_rebalance_mid_stream_loses_nothing(isolated_settings, embedded_broker, ch_client):
    settings = isolated_settings(embedded_broker, CLICKSTREAM_SINK_BATCH_SECONDS="0.2")
    db = settings.database
    await prepare(settings, ch_client)
    first = Sink(settings, ch_client, session_timeout_ms=1500)
    await first.start()
    ends = await produce_events(settings, 0, 4_000)
    await wait_committed(first, ends)

    second = Sink(settings, ch_client, session_timeout_ms=1500)
    await second.start()  # the group rebalances: each gets half of the partitions
    for start in range(4_000, 10_000, 2_000):
        ends = merge_ends(ends, await produce_events(settings, start, start + 2_000))
        await asyncio.sleep(0.3)
    await first.stop()  # leaves: the second takes every partition
    ends = merge_ends(ends, await produce_events(settings, 10_000, 12_000))
    await wait_committed(second, ends)
    await second.stop()

    assert one(ch_client, f"SELECT count(), uniqExact(message_id) FROM {db}.events FINAL") == (
        12_000,
        12_000,
    )


async def test_caught_up_events_are_written_at_the_idle_age_and_journey_rows_at_their_floor(
    isolated_settings, embedded_broker, ch_client
):
    """Live trickle: the events go in at the idle age; the processor's outputs wait for
    sink_journey_flush_seconds (fewer, larger inserts); both land once."""
    settings = isolated_settings(
        embedded_broker,
        CLICKSTREAM_SINK_BATCH_SECONDS="3.0",
        CLICKSTREAM_SINK_IDLE_FLUSH_SECONDS="0.1",
        CLICKSTREAM_SINK_JOURNEY_FLUSH_SECONDS="1.5",
    )
    db = settings.database
    await prepare(settings, ch_client)
    sink = Sink(settings, ch_client, session_timeout_ms=1500)
    await sink.start()
    await wait_committed(sink, await produce_events(settings, 0, 10))  # joined, caught up

    session = journey_records()[topics.SESSIONS][0]
    produced = time.monotonic()
    sessions = await produce(settings, topics.SESSIONS, [(b"v1", orjson.dumps(session))])
    events = await produce_events(settings, 10, 20)
    await wait_committed(sink, events)
    events_at = time.monotonic()
    await wait_committed(sink, sessions)
    sessions_at = time.monotonic()
    await sink.stop()

    assert sessions_at - produced >= 1.5  # its first row was read after it was produced
    assert events_at < sessions_at
    assert one(ch_client, f"SELECT count() FROM {db}.events FINAL")[0] == 20
    assert one(ch_client, f"SELECT count() FROM {db}.sessions FINAL")[0] == 1
