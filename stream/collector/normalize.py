"""Turn a validated Segment call into the EventRecord the collector publishes."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson

from stream.collector.clock import MAX_SKEW_MS, corrected, parse_iso_ms
from stream.collector.consent import GRANTED, Consent
from stream.enrich import Enricher
from stream.records import EventRecord
from stream.telemetry import EVENTS_CLAMPED

# Namespace of generated message ids (uuid5): fixed forever, or retries stop deduplicating.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f0b7a8e-3c1d-5e2f-9a4b-7c8d9e0f1a2b")
# Left out of a call's identity: sentAt is restamped on every retry; messageId is empty here.
_NOT_IDENTITY = ("sentAt", "messageId")

# An EventRecord's fields in order. Each record starts as a copy of this presized dict: a
# 37-entry literal grows its table three times on the way (30 % slower).
_TEMPLATE: dict[str, Any] = dict.fromkeys(EventRecord.__annotations__)  # the record's order


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
    # Straight-line on purpose: this runs for every event (one dict built, in place).
    get = call.get
    context = get("context")
    if not isinstance(context, dict):
        context = {}
    properties = get("properties")
    if not isinstance(properties, dict):
        properties = {}
    kind = _text(get("type"))
    url, path, referrer, title = _page_fields(kind, properties, context.get("page"))
    # clock.event_time and clock.clamp, inline (parse_iso_ms is cached: validation parsed these)
    stamp = get("timestamp") or get("originalTimestamp")
    sent = get("sentAt")
    stamp_ms = parse_iso_ms(stamp) if isinstance(stamp, str) and stamp else None
    sent_at = parse_iso_ms(sent) if isinstance(sent, str) and sent else None
    client_ts = corrected(stamp_ms, sent_at, received_at_ms)
    ts = min(client_ts, received_at_ms + max_skew_ms)
    if ts != client_ts:
        EVENTS_CLAMPED.labels(source).inc()
    anonymous_id, user_id = _text(get("anonymousId")), _text(get("userId"))
    user_agent = _text(context.get("userAgent")) or header_user_agent
    (
        browser,
        os,
        device_type,
        is_bot,
        ref_source,
        ref_medium,
        search_engine,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
        click_id,
    ) = enricher.fields(user_agent, url, referrer, context)
    record = _TEMPLATE.copy()  # every field is set below, in the same order
    record["message_id"] = _text(get("messageId")) or derive_message_id(call, source)
    record["type"] = kind
    record["event"] = _text(get("event")) if kind == "track" else ""
    record["name"] = _text(get("name")) if kind in ("page", "screen") else ""
    record["visitor_id"] = anonymous_id or user_id
    record["anonymous_id"] = anonymous_id
    record["user_id"] = user_id
    record["previous_id"] = _text(get("previousId"))
    record["ts"] = ts
    record["client_ts"] = client_ts
    record["received_at"] = received_at_ms
    record["sent_at"] = sent_at
    record["source"] = source
    record["url"] = url
    record["path"] = path
    record["referrer"] = referrer
    record["title"] = title
    record["properties"] = properties
    record["traits"] = _dict(get("traits"))
    record["context"] = _without_ip(context)
    record["ip"] = enricher.ip(_text(context.get("ip")) or ip)
    record["user_agent"] = user_agent
    # Derived by the enricher (ENRICHED's order).
    record["browser"] = browser
    record["os"] = os
    record["device_type"] = device_type
    record["is_bot"] = is_bot
    record["ref_source"] = ref_source
    record["ref_medium"] = ref_medium
    record["search_engine"] = search_engine
    record["utm_source"] = utm_source
    record["utm_medium"] = utm_medium
    record["utm_campaign"] = utm_campaign
    record["utm_term"] = utm_term
    record["utm_content"] = utm_content
    record["click_id"] = click_id
    record["analytics_consent"] = consent.analytics
    record["marketing_consent"] = consent.marketing
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


def _page_fields(kind: str, properties: dict[str, Any], page: Any) -> tuple[str, str, str, str]:
    """(url, path, referrer, title) of context.page; a page call's own properties win."""
    if isinstance(page, dict):
        url, path = _text(page.get("url")), _text(page.get("path"))
        referrer, title = _text(page.get("referrer")), _text(page.get("title"))
    else:
        url = path = referrer = title = ""
    if kind == "page":  # analytics.js sends page() arguments in properties, which win
        url = _text(properties.get("url")) or url
        path = _text(properties.get("path")) or path
        referrer = _text(properties.get("referrer")) or referrer
        title = _text(properties.get("title")) or title
    if not path and url:
        with contextlib.suppress(ValueError):  # e.g. an unbalanced '[' in the host
            path = urlsplit(url).path
    return url, path, referrer, title


def _without_ip(context: dict[str, Any]) -> dict[str, Any]:
    copy = dict(context)
    copy.pop("ip", None)
    return copy


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
