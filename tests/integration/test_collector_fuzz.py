"""Generated payloads against the real collector (`/v1/batch` of a running pipeline).

Batches of 1..30 items mix valid Segment calls with near-valid ones (wrong types,
missing fields, odd unicode, huge numbers, nested junk, null bytes, items that are
not objects), and raw bodies that are not JSON at all. Whatever comes in, the
collector answers without a 5xx, counts every item as accepted or rejected, keeps
serving, and ClickHouse ends up with exactly what it said it accepted (events) and
rejected (invalid_events).
"""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.examples import examples
from tests.support.pipeline import WRITE_KEY, basic_auth, http

pytestmark = pytest.mark.integration

MAX_REQUEST_BYTES = 500 * 1024  # Segment's limit, as the collector enforces it
# CLICKSTREAM_FUZZ_EXAMPLES=2000 for a longer hunt; by default a share of 150, as for every
# property test (tests/support/examples.py: 38 in `make test`, 150 with
# CLICKSTREAM_HYPOTHESIS=full)
EXAMPLES = int(os.environ.get("CLICKSTREAM_FUZZ_EXAMPLES", "0")) or examples(150)
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ examples replayed against another pipeline
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------- JSON pieces

NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202e\u2066rtl",
    "e\u0301\u0301\u0301",
    "\ufeff",
    "\uffff",
    "🛒" * 50,
    "𝕏" * 10,
    "\\u0000",
    "'; DROP TABLE clickstream.events; --",
    "null",
    "{}",
    "x" * 300,
]
NASTY_URLS = [
    "http://[::1",
    "http://[",
    "//",
    "http://a:99999999/",
    "javascript:alert(1)",
    "http://例え.jp/パス?q=1&utm_source=%FF%FE#x",
    "https://shop.example/?utm_source=\x00&gclid=" + "g" * 500,
    "https://shop.example/" + "%" * 100,
    "mailto:someone@example.com",
]
NASTY_NUMBERS = [
    0,
    -1,
    2**53 + 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**30,
    -(10**30),
    1e308,
    -1e308,
    5e-324,
    -0.0,
]

text = st.text(max_size=40) | st.sampled_from(NASTY_TEXT)
number = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(NASTY_NUMBERS)
)
leaf = st.none() | st.booleans() | number | text
junk = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
properties = st.dictionaries(text, junk, max_size=6)
non_empty_id = st.text(min_size=1, max_size=60) | st.sampled_from(["a\x00b", "🛒", "\u202eid"])


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def now_ms() -> int:
    return int(time.time() * 1000)


valid_timestamp = st.one_of(
    st.none(),
    st.integers(min_value=-7 * 86_400_000, max_value=3_600_000).map(lambda d: iso(now_ms() + d)),
    st.just("2001-02-03T04:05:06.789+05:30"),
    st.just("2020-02-29T23:59:59.123456789Z"),
)
context = st.fixed_dictionaries(
    {},
    optional={
        "ip": st.sampled_from(
            ["203.0.113.9", "2001:db8::1", "999.1.1.1", "::ffff:1.2.3.4", "", "x"]
        ),
        "userAgent": text
        | st.sampled_from(["Mozilla/5.0 (X11; Linux) HeadlessChrome/120", "curl/8"]),
        "locale": text,
        "page": st.fixed_dictionaries(
            {},
            optional={
                "url": st.sampled_from(NASTY_URLS) | text,
                "path": text,
                "referrer": st.sampled_from(NASTY_URLS) | text,
                "title": text,
                "search": st.sampled_from(["?utm_source=x&utm_medium=%", "?gclid=", "?", "&&=="]),
            },
        ),
        "campaign": st.fixed_dictionaries(
            {}, optional={"source": text, "medium": text, "name": text}
        ),
        "library": st.fixed_dictionaries({"name": text, "version": text}),
        "custom": junk,
    },
)


@st.composite
def valid_call(draw) -> dict:
    """A call the envelope accepts: custom track events, page, screen, identify, alias."""
    kind = draw(st.sampled_from(["track", "page", "screen", "identify", "alias"]))
    call: dict = {"type": kind}
    ids = draw(st.sampled_from(["anonymousId", "userId", "both"]))
    if ids in ("anonymousId", "both"):
        call["anonymousId"] = draw(non_empty_id)
    if ids in ("userId", "both") or kind == "alias":
        call["userId"] = draw(non_empty_id)
    if kind == "track":
        call["event"] = "Fuzz " + draw(st.text(max_size=60))
        call["properties"] = draw(properties)
    elif kind in ("page", "screen"):
        call["name"] = draw(st.none() | st.text(max_size=80))
        call["properties"] = draw(properties)
    elif kind == "identify":
        call["traits"] = draw(properties)
    else:
        call["previousId"] = draw(non_empty_id)
    stamp = draw(valid_timestamp)
    if stamp is not None:
        call["timestamp"] = stamp
    if draw(st.booleans()):
        call["context"] = draw(context)
    if draw(st.booleans()):
        call["integrations"] = draw(junk)
    return call


