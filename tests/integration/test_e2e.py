"""Foundation end to end: HTTP -> Kafka -> ClickHouse, exactly the events posted."""

import time
import uuid

import psutil
import pytest

from tests.support.pipeline import http, prestart

pytestmark = pytest.mark.integration


PIPELINE = prestart(__name__, "e2e")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A pipeline of its own: the last test stops it."""
    running = PIPELINE.take(tmp_path_factory)
    yield running
    running.stop()


def make_events(n: int, visitor_prefix: str = "v") -> list[dict]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return [
        {
            "type": "track",
            "event": "Product Viewed",
            "messageId": f"m-{uuid.uuid4()}",
            "anonymousId": f"{visitor_prefix}-{i % 7}",
            "timestamp": now,
            "properties": {"product_id": f"p{i}", "price": 9.5, "currency": "USD"},
            "context": {"page": {"url": f"https://shop.example/p/{i}", "path": f"/p/{i}"}},
        }
        for i in range(n)
    ]


def test_hundred_events_land_in_clickhouse_exactly_once(pipeline):
    events = make_events(100)
    for start in range(0, 100, 20):
        status, answer = pipeline.post("/v1/batch", {"batch": events[start : start + 20]})
        assert status == 200, answer
        assert answer["accepted"] == 20 and answer["rejected"] == 0
    ids = sorted(e["messageId"] for e in events)
    id_list = ",".join(f"'{i}'" for i in ids)
    pipeline.wait_for(
        f"SELECT count(), uniqExact(message_id) FROM clickstream.events FINAL WHERE message_id IN ({id_list})",
        [[100, 100]],
    )
    rows = pipeline.sql(
        f"SELECT message_id FROM clickstream.events FINAL WHERE message_id IN ({id_list}) ORDER BY message_id"
    )
    assert [r[0] for r in rows] == ids


def test_health_and_metrics_on_both_ports(pipeline):
    for base in (pipeline.collector, pipeline.api):
        status, body = http("GET", base + "/healthz")
        assert status == 200, body
        status, text = http("GET", base + "/metrics")
        assert status == 200
        assert b"clickstream_events_received_total" in text
    status, text = http("GET", pipeline.api + "/metrics")
    assert b"clickstream_sink_rows_written_total" in text


def test_run_stops_within_ten_seconds_and_leaves_no_child(pipeline):
    """Stops the module's pipeline (after the traffic of the tests above): keep it last."""
    running = pipeline
    children = psutil.Process(running.process.pid).children(recursive=True)
    assert children, "run should have child processes"
    elapsed = running.stop()
    assert elapsed < 10, f"took {elapsed:.1f}s"
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, alive
