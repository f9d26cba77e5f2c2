"""Turn a validated Segment call into the EventRecord the collector publishes."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson

from stream.collector.clock import MAX_SKEW_MS, clamp, event_time
from stream.collector.consent import GRANTED, Consent
from stream.enrich import Enricher
from stream.records import EventRecord
from stream.telemetry import EVENTS_CLAMPED

# Namespace of generated message ids (uuid5): fixed forever, or retries stop deduplicating.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f0b7a8e-3c1d-5e2f-9a4b-7c8d9e0f1a2b")
# Left out of a call's identity: sentAt is restamped on every retry; messageId is empty here.
_NOT_IDENTITY = ("sentAt", "messageId")
_PAGE_KEYS = ("url", "path", "referrer", "title")


def to_record(
    call: dict[str, Any],
    *,
    source: str,
    received_at_ms: int,
    ip: str,
    header_user_agent: str,
    enricher: Enricher,
    max_skew_ms: int = MAX_SKEW_MS,
    consent: Consent = GRANTED,
) -> EventRecord:
    """The EventRecord of a call that passed `Validator.validate`.

    `ip` and `header_user_agent` come from the HTTP request and are used when
    the call's context does not name its own (server-side sources forward the
    visitor's). For `/v1/batch`, copy the batch's `sentAt` into each call first:
    analytics-python and others set it on the batch only. `consent` is the call's
    resolved consent; without analytics the call must already be `without_identity`.
    """
    context = _dict(call.get("context"))
    properties = _dict(call.get("properties"))
    kind = _text(call.get("type"))
    page = _page_fields(kind, properties, _dict(context.get("page")))
    client_ts, sent_at = event_time(call, received_at_ms)
    ts = clamp(client_ts, received_at_ms, max_skew_ms)
    if ts != client_ts:
        EVENTS_CLAMPED.labels(source).inc()
    anonymous_id, user_id = _text(call.get("anonymousId")), _text(call.get("userId"))
    record: dict[str, Any] = {
        "message_id": _text(call.get("messageId")) or derive_message_id(call, source),
        "type": kind,
        "event": _text(call.get("event")) if kind == "track" else "",
        "name": _text(call.get("name")) if kind in ("page", "screen") else "",
        "visitor_id": anonymous_id or user_id,
        "anonymous_id": anonymous_id,
        "user_id": user_id,
        "previous_id": _text(call.get("previousId")),
        "ts": ts,
        "client_ts": client_ts,
        "received_at": received_at_ms,
        "sent_at": sent_at,
        "source": source,
        **page,
        "properties": properties,
        "traits": _dict(call.get("traits")),
        "context": _without_ip(context),
        "ip": _text(context.get("ip")) or ip,
        "user_agent": _text(context.get("userAgent")) or header_user_agent,
        # Filled by the enricher.
        "browser": "",
        "os": "",
        "device_type": "",
        "is_bot": False,
        "ref_source": "",
        "ref_medium": "",
        "search_engine": "",
        "utm_source": "",
        "utm_medium": "",
        "utm_campaign": "",
        "utm_term": "",
        "utm_content": "",
        "click_id": "",
        "analytics_consent": consent.analytics,
        "marketing_consent": consent.marketing,
    }
    enricher.enrich(record)
    return record  # type: ignore[return-value]


def derive_message_id(call: Any, source: str) -> str:
    """A uuid5 of the source and the call's canonical JSON: a retried call gets the same id.

    `sentAt` is left out: SDKs restamp it on every retry.
    """
    if isinstance(call, dict):
        call = {k: v for k, v in call.items() if k not in _NOT_IDENTITY}
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{source}\n{_canonical_json(call)}"))


def _canonical_json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):  # ints beyond 64 bits, non-str keys
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )


def _page_fields(kind: str, properties: dict[str, Any], page: dict[str, Any]) -> dict[str, str]:
    fields = {key: _text(page.get(key)) for key in _PAGE_KEYS}
    if kind == "page":  # analytics.js sends page() arguments in properties, which win
        for key in _PAGE_KEYS:
            if own := _text(properties.get(key)):
                fields[key] = own
    if not fields["path"] and fields["url"]:
        with contextlib.suppress(ValueError):  # e.g. an unbalanced '[' in the host
            fields["path"] = urlsplit(fields["url"]).path
    return fields


def _without_ip(context: dict[str, Any]) -> dict[str, Any]:
    copy = dict(context)
    copy.pop("ip", None)
    return copy


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