ECOMMERCE = [
    ("Product Viewed", {"product_id": "p1", "price": 9.5, "currency": "USD"}),
    ("Product Added", {"product_id": "p1", "sku": "S1", "price": 1.0, "quantity": 1}),
    ("Order Completed", {"order_id": "o1", "total": 10.0, "revenue": 10.0, "currency": "USD"}),
    ("Page Ping", {"engaged_seconds": 5}),
    ("Products Searched", {"query": "mug"}),
]


def _set(call: dict, key: str, value) -> dict:
    return {**call, key: value}


def _drop(call: dict, key: str) -> dict:
    return {k: v for k, v in call.items() if k != key}


@st.composite
def near_valid_call(draw) -> dict:
    """A valid call with one thing wrong (or maybe not quite wrong: the collector decides)."""
    name, props = draw(st.sampled_from(ECOMMERCE))
    base = draw(valid_call())
    if draw(st.booleans()):
        base = {
            "type": "track",
            "event": name,
            "anonymousId": draw(non_empty_id),
            "properties": dict(props),
        }
    mutation = draw(
        st.sampled_from(
            [
                lambda c: _set(c, "type", draw(junk | st.sampled_from(["group", "TRACK", ""]))),
                lambda c: _drop(c, "type"),
                lambda c: _set(c, "event", draw(junk)),
                lambda c: _drop(c, "event"),
                lambda c: _drop(_drop(c, "anonymousId"), "userId"),
                lambda c: _set(c, "anonymousId", draw(junk)),
                lambda c: _set(c, "userId", draw(junk)),
                lambda c: _set(c, "userId", "u" * 201),
                lambda c: _set(c, "properties", draw(junk)),
                lambda c: _set(c, "traits", draw(junk)),
                lambda c: _set(c, "context", draw(junk)),
                lambda c: _set(c, "context", {"page": draw(junk), "campaign": draw(junk)}),
                lambda c: _set(c, "previousId", draw(junk)),
                lambda c: _set(
                    c,
                    "timestamp",
                    draw(
                        junk
                        | st.sampled_from(
                            [
                                "2024-13-45T00:00:00Z",
                                "9999-12-31T23:59:59Z",
                                "0001-01-01T00:00:00Z",
                                "1969-12-31T23:59:59Z",
                                "yesterday",
                                "2024-01-01T00:00:00+25:00",
                                "2" * 64,
                            ]
                        )
                    ),
                ),
                lambda c: _set(c, "sentAt", draw(junk | st.just("1970-01-01T00:00:00Z"))),
                lambda c: _set(c, "originalTimestamp", draw(junk)),
                lambda c: _set(
                    c,
                    "properties",
                    {**_as_dict(c.get("properties")), draw(text): draw(junk), "price": draw(junk)},
                ),
                lambda c: _set(c, "properties", _nested(draw(st.integers(1, 200)))),
                lambda c: _set(c, "properties", {"blob": "x" * draw(st.integers(8_000, 33_000))}),
                lambda c: {**c, **draw(st.dictionaries(text, junk, max_size=3))},
            ]
        )
    )
    return mutation(base)


def _as_dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _nested(depth: int) -> dict:
    value: object = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return {"deep": value}


not_an_object = st.none() | st.booleans() | number | text | st.lists(junk, max_size=3)


@dataclass(frozen=True)
class Item:
    payload: object
    valid: bool  # built to pass the envelope: the collector must accept it


ITEM_KINDS = {
    "valid": valid_call().map(lambda c: Item(c, True)),
    "near-valid": near_valid_call().map(lambda c: Item(c, False)),
    "not an object": not_an_object.map(lambda v: Item(v, False)),
}
# sampled_from spreads evenly where one_of would favour the simplest branch
item = st.sampled_from(["valid"] * 4 + ["near-valid"] * 3 + ["not an object"]).flatmap(
    ITEM_KINDS.__getitem__
)
shared_fields = st.fixed_dictionaries(
    {},
    optional={
        "sentAt": st.builds(lambda: iso(now_ms())),
        "context": st.fixed_dictionaries({"library": st.just({"name": "fuzz", "version": "1"})}),
        "integrations": junk,
    },
)
junk_shared = st.fixed_dictionaries(
    {}, optional={"sentAt": junk, "context": junk, "writeKey": junk, "extra": junk}
)


