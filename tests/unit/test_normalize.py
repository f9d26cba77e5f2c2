"""Segment call -> EventRecord: event time, ids, page fields, context."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from stream.collector.clock import parse_iso_ms
from stream.collector.normalize import derive_message_id, to_record
from stream.enrich import Enricher
from stream.records import EventRecord

pytestmark = pytest.mark.unit

RECEIVED = parse_iso_ms("2024-05-01T10:00:00Z")
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"  # fmt: skip


def record(call: dict[str, Any], **overrides: Any) -> EventRecord:
    kwargs: dict[str, Any] = {
        "source": "web",
        "received_at_ms": RECEIVED,
        "ip": "198.51.100.23",
        "header_user_agent": "curl/8.4.0",
        "enricher": Enricher(),
    }
    return to_record(call, **(kwargs | overrides))


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Product Viewed", "anonymousId": "anon-1", **fields}


def test_record_has_exactly_the_contract_fields() -> None:
    rec = record(track(properties={"product_id": "p1"}))
    assert set(rec) == set(EventRecord.__annotations__)
    assert orjson.loads(orjson.dumps(rec)) == rec


@pytest.mark.parametrize(
    ("fields", "ts", "sent_at"),
    [
        # Client clock 1 h fast; the event waited 5 s on the device.
        (
            {"timestamp": "2024-05-01T10:59:55Z", "sentAt": "2024-05-01T11:00:00Z"},
            "2024-05-01T09:59:55Z",
            "2024-05-01T11:00:00Z",
        ),
        # Offsets and fractions: 12:00:00.250+02:00 is 10:00:00.250Z.
        (
            {"timestamp": "2024-05-01T11:59:59.250+02:00", "sentAt": "2024-05-01T12:00:00.5+02:00"},
            "2024-05-01T09:59:58.750Z",
            "2024-05-01T10:00:00.500Z",
        ),
        ({"timestamp": "2024-04-30T08:00:00.123Z"}, "2024-04-30T08:00:00.123Z", None),
        ({"originalTimestamp": "2024-04-30T08:00:00Z"}, "2024-04-30T08:00:00Z", None),
        ({"sentAt": "2024-05-01T09:00:00Z"}, "2024-05-01T10:00:00Z", "2024-05-01T09:00:00Z"),
        ({}, "2024-05-01T10:00:00Z", None),
    ],
)
def test_event_time_is_corrected_for_client_clock_skew(
    fields: dict[str, str], ts: str, sent_at: str | None
) -> None:
    rec = record(track(**fields))
    assert rec["ts"] == parse_iso_ms(ts)
    assert rec["sent_at"] == (parse_iso_ms(sent_at) if sent_at else None)
    assert rec["received_at"] == RECEIVED


def test_client_message_id_is_kept() -> None:
    assert record(track(messageId="ajs-next-123"))["message_id"] == "ajs-next-123"


def test_generated_message_id_is_deterministic() -> None:
    call = track(properties={"product_id": "p1", "price": 3}, timestamp="2024-05-01T09:00:00Z")
    first = record(call)["message_id"]
    assert record(copy.deepcopy(call))["message_id"] == first
    # Same content in another key order, or re-sent with a new sentAt: the same call.
    reordered = dict(reversed(list(call.items())))
    assert record(reordered)["message_id"] == first
    assert record(call | {"sentAt": "2024-05-01T09:00:07Z"})["message_id"] == first
    # Different content or another source: another event.
    assert record(call | {"event": "Product Clicked"})["message_id"] != first
    assert record(call, source="ios")["message_id"] != first
    assert record(call | {"messageId": ""})["message_id"] == first


def test_derive_message_id_survives_odd_json() -> None:
    assert derive_message_id({"n": 2**70}, "web") == derive_message_id({"n": 2**70}, "web")
    assert len(derive_message_id(["not", "a", "call"], "web")) == 36


def test_same_call_gives_the_same_record() -> None:
    call = track(
        properties={"product_id": "p1"}, context={"page": {"url": "https://shop.example/p?gclid=x"}}
    )
    assert record(call) == record(copy.deepcopy(call))


def test_page_call_takes_page_fields_from_properties_then_context() -> None:
    call = {
        "type": "page",
        "name": "Monopoly",
        "anonymousId": "anon-1",
        "properties": {"url": "https://shop.example.com/p/monopoly?x=1", "title": "Monopoly"},
        "context": {"page": {"referrer": "https://www.google.com/", "title": "Old title"}},
    }
    rec = record(call)
    assert (rec["event"], rec["name"]) == ("", "Monopoly")
    assert rec["url"] == "https://shop.example.com/p/monopoly?x=1"
    assert rec["path"] == "/p/monopoly"  # derived from the url when absent
    assert rec["title"] == "Monopoly"
    assert rec["referrer"] == "https://www.google.com/"


def test_track_call_takes_page_fields_from_context_only() -> None:
    page = {
        "url": "https://shop.example.com/cart",
        "path": "/cart",
        "referrer": "",
        "title": "Cart",
    }
    rec = record(track(properties={"url": "https://cdn.example/img.png"}, context={"page": page}))
    assert (rec["event"], rec["name"]) == ("Product Viewed", "")
    assert (rec["url"], rec["path"], rec["title"]) == (page["url"], "/cart", "Cart")


@pytest.mark.parametrize(
    ("call", "event", "name", "visitor", "previous"),
    [
        (track(userId="u1"), "Product Viewed", "", "anon-1", ""),
        ({"type": "identify", "userId": "u1", "anonymousId": None}, "", "", "u1", ""),
        ({"type": "alias", "userId": "u1", "previousId": "anon-1"}, "", "", "u1", "anon-1"),
        ({"type": "screen", "userId": "u1", "name": "Home", "event": "x"}, "", "Home", "u1", ""),
    ],
)
def test_ids_event_and_name_by_call_type(
    call: dict, event: str, name: str, visitor: str, previous: str
) -> None:
    rec = record(call)
    assert (rec["event"], rec["name"], rec["visitor_id"], rec["previous_id"]) == (
        event,
        name,
        visitor,
        previous,
    )


def test_context_ip_is_used_then_removed_and_anonymized() -> None:
    call = track(context={"ip": "203.0.113.77", "userAgent": CHROME, "locale": "fr-FR"})
    rec = record(call)
    assert rec["ip"] == "203.0.113.0"
    assert rec["context"] == {"userAgent": CHROME, "locale": "fr-FR"}
    assert call["context"]["ip"] == "203.0.113.77"  # the caller's call is not modified
    assert (rec["user_agent"], rec["browser"], rec["device_type"]) == (CHROME, "Chrome", "desktop")


def test_request_ip_and_header_user_agent_are_fallbacks() -> None:
    rec = record(track())
    assert rec["ip"] == "198.51.100.0"
    assert (rec["user_agent"], rec["browser"]) == ("curl/8.4.0", "curl")
    assert record(track(), enricher=Enricher(anonymize_ip=False))["ip"] == "198.51.100.23"


def test_nulls_from_sdks_become_empty_values() -> None:
    call = track(userId=None, properties=None, traits=None, context=None, name=None, messageId=None)
    rec = record(call)
    assert (rec["user_id"], rec["properties"], rec["traits"], rec["context"]) == ("", {}, {}, {})
    assert len(rec["message_id"]) == 36


@pytest.mark.unit
def test_client_clock_ahead_is_clamped_to_receive_time_plus_skew() -> None:
    from stream.collector.clock import clamp

    received = 1_700_000_000_000
    assert clamp(received + 5 * 3600_000, received, 180_000) == received + 180_000
    assert clamp(received - 10_000, received, 180_000) == received - 10_000
    assert clamp(received + 60_000, received, 180_000) == received + 60_000


def test_record_keeps_the_clients_time_and_counts_the_clamp() -> None:
    from stream.telemetry import EVENTS_CLAMPED

    before = EVENTS_CLAMPED.labels("web")._value.get()
    ahead = record(track(timestamp="2024-05-01T15:00:00Z"))  # 5 h ahead, no sentAt
    assert ahead["ts"] == RECEIVED + 180_000
    assert ahead["client_ts"] == RECEIVED + 5 * 3600_000
    assert EVENTS_CLAMPED.labels("web")._value.get() == before + 1
    fine = record(track(timestamp="2024-05-01T09:59:00Z"))
    assert fine["ts"] == fine["client_ts"] == RECEIVED - 60_000
