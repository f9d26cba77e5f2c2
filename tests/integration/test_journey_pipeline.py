"""Journeys through the real pipeline: stage changes, sessions, triggers, visitors and
metric windows arrive on their topics and in ClickHouse, each exactly once."""

import time
import uuid

import pytest

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def journey(visitor: str, start_ms: int, names: list[str]) -> list[dict]:
    """A visit two hours ago: old enough that the idle-partition tick closes it at once."""
    calls = []
    for i, name in enumerate(names):
        call = {
            "messageId": f"{visitor}-{i}",
            "anonymousId": visitor,
            "timestamp": iso(start_ms + i * 20_000),
            "context": {
                "userAgent": CHROME,
                "page": {
                    "url": f"https://shop.example/step/{i}?utm_source=news&utm_medium=email&utm_campaign=spring"
                },
            },
        }
        product = {
            "product_id": "p1",
            "sku": "S1",
            "name": "Mug",
            "price": 12.5,
            "quantity": 2,
            "currency": "USD",
        }
        if name == "page":
            call.update(type="page", name="Home")
        elif name == "Order Completed":
            call.update(
                type="track",
                event=name,
                properties={
                    "order_id": f"o-{visitor}",
                    "revenue": 25.0,
                    "currency": "USD",
                    "products": [product],
                },
            )
        elif name == "Checkout Started":
            call.update(
                type="track",
                event=name,
                properties={
                    "order_id": f"c-{visitor}",
                    "value": 25.0,
                    "currency": "USD",
                    "products": [product],
                },
            )
        else:
            call.update(type="track", event=name, properties=product)
        calls.append(call)
    return calls


def test_journeys_reach_clickhouse_with_triggers_and_metrics(pipeline):
    start = int(time.time() * 1000) - 2 * HOUR_MS
    buyer, abandoner, bouncer = (
        f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("buyer", "abandoner", "bouncer")
    )
    batch = (
        journey(
            buyer,
            start,
            ["page", "Product Viewed", "Product Added", "Checkout Started", "Order Completed"],
        )
        + journey(abandoner, start, ["page", "Product Viewed", "Product Added"])
        + journey(bouncer, start, ["page"])
    )
    status, answer = pipeline.post("/v1/batch", {"batch": batch})
    assert status == 200 and answer["accepted"] == len(batch), answer

    pipeline.wait_for(
        f"SELECT to_stage FROM clickstream.stage_transitions FINAL WHERE visitor_id = '{buyer}' ORDER BY ts, to_stage = 'purchase'",
        [["awareness"], ["consideration"], ["decision"], ["purchase"]],
        timeout=40,
    )
    # Sessions close once the partition's watermark passes them (an idle partition
    # lets the wall clock move it): each visitor has exactly one closed session.
    pipeline.wait_for(
        "SELECT visitor_id, closed, bounce, stage_reached, orders FROM clickstream.sessions FINAL "
        f"WHERE visitor_id IN ('{buyer}', '{abandoner}', '{bouncer}') ORDER BY visitor_id",
        sorted(
            [
                [abandoner, 1, 0, "decision", 0],
                [bouncer, 1, 1, "awareness", 0],
                [buyer, 1, 0, "purchase", 1],
            ]
        ),
        timeout=40,
    )
    pipeline.wait_for(
        "SELECT visitor_id, trigger FROM clickstream.triggers FINAL "
        f"WHERE visitor_id IN ('{buyer}', '{abandoner}', '{bouncer}') ORDER BY visitor_id, trigger",
        [[abandoner, "cart_abandoned"], [buyer, "first_purchase"]],
        timeout=40,
    )
    pipeline.wait_for(
        f"SELECT stage, orders, revenue FROM clickstream.visitors FINAL WHERE visitor_id = '{buyer}'",
        [["purchase", 1, 25.0]],
    )
    # Metric windows of those minutes were complete (watermark past them): their rows add
    # up to the same figures as the raw sessions.
    window_from = (start // 60_000) * 60
    rows = pipeline.wait_for(
        "SELECT sum(sessions), sum(orders), sum(revenue), sum(bounces), sum(carts_created) "
        f"FROM clickstream.journey_metrics_1m FINAL WHERE campaign = 'spring' AND window_start >= toDateTime({window_from}) "
        f"AND window_start < toDateTime({window_from + 600})",
        [[3, 1, 25.0, 1, 2]],
        timeout=40,
    )
    assert rows
    # Every record was written once: no duplicate keys.
    dupes = pipeline.sql(
        "SELECT count() - uniqExact(idempotency_key) FROM clickstream.stage_transitions "
        f"WHERE visitor_id IN ('{buyer}', '{abandoner}', '{bouncer}')"
    )
    assert dupes == [[0]]


def test_two_devices_of_one_user_merge_into_one_customer(pipeline):
    """A laptop buys first (with a campaign), a phone buys a day later; both identify as
    the same user, on whatever partitions their visitor ids hash to: one customer row,
    earliest first touch, counts added, the repeat order's stage."""
    start = int(time.time() * 1000) - 30 * HOUR_MS
    user = f"user-{uuid.uuid4().hex[:8]}"
    laptop, phone = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("laptop", "phone"))
    batch = journey(laptop, start, ["page", "Product Viewed", "Order Completed"])
    batch += journey(phone, start + 24 * HOUR_MS, ["page", "Order Completed"])
    for call in batch:
        call["userId"] = user
        if call["anonymousId"] == phone:  # the phone came without a campaign
            call["context"]["page"]["url"] = "https://shop.example/"
    status, answer = pipeline.post("/v1/batch", {"batch": batch})
    assert status == 200 and answer["accepted"] == len(batch), answer

    pipeline.wait_for(
        "SELECT user_id, devices, arraySort(visitor_ids), orders, revenue, sessions, "
        "first_utm_source, toUnixTimestamp64Milli(first_seen) "
        f"FROM clickstream.customers FINAL WHERE user_id = '{user}'",
        [[user, 2, sorted([laptop, phone]), 2, 50.0, 2, "news", start]],
        timeout=40,
    )
    # Each device keeps its own visitor row: the merge is the customer's.
    pipeline.wait_for(
        "SELECT visitor_id, orders FROM clickstream.visitors FINAL "
        f"WHERE user_id = '{user}' ORDER BY visitor_id",
        sorted([[laptop, 1], [phone, 1]]),
    )