MESSAGE_ID_CHOICE = st.sampled_from(["ours"] * 8 + ["junk", "none"])


@dataclass
class Ledger:
    """What the collector said about each tracked messageId."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    serial: int = 0
    accepted: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    requests: int = 0
    items: int = 0
    statuses: Counter = field(default_factory=Counter)

    def new_id(self) -> str:
        self.serial += 1
        return f"fz-{self.run}-{self.serial}"


def encode(body: dict) -> bytes:
    # stdlib json: orjson cannot write integers beyond 64 bits, and we send them
    return json.dumps(body, ensure_ascii=False).encode()


def post_raw(pipeline, raw: bytes, headers: dict | None = None):
    return http(
        "POST",
        pipeline.collector + "/v1/batch",
        raw,
        {"Content-Type": "application/json", **basic_auth(), **(headers or {})},
        timeout=30,
    )


def assert_still_serving(pipeline) -> None:
    status, answer = http("GET", pipeline.collector + "/healthz")
    assert status == 200, answer
    call = {"type": "track", "event": "Fuzz Probe", "anonymousId": "fuzz-probe"}
    status, answer = post_raw(pipeline, encode({"batch": [call]}))
    assert (status, answer["accepted"]) == (200, 1), answer


def test_generated_batches_never_5xx_and_land_as_answered(pipeline):
    ledger = Ledger()
    started = time.monotonic()

    @FUZZ_SETTINGS
    @given(
        items=st.integers(1, 30).flatmap(lambda n: st.lists(item, min_size=n, max_size=n)),
        shared=st.tuples(st.just(True), shared_fields) | st.tuples(st.just(False), junk_shared),
        data=st.data(),
    )
    def check(items: list[Item], shared: tuple[bool, dict], data) -> None:
        harmless_shared, shared_body = shared
        payloads, ids, must_accept = [], {}, set()
        for index, it in enumerate(items):
            payload = it.payload
            choice = data.draw(MESSAGE_ID_CHOICE) if isinstance(payload, dict) else None
            if choice == "ours":
                ids[index] = ledger.new_id()
                payload = {**payload, "messageId": ids[index]}
            elif choice == "junk":  # a messageId of the wrong kind, or too long
                payload = {**payload, "messageId": data.draw(junk | st.just("m" * 201))}
            elif choice == "none":  # the collector derives one
                payload = {k: v for k, v in payload.items() if k != "messageId"}
            if it.valid and choice != "junk" and harmless_shared:
                must_accept.add(index)
            payloads.append(payload)
        raw = encode({**shared_body, "batch": payloads})
        status, answer = post_raw(pipeline, raw)
        ledger.requests += 1
        ledger.items += len(payloads)
        ledger.statuses[status] += 1
        assert status < 500, (status, answer)
        if len(raw) > MAX_REQUEST_BYTES:
            assert status == 413, (status, answer)
            return
        assert status in (200, 400), (status, answer)
        assert isinstance(answer, dict) and "accepted" in answer, (status, answer)
        assert answer["accepted"] + answer["rejected"] == len(payloads), answer
        assert (status == 400) == (answer["accepted"] == 0), (status, answer)
        assert answer["success"] == (answer["rejected"] == 0), answer
        errors = {error["index"]: error for error in answer.get("errors", [])}
        assert len(errors) == answer["rejected"], answer
        assert all(0 <= i < len(payloads) and errors[i]["reasons"] for i in errors), answer
        wrongly_refused = {i: (errors[i], payloads[i]) for i in must_accept & set(errors)}
        assert not wrongly_refused, wrongly_refused
        for index, message_id in ids.items():
            if index in errors:
                assert errors[index]["messageId"] == message_id, errors[index]
                ledger.rejected.add(message_id)
            else:
                ledger.accepted.add(message_id)

    check()
    assert_still_serving(pipeline)
    assert ledger.accepted and ledger.rejected, "the generator should produce both kinds"
    prefix = f"fz-{ledger.run}-"
    pipeline.wait_for(
        "SELECT count(), uniqExact(message_id) FROM clickstream.events FINAL "
        f"WHERE startsWith(message_id, '{prefix}')",
        [[len(ledger.accepted), len(ledger.accepted)]],
        timeout=45,
    )
    pipeline.wait_for(
        "SELECT count(), uniqExact(message_id) FROM clickstream.invalid_events FINAL "
        f"WHERE startsWith(message_id, '{prefix}')",
        [[len(ledger.rejected), len(ledger.rejected)]],
        timeout=45,
    )
    stored = pipeline.sql(
        f"SELECT message_id FROM clickstream.events FINAL WHERE startsWith(message_id, '{prefix}')"
    )
    assert {row[0] for row in stored} == ledger.accepted
    dead = pipeline.sql(
        "SELECT message_id, stage FROM clickstream.invalid_events FINAL "
        f"WHERE startsWith(message_id, '{prefix}')"
    )
    assert {row[0] for row in dead} == ledger.rejected
    assert {row[1] for row in dead} == {"collector"}
    print(
        f"fuzz: {ledger.requests} requests of {ledger.items} items {dict(ledger.statuses)}, "
        f"tracked: {len(ledger.accepted)} accepted, "
        f"{len(ledger.rejected)} rejected, {time.monotonic() - started:.1f}s"
    )


# ---------------------------------------------------------------- raw bodies


@st.composite
def truncated_json(draw) -> bytes:
    calls = draw(st.lists(valid_call(), min_size=1, max_size=5))
    raw = encode({"batch": calls})
    return raw[: draw(st.integers(0, len(raw) - 1))]


SPECIAL_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b'{"batch": []}',
    b'{"batch": {}}',
    b'{"batch": null}',
    b'{"batch": [1e400]}',
    b'{"batch": [{"type": "track", "event": "\\ud800", "anonymousId": "a"}]}',
    b'{"batch": [{"type": "track", "event": "X", "anonymousId": "a", "properties": {"n": -1e400}}]}',
    b'{"batch": [{"type":"track","event":"X","anonymousId":"a"}]}\x00',
    b'\xef\xbb\xbf{"batch": [{"type":"track","event":"X","anonymousId":"a"}]}',
    b'{"batch": [' + b"[" * 2000 + b"]" * 2000 + b"]}",
    b'{"batch": [{"type":"track","event":"X","anonymousId":"a","properties":'
    + b'{"a":' * 300
    + b"1"
    + b"}" * 300
    + b"}]}",
    b'{"batch": [{"type":"track","event":"X","anonymousId":"a","a":1,"a":2}]}',
    b'{"batch": [{"type":"track","event":"X","anonymousId":"a"}], "writeKey": 1}',
]

raw_body = st.one_of(
    st.binary(max_size=3000),
    truncated_json(),
    st.sampled_from(SPECIAL_BODIES),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=9).map(
        lambda s: (
            b'{"batch": [{"type": "track", "event": "%s", "anonymousId": "a"}]}'
            % s.encode("utf-8", "surrogatepass")
        )
    ),
)
encoding = st.sampled_from(["", "", "gzip", "deflate", "br", "GZIP", "gzip, deflate", "identity"])
content_type = st.sampled_from(
    ["application/json", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", ""]
)


def compress(body: bytes, how: str, mode: str) -> bytes:
    if mode == "plain" or how not in ("gzip", "deflate", "GZIP"):
        return body
    packed = gzip.compress(body) if how.lower() == "gzip" else zlib.compress(body)
    return packed[: len(packed) // 2] if mode == "truncated" else packed


def test_raw_bodies_never_5xx(pipeline):
    @settings(FUZZ_SETTINGS, max_examples=max(1, EXAMPLES * 4 // 5))
    @given(
        body=raw_body,
        how=encoding,
        mode=st.sampled_from(["compressed", "truncated", "plain"]),
        kind=content_type,
        auth=st.sampled_from(["basic", "body", "none"]),
    )
    def check(body: bytes, how: str, mode: str, kind: str, auth: str) -> None:
        headers = {"Content-Type": kind}
        if how:
            headers["Content-Encoding"] = how
        if auth == "body":
            headers["Authorization"] = ""
            body = body.replace(b'{"batch"', b'{"writeKey": "%s", "batch"' % WRITE_KEY.encode(), 1)
        elif auth == "none":
            headers["Authorization"] = ""
        status, answer = post_raw(pipeline, compress(body, how, mode), headers)
        assert status < 500, (status, answer)
        if status in (200, 400) and isinstance(answer, dict) and "accepted" in answer:
            assert answer["accepted"] + answer["rejected"] >= 1, answer
        else:
            assert 400 <= status < 500, (status, answer)
            assert isinstance(answer, dict) and answer.get("error"), (status, answer)

    check()
    assert_still_serving(pipeline)
