"""Typed records that travel between pipeline stages (JSON on Kafka, encoded with orjson).

These shapes are the contracts between modules: the collector produces `EventRecord`
on `clickstream.events` (key: `visitor_id`) and `InvalidRecord` on
`clickstream.invalid`; the processor consumes events and produces the journey
records; the sink writes them all to ClickHouse.

Times are integers in epoch milliseconds (UTC) on the wire: cheap to compare,
unambiguous, and what ClickHouse's DateTime64(3) takes.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import msgspec


class EventRecord(TypedDict):
    message_id: str  # client's messageId, or generated; the dedup key downstream
    type: str  # track | page | identify | alias | screen
    event: str  # track event name ("Product Viewed"); "" for other types
    name: str  # page / screen name; "" when absent
    visitor_id: str  # Kafka key: anonymous_id, else user_id
    anonymous_id: str
    user_id: str
    previous_id: str  # alias calls
    ts: int  # event time, ms, corrected for client clock skew (Segment's way), clamped
    # to at most received_at + CLICKSTREAM_MAX_CLOCK_SKEW_SECONDS
    client_ts: NotRequired[int]  # the client's event time before the clamp (== ts
    # unless clamped); records older than the clamp lack it
    received_at: int  # ms, collector clock
    sent_at: int | None  # ms, client clock, when the client sent it
    source: str  # source name behind the write key
    url: str
    path: str
    referrer: str
    title: str
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]  # the client's context, without ip
    # Enrichment (stream.enrich)
    ip: str  # anonymized unless configured otherwise
    user_agent: str
    browser: str
    os: str
    device_type: str  # desktop | mobile | tablet | bot | other
    is_bot: bool
    ref_source: str  # google, facebook, (direct), example.com ...
    ref_medium: str  # search | social | email | referral | internal | (none) | paid ...
    search_engine: str
    utm_source: str
    utm_medium: str
    utm_campaign: str
    utm_term: str
    utm_content: str
    click_id: str  # gclid / fbclid / msclkid / ...
    # Consent as the collector resolved it (stream/collector/consent.py); records
    # written before consent existed lack these keys: read them with .get(key, True).
    analytics_consent: NotRequired[bool]  # False: a daily cookieless id, no user id
    marketing_consent: NotRequired[bool]  # False: the visitor's triggers are withheld


class InvalidRecord(TypedDict):
    received_at: int  # ms
    source: str  # source name, "" when the write key was unknown
    reasons: list[str]  # human-readable, one per problem
    payload: str  # the original event (or body) as received, as text
    message_id: str  # dedup key: the client's messageId, else a hash of the payload
    stage: str  # where it failed: collector | processor | sink


# The processor's decoder of clickstream.events: as fast as orjson.loads and the same
# dicts, and it checks every field's JSON type and presence (a bool is not an integer),
# so an event off the contract is dead-lettered with the field named, alike in the
# compiled core (which would raise somewhere inside) and the pure one (which would keep
# the wrong type in the state). Read from the annotations, so this module is never
# compiled: mypyc keeps `int | None` there as `type` (stream/compiled.py).
EVENTS = msgspec.json.Decoder(EventRecord)
