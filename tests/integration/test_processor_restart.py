"""A processor killed hard (SIGKILL) mid-stream and started again: every stage transition
of the reference run arrives, none is lost, and none is stored twice; every session is
intact. The reference is the same engine run in-process over the same events."""

import asyncio
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream import config
from stream.collector.normalize import to_record
from stream.enrich import Enricher
from stream.processor.engine import Engine, Record
from tests.support.workers import Cluster

pytestmark = pytest.mark.integration

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"
FLOW = [
    "page",
    "Product Viewed",
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Product Reviewed",
]


def make_events(visitors: int, now_ms: int) -> list[dict]:
    """Each visitor walks part of the funnel, two hours ago (old enough to be closed by the
    idle-partition tick), with a second visit 40 minutes later for some."""
    enricher = Enricher()
    product = {
        "product_id": "p1",
        "sku": "S1",
        "name": "Mug",
        "price": 10.0,
        "quantity": 1,
        "currency": "USD",
    }
    records = []
    for v in range(visitors):
        visitor = f"r-{v}"
        depth = 1 + v % len(FLOW)
        visits = 2 if v % 3 == 0 else 1
        for visit in range(visits):
            start = now_ms - 3 * 3_600_000 + visit * 40 * 60_000 + (v % 50) * 1000
            for i, name in enumerate(FLOW[:depth]):
                call = {
                    "messageId": f"{visitor}-{visit}-{i}",
                    "anonymousId": visitor,
                    "timestamp": "",
                    "context": {"userAgent": CHROME},
                }
                if name == "page":
                    call.update(
                        type="page", name="Home", properties={"url": "https://shop.example/"}
                    )
                elif name == "Order Completed":
                    call.update(
                        type="track",
                        event=name,
                        properties={
                            "order_id": f"o-{visitor}-{visit}",
                            "revenue": 10.0,
                            "currency": "USD",
                        },
                    )
                elif name == "Product Reviewed":
                    call.update(
                        type="track", event=name, properties={"product_id": "p1", "rating": 5}
                    )
                else:
                    call.update(type="track", event=name, properties=product)
                ts = start + i * 15_000
                call["timestamp"] = (
                    time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts / 1000))
                    + f".{ts % 1000:03d}Z"
                )
                records.append(
                    to_record(
                        call,
                        source="test",
                        received_at_ms=now_ms,
                        ip="203.0.113.9",
                        header_user_agent=CHROME,
                        enricher=enricher,
                    )
                )
    # In event-time order, as live traffic arrives: the partition watermark that closes
    # idle sessions follows event time, so no visitor's event trails it.
    records.sort(key=lambda r: (r["ts"], r["message_id"]))
    return records


def reference(records: list[dict]) -> tuple[set[str], set[str]]:
    engine = Engine(config.load({}))
    states: dict[str, bytes] = {}
    keys, sessions = set(), set()
    for offset, event in enumerate(records):
        result = engine.run(
            [Record("clickstream.events", 0, offset, None, orjson.dumps(event))], states.get
        )
        states.update(result.states)
        for out in result.outputs:
            value = orjson.loads(out.value)
            if out.topic == "journey.stage-changes":
                keys.add(value["idempotency_key"])
            elif out.topic == "journey.sessions":
                sessions.add(value["session_id"])
    return keys, sessions


async def produce(bootstrap: str, records: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for r in records:
            await producer.send("clickstream.events", orjson.dumps(r), key=r["visitor_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


def wait_count(cluster: Cluster, query: str, predicate, timeout: float, stall: float = 15.0) -> int:
    """Until predicate(count) holds; fails after `timeout`, or once the count has not
    moved for `stall` seconds (nothing more is coming)."""
    deadline = time.monotonic() + timeout
    value, moved_at = -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - moved_at < stall:
        latest = cluster.sql(query)[0][0]
        if latest != value:
            value, moved_at = latest, time.monotonic()
        if predicate(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{query} stuck at {value}\n{cluster.logs()}")


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_sigkill_mid_stream_loses_and_doubles_nothing(tmp_path, store):
    now_ms = int(time.time() * 1000)
    records = make_events(2000, now_ms)
    expected_keys, expected_sessions = reference(records)
    cluster = Cluster(tmp_path)
    cluster.env["CLICKSTREAM_STATE_STORE"] = store
    try:
        cluster.start_broker()
        cluster.start_storage()
        asyncio.run(produce(cluster.bootstrap, records))
        cluster.wait_http(f"{cluster.api}/healthz")

        first = cluster.start_processor("processor-1")
        count = "SELECT count() FROM clickstream.stage_transitions FINAL"
        wait_count(cluster, count, lambda n: n >= len(expected_keys) // 5, timeout=60)
        cluster.kill(first)
        killed_at = cluster.sql(count)[0][0]
        assert killed_at < len(expected_keys), "the kill came too late to test anything"

        cluster.start_processor("processor-2")
        wait_count(cluster, count, lambda n: n >= len(expected_keys), timeout=120)
        time.sleep(2)  # anything emitted twice would land now

        stored = {
            row[0]
            for row in cluster.sql(
                "SELECT idempotency_key FROM clickstream.stage_transitions FINAL"
            )
        }
        assert stored == expected_keys
        raw, distinct = cluster.sql(
            "SELECT count(), uniqExact(idempotency_key) FROM clickstream.stage_transitions FINAL"
        )[0]
        assert raw == distinct == len(expected_keys)
        wait_count(
            cluster,
            "SELECT countIf(closed) FROM clickstream.sessions FINAL",
            lambda n: n >= len(expected_sessions),
            timeout=60,
        )
        sessions = {
            row[0] for row in cluster.sql("SELECT session_id FROM clickstream.sessions FINAL")
        }
        assert sessions == expected_sessions
        events_in_sessions = cluster.sql("SELECT sum(events) FROM clickstream.sessions FINAL")[0][0]
        assert events_in_sessions == len(records)
    finally:
        cluster.stop()
