"""Bad input through the real pipeline: each gets its clear 4xx or dead-letter record,
the process keeps serving, and the valid events beside it all arrive in ClickHouse."""

import base64
import gzip
import time
import uuid

import orjson
import pytest

from tests.support.pipeline import WRITE_KEY, http

pytestmark = pytest.mark.integration


def event(**overrides) -> dict:
    base = {
        "type": "track",
        "event": "Product Added",
        "messageId": f"ok-{uuid.uuid4()}",
        "anonymousId": "bad-input-visitor",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "properties": {
            "product_id": "p1",
            "sku": "S1",
            "price": 10.0,
            "quantity": 1,
            "currency": "USD",
        },
    }
    base.update(overrides)
    return base


def count_ids(pipeline, table: str, ids: list[str]) -> list[list]:
    id_list = ",".join(f"'{i}'" for i in ids)
    return pipeline.sql(
        f"SELECT count(), uniqExact(message_id) FROM clickstream.{table} FINAL WHERE message_id IN ({id_list})"
    )


def test_mixed_batch_valid_arrive_invalid_dead_lettered(pipeline):
    good = [event() for _ in range(5)]
    bad = [
        event(
            messageId=f"bad-{uuid.uuid4()}", properties={"product_id": 42, "price": "ten"}
        ),  # wrong types
        event(
            messageId=f"bad-{uuid.uuid4()}", properties={"currency": "dollars"}
        ),  # a property of the wrong form (no property is required: Segment's spec)
        event(messageId=f"bad-{uuid.uuid4()}", anonymousId=None, userId=None),  # no identity
        event(
            messageId=f"bad-{uuid.uuid4()}", properties={"product_id": "p", "blob": "x" * 40_000}
        ),  # > 32 KB
    ]
    status, answer = pipeline.post("/v1/batch", {"batch": good[:3] + bad + good[3:]})
    assert status == 200, answer
    assert (answer["accepted"], answer["rejected"]) == (5, 4)
    assert sorted(e["index"] for e in answer["errors"]) == [3, 4, 5, 6]
    assert all(e["reasons"] for e in answer["errors"])
    good_ids = [e["messageId"] for e in good]
    bad_ids = [e["messageId"] for e in bad]
    pipeline.wait_for(
        "SELECT count() FROM clickstream.events FINAL WHERE message_id IN ({})".format(
            ",".join(f"'{i}'" for i in good_ids)
        ),
        [[5]],
    )
    pipeline.wait_for(
        "SELECT count() FROM clickstream.invalid_events FINAL WHERE message_id IN ({})".format(
            ",".join(f"'{i}'" for i in bad_ids)
        ),
        [[4]],
    )
    rows = pipeline.sql(
        f"SELECT reasons, payload FROM clickstream.invalid_events FINAL WHERE message_id = '{bad_ids[0]}'"
    )
    reasons, payload = rows[0]
    assert any("price" in r for r in reasons)
    assert orjson.loads(payload)["messageId"] == bad_ids[0]


@pytest.mark.parametrize(
    ("raw", "headers", "status", "needle"),
    [
        (b'{"batch": [{"type": "track"', {}, 400, "JSON"),
        (b'{"batch": [{"type": "track", "event": "\xff\xfe"}]}', {}, 400, "UTF-8"),
        (b'{"batch": "nope"}', {}, 400, "batch"),
        (b"x" * (2 * 1024 * 1024), {}, 413, "500 KB"),
        (
            b'{"batch": [{"type":"track","event":"X","anonymousId":"a"}]}',
            {"Authorization": ""},
            401,
            "write key",
        ),
        (
            b'{"batch": [{"type":"track","event":"X","anonymousId":"a"}]}',
            {"Authorization": "Basic " + base64.b64encode(b"wrong-key:").decode()},
            401,
            "unknown write key",
        ),
    ],
)
def test_bad_requests_get_clear_4xx(pipeline, raw, headers, status, needle):
    got, answer = pipeline.post("/v1/batch", None, headers=headers, raw=raw)
    assert got == status, answer
    assert needle.lower() in answer["error"].lower()
    # ...and the collector keeps serving
    ok, answer = pipeline.post("/v1/batch", {"batch": [event()]})
    assert ok == 200, answer


def test_ten_thousand_event_batch_is_refused_whole(pipeline):
    batch = [event(messageId=f"big-{i}") for i in range(10_000)]
    status, answer = pipeline.post("/v1/batch", {"batch": batch})
    assert status == 413 and "500 KB" in answer["error"]


def test_gzip_and_beacon_bodies(pipeline):
    e1, e2 = event(), event()
    status, answer = pipeline.post(
        "/v1/batch",
        None,
        headers={"Content-Encoding": "gzip"},
        raw=gzip.compress(orjson.dumps({"batch": [e1]})),
    )
    assert (status, answer["accepted"]) == (200, 1), answer
    # sendBeacon: text/plain, write key in the body, no Authorization header
    status, answer = http(
        "POST",
        pipeline.collector + "/v1/batch",
        orjson.dumps({"batch": [e2], "writeKey": WRITE_KEY}),
        {"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.example"},
    )
    assert (status, answer["accepted"]) == (200, 1), answer
    pipeline.wait_for(
        f"SELECT count() FROM clickstream.events FINAL WHERE message_id IN ('{e1['messageId']}', '{e2['messageId']}')",
        [[2]],
    )


def test_single_call_endpoints(pipeline):
    for path, call in [
        ("/v1/track", event()),
        (
            "/v1/page",
            {"anonymousId": "a1", "name": "Home", "properties": {"url": "https://shop.example/"}},
        ),
        ("/v1/identify", {"anonymousId": "a1", "userId": "u1", "traits": {"plan": "gold"}}),
        ("/v1/alias", {"previousId": "a1", "userId": "u1"}),
    ]:
        status, answer = pipeline.post(path, call)
        assert status == 200 and answer["accepted"] == 1, (path, answer)
    status, answer = pipeline.post("/v1/track", {"anonymousId": "a1"})
    assert status == 400 and answer["rejected"] == 1


def test_cors_preflight(pipeline):
    status, _ = http(
        "OPTIONS",
        pipeline.collector + "/v1/batch",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 204
