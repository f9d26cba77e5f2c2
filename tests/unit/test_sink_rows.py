"""rows.py: topic record -> row, never an exception, the same record the same row."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream import config, topics
from stream.sink import rows
from stream.sink.rows import Record

pytestmark = pytest.mark.unit

BASE_MS = 1_767_225_600_000
ORIGIN = Record("clickstream.events", 2, 41, BASE_MS + 999)


def event(**changes) -> dict:
    record = {
        "message_id": "m1",
        "type": "track",
        "event": "Order Completed",
        "name": "",
        "visitor_id": "v1",
        "anonymous_id": "a1",
        "user_id": "u1",
        "previous_id": "",
        "ts": BASE_MS,
        "received_at": BASE_MS + 20,
        "sent_at": None,
        "source": "web",
        "url": "https://shop.example/checkout",
        "path": "/checkout",
        "referrer": "",
        "title": "Checkout",
        "properties": {"revenue": 25.5, "products": [{"sku": "a"}]},
        "traits": {},
        "context": {"locale": "de-DE"},
        "ip": "203.0.113.0",
        "user_agent": "UA",
        "browser": "Safari",
        "os": "iOS",
        "device_type": "mobile",
        "is_bot": False,
        "ref_source": "google",
        "ref_medium": "search",
        "search_engine": "google",
        "utm_source": "",
        "utm_medium": "",
        "utm_campaign": "",
        "utm_term": "",
        "utm_content": "",
        "click_id": "",
    }
    return {**record, **changes}


def as_dict(table: rows.Table, row: tuple) -> dict:
    assert len(row) == len(table.columns)
    return dict(zip(table.columns, row, strict=True))


def test_an_event_becomes_an_events_row():
    table, row = rows.to_row(rows.EVENTS, orjson.dumps(event()), ORIGIN)
    assert table is rows.EVENTS
    values = as_dict(table, row)
    assert values["message_id"] == "m1"
    assert values["ts"] == BASE_MS and values["sent_at"] is None
    assert orjson.loads(values["properties"]) == {"revenue": 25.5, "products": [{"sku": "a"}]}
    assert (values["_topic"], values["_partition"], values["_offset"]) == (
        "clickstream.events",
        2,
        41,
    )
    assert values["session_id"] == ""


def test_the_careful_path_gives_what_the_fast_path_gives():
    exact = rows.event_row(event(), ORIGIN)
    loose = rows.event_row(
        event(ts=str(BASE_MS), received_at=float(BASE_MS + 20), is_bot="false"), ORIGIN
    )
    assert loose == exact


def test_the_careful_path_fills_in_what_is_missing():
    record = event(visitor_id="", sent_at="2026-01-01T00:00:01Z")
    del record["received_at"], record["title"]
    values = as_dict(rows.EVENTS, rows.event_row(record, ORIGIN))
    assert values["visitor_id"] == "a1"  # anonymous id, then user id
    assert values["received_at"] == ORIGIN.timestamp
    assert values["sent_at"] == BASE_MS + 1000
    assert values["title"] == ""


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"null", "not a JSON object"),
        (orjson.dumps(event(message_id="")), "message_id: required"),
        (orjson.dumps(event(ts="last tuesday")), "ts:"),
        (orjson.dumps(event(is_bot="perhaps")), "is_bot:"),
        (orjson.dumps(event(ts=2**62)), "ts: time out of range"),
        (orjson.dumps(event(sent_at=-(2**62))), "sent_at: time out of range"),
    ],
)
def test_a_malformed_record_becomes_an_invalid_row(value, reason):
    table, row = rows.to_row(rows.EVENTS, value, ORIGIN)
    assert table is rows.INVALID_EVENTS
    values = as_dict(table, row)
    assert any(reason in r for r in values["reasons"]), values["reasons"]
    assert values["stage"] == "sink"
    assert values["payload"] == value.decode()
    assert values["received_at"] == ORIGIN.timestamp
    assert values["message_id"]


def test_the_same_bad_record_gets_the_same_id_and_keeps_its_message_id():
    first = rows.to_row(rows.EVENTS, b"garbage", ORIGIN)[1]
    again = rows.to_row(rows.EVENTS, b"garbage", Record(ORIGIN.topic, 0, 7, 1))[1]
    assert first[4] == again[4]
    bad_ts = rows.to_row(rows.EVENTS, orjson.dumps(event(ts=None)), ORIGIN)[1]
    assert bad_ts[4] == "m1" and bad_ts[1] == "web"


@given(
    st.dictionaries(
        st.sampled_from(["message_id", "ts", "type", "properties", "is_bot", "source", "sent_at"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=True),
            st.text(max_size=5),
            st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
        ),
    )
)
def test_no_record_raises(record):
    for table in rows.TABLES:
        out_table, row = rows.to_row(table, orjson.dumps(record), ORIGIN)
        assert len(row) == len(out_table.columns)


@given(st.binary(max_size=50))
def test_no_bytes_raise(value):
    table, row = rows.to_row(rows.SESSIONS, value, ORIGIN)
    assert len(row) == len(table.columns)


def test_a_record_twice_is_the_same_row_twice():
    for table, record in [
        (rows.EVENTS, event()),
        (rows.SESSIONS, {"session_id": "s", "started_at": BASE_MS, "version": 3}),
        (rows.STAGE_TRANSITIONS, {"idempotency_key": "k", "to_stage": "decision", "ts": BASE_MS}),
        (rows.TRIGGERS, {"idempotency_key": "k", "trigger": "cart_abandoned", "ts": BASE_MS}),
        (rows.VISITORS, {"visitor_id": "v", "first_seen": BASE_MS}),
        (rows.JOURNEY_METRICS_1M, {"window_start": BASE_MS, "visitors": 2}),
    ]:
        value = orjson.dumps(record)
        assert rows.to_row(table, value, ORIGIN) == rows.to_row(table, value, ORIGIN)
        assert rows.to_row(table, value, ORIGIN)[0] is table


def test_journey_rows_convert_and_default():
    session = as_dict(
        rows.SESSIONS,
        rows.SESSIONS.build({"session_id": "s", "started_at": BASE_MS, "pageviews": 2.0}, ORIGIN),
    )
    assert session["ended_at"] == BASE_MS  # falls back to started_at
    assert session["pageviews"] == 2 and session["bounce"] is False and session["version"] == 0
    trigger = as_dict(
        rows.TRIGGERS,
        rows.TRIGGERS.build(
            {
                "idempotency_key": "k",
                "trigger": "first_purchase",
                "ts": BASE_MS,
                "cart_items": [{"sku": "a"}],
                "last_product_viewed": None,
            },
            ORIGIN,
        ),
    )
    assert trigger["cart_items"] == b'[{"sku":"a"}]' and trigger["last_product_viewed"] == b"{}"
    window = as_dict(
        rows.JOURNEY_METRICS_1M,
        rows.JOURNEY_METRICS_1M.build({"window_start": BASE_MS, "revenue": 3}, ORIGIN),
    )
    assert window["window_start"] == BASE_MS // 1000 and window["revenue"] == 3.0


def test_journey_reasons_name_the_fields():
    with pytest.raises(rows.RowError) as missing:
        rows.STAGE_TRANSITIONS.build({"to_stage": "decision"}, ORIGIN)
    assert missing.value.reasons == ["idempotency_key: required", "ts: required"]
    with pytest.raises(rows.RowError) as wrong:
        rows.SESSIONS.build({"session_id": "s", "started_at": BASE_MS, "pageviews": 1.5}, ORIGIN)
    assert wrong.value.reasons == ["pageviews: not a whole number: 1.5"]


def test_an_invalid_record_from_the_collector_keeps_its_stage():
    record = {
        "received_at": BASE_MS,
        "source": "web",
        "reasons": ["event: too large"],
        "payload": "{...}",
        "message_id": "x1",
        "stage": "collector",
    }
    values = as_dict(
        rows.INVALID_EVENTS, rows.to_row(rows.INVALID_EVENTS, orjson.dumps(record), ORIGIN)[1]
    )
    assert (values["stage"], values["reasons"], values["message_id"]) == (
        "collector",
        ["event: too large"],
        "x1",
    )
    assert values["error"] == ""


def test_a_rejected_row_keeps_source_and_message_id():
    row = rows.event_row(event(), ORIGIN)
    values = as_dict(
        rows.INVALID_EVENTS,
        rows.rejected_row(rows.EVENTS, row, ORIGIN, b"{}", "Code: 321. out of range"),
    )
    assert (values["source"], values["message_id"], values["error"]) == (
        "web",
        "m1",
        "Code: 321. out of range",
    )
    assert values["reasons"] == ["events: rejected by ClickHouse"]


def test_every_topic_but_the_processors_own_has_a_table():
    settings = config.load({"CLICKSTREAM_TOPIC_PREFIX": "dev."})
    routes = rows.routes(settings)
    internal = {topics.IDENTITIES}
    changelogs = set(topics.changelog_topics(settings))  # the processor's state, archived
    assert set(routes) == {f"dev.{t}" for t in topics.ALL if t not in internal} | changelogs
    assert all(routes[t] is rows.PROCESSOR_STATE for t in changelogs)
    external = config.load({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})  # durable changelogs
    assert not set(topics.changelog_topics(external)) & set(rows.routes(external))
    assert routes["dev.journey.customers"] is rows.CUSTOMERS
    assert routes["dev.journey.metrics"] is rows.JOURNEY_METRICS_1M


def test_the_wire_path_gives_the_reference_row_or_steps_aside(monkeypatch):
    pytest.importorskip("msgspec")
    for record in (event(), event(sent_at=BASE_MS + 3, is_bot=True, session_id="s9")):
        value = orjson.dumps(record)
        assert rows.wire_event_row(value, ORIGIN) == rows.event_row(orjson.loads(value), ORIGIN)
    for odd in (
        event(properties=None),
        event(properties="already text"),
        event(ts=str(BASE_MS)),
        event(visitor_id=""),
        event(ts=2**62),
        event(is_bot=1),
    ):
        value = orjson.dumps(odd)
        assert rows.wire_event_row(value, ORIGIN) is None
        assert rows.to_row(rows.EVENTS, value, ORIGIN)[0] in (rows.EVENTS, rows.INVALID_EVENTS)
    assert rows.wire_event_row(b"{broken", ORIGIN) is None
    value = orjson.dumps(event())
    fast = rows.to_row(rows.EVENTS, value, ORIGIN)
    monkeypatch.setattr(rows, "msgspec", None)
    assert rows.wire_event_row(value, ORIGIN) is None
    assert rows.to_row(rows.EVENTS, value, ORIGIN) == fast


@given(
    st.dictionaries(
        st.sampled_from(["message_id", "visitor_id", "ts", "sent_at", "is_bot", "properties"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.text(max_size=3),
            st.dictionaries(st.text(max_size=2), st.integers(0, 9), max_size=2),
        ),
        max_size=3,
    )
)
def test_the_wire_path_never_disagrees(changes):
    pytest.importorskip("msgspec")
    value = orjson.dumps(event(**changes))
    fast = rows.wire_event_row(value, ORIGIN)
    if fast is not None:
        assert fast == rows.event_row(orjson.loads(value), ORIGIN)
