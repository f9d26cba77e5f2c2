"""Consent through the real pipeline (embedded broker + chdb): what each choice stores
and emits. Without marketing consent a visitor's journey and metrics count but no
trigger is published; without analytics consent events are kept under a daily
cookieless id, with no user id, and identify and group calls are not stored."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.pipeline import http, prestart

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"


PIPELINE = prestart(__name__, "consent", CLICKSTREAM_HONOR_GPC="1")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    running = PIPELINE.take(tmp_path_factory)
    yield running
    running.stop_later()


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def purchase(visitor: str, start: int, prefs: dict | None) -> list[dict]:
    """A cart add and an order two hours ago, logged in as user-<visitor>."""
    calls = []
    for i, (kind, name) in enumerate(
        [
            ("identify", ""),
            ("group", ""),
            ("track", "Product Added"),
            ("track", "Order Completed"),
        ]
    ):
        # One browser per visitor (the cookieless id hashes network and browser); a
        # hex tag, as a name could look like a bot ("both").
        agent = f"{CHROME} build/{uuid.uuid5(uuid.NAMESPACE_URL, visitor).hex[:8]}"
        context: dict = {"userAgent": agent, "page": {"url": f"https://shop.example/{i}"}}
        if prefs is not None:
            context["consent"] = {"categoryPreferences": prefs}
        call = {
            "type": kind,
            "messageId": f"{visitor}-{i}",
            "anonymousId": visitor,
            "userId": f"user-{visitor}",
            "timestamp": iso(start + i * 20_000),
            "context": context,
        }
        if kind == "identify":
            call["traits"] = {"email": f"{visitor}@example.com"}
        elif kind == "group":
            call.update(groupId="acme", traits={"name": "Acme"})
        else:
            call.update(
                event=name,
                properties={"product_id": "p1", "price": 20.0, "quantity": 1, "currency": "EUR"}
                | ({"order_id": f"o-{visitor}", "revenue": 20.0} if "Order" in name else {}),
            )
        calls.append(call)
    return calls


def test_consent_decides_what_is_stored_and_emitted(pipeline):
    start = int(time.time() * 1000) - 2 * HOUR_MS
    run = uuid.uuid4().hex[:8]
    cases = {  # name -> (categoryPreferences or None, extra headers)
        "legacy": (None, {}),
        "analytics": ({"Analytics": True, "Marketing": False}, {}),
        "both": ({"Analytics": True, "Marketing": True}, {}),
        "gpc": ({"Analytics": True, "Marketing": True}, {"Sec-GPC": "1"}),
        "nothing": ({"Analytics": False, "Marketing": False}, {}),
        "marketing": ({"analytics": False, "advertising": True}, {}),
    }
    for name, (prefs, headers) in cases.items():
        batch = purchase(f"{name}-{run}", start, prefs)
        status, answer = pipeline.post("/v1/batch", {"batch": batch}, headers)
        # Identify and group without analytics consent are acknowledged, not stored.
        assert status == 200 and answer["accepted"] == 4, (name, answer)

    # Who each case became: the client's id, or a daily cookieless one.
    rows = _wait_rows(pipeline, run, len(cases))
    ids = {}
    for name, count, visitor, anonymous, user, identifies in rows:
        if name in ("nothing", "marketing"):
            assert (count, identifies, user) == (2, 0, ""), name
            assert visitor.startswith("cl-") and anonymous == visitor, name
        else:
            assert (count, identifies, user) == (4, 2, f"user-{name}-{run}"), name
            assert visitor == f"{name}-{run}", name
        ids[name] = visitor
    assert ids["nothing"] != ids["marketing"]  # other browsers
    quoted = ", ".join(f"'{v}'" for v in ids.values())

    # Every journey counts: each visitor reached purchase with one order.
    pipeline.wait_for(
        "SELECT count(), sum(orders) FROM clickstream.visitors FINAL "
        f"WHERE visitor_id IN ({quoted}) AND stage = 'purchase'",
        [[len(cases), len(cases)]],
        timeout=40,
    )
    # Triggers only where marketing consent holds (GPC withdrew it).
    granted = sorted(ids[n] for n in ("legacy", "both", "marketing"))
    pipeline.wait_for(
        "SELECT visitor_id FROM clickstream.triggers FINAL "
        f"WHERE visitor_id IN ({quoted}) AND trigger = 'first_purchase' ORDER BY visitor_id",
        [[v] for v in granted],
        timeout=40,
    )
    # ... and metrics count every order (their rows are published on partition ticks).
    window_from = (start // 60_000) * 60
    pipeline.wait_for(
        "SELECT sum(orders) FROM clickstream.journey_metrics_1m FINAL "
        f"WHERE window_start >= toDateTime({window_from}) "
        f"AND window_start < toDateTime({window_from + 600})",
        [[len(cases)]],
        timeout=40,
    )
    time.sleep(1)  # nothing late: the withheld triggers stay away
    assert pipeline.sql(
        f"SELECT count() FROM clickstream.triggers WHERE visitor_id IN ({quoted}) "
        "AND trigger = 'first_purchase'"
    ) == [[3]]

    # Counted (any process's /metrics shows the worker's sum).
    _, body = http("GET", pipeline.collector + "/metrics")
    text = body.decode() if isinstance(body, bytes) else str(body)
    assert metric(text, "clickstream_consent_signals_total", signal="gpc") == 4  # events
    assert metric(text, "clickstream_consent_dropped_total", type="identify") == 2
    assert metric(text, "clickstream_consent_dropped_total", type="group") == 2
    assert metric(text, "clickstream_consent_cookieless_total", source="test") == 4
    assert metric(text, "clickstream_triggers_withheld_total", trigger="first_purchase") == 3


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples that carry these labels."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_rows(pipeline, run, cases, timeout=30.0):
    query = (
        "SELECT splitByChar('-', message_id)[1] AS name, count(), any(visitor_id), "
        "any(anonymous_id), max(user_id), countIf(type IN ('identify', 'group')) "
        f"FROM clickstream.events WHERE message_id LIKE '%-{run}-%' GROUP BY name ORDER BY name"
    )
    deadline = time.monotonic() + timeout
    while True:
        rows = pipeline.sql(query)
        if len(rows) == cases and sum(r[1] for r in rows) == 4 * 4 + 2 * 2:
            return rows
        assert time.monotonic() < deadline, (rows, pipeline.log_tail())
        time.sleep(0.25)
