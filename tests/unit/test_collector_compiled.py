"""The collector's compiled modules (stream/compiled.py) give the pure modules' outputs,
byte for byte: thousands of generated calls (every call type, wrong-typed and missing
fields, bad and far dates, campaign objects, consent values, both IP modes, oversized
and non-object calls, bad requests) go through intake and `Acceptor.sort` in a compiled
and in a pure interpreter; the records' bytes, dead letters, errors and refusals must be
the same. Run as a module, it prints one JSON line per output."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

import orjson
import pytest

from stream import compiled

pytestmark = pytest.mark.unit

RECEIVED = 1_714_557_600_000  # 2024-05-01T10:00:00Z
CALLS = 8_000
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
    "curl/8.4.0",
    "",
    7,
]  # fmt: skip
DATES = [
    "2024-05-01T09:59:00.123Z",
    "2024-05-01T09:59:00Z",
    "2024-05-01T11:59:00+02:00",
    "2024-05-01T09:59:00",
    "2024-05-01T09:59:00.123456789Z",
    "2024-05-03T10:00:00Z",  # > 24 h ahead
    "2024-05-01T10:30:00Z",  # ahead, within a day: clamped
    "1969-12-31T23:59:59Z",
    "2024-13-01T00:00:00Z",
    "yesterday",
    "",
    "٢٠٢٤-05-01T09:59:00Z",
    20240501,
    None,
]
URLS = [
    "https://shop.example/p/1?utm_source=News&utm_medium=Email&utm_campaign=spring",
    "https://shop.example/p/2?gclid=abc",
    "https://shop.example/p/3?fbclid=x&utm_term=t",
    "https://shop.example/p/4",
    "https://[::1/bad",
    "shop.example/nopath",
    "",
    3,
]
REFERRERS = [
    "https://www.google.co.uk/",
    "https://t.co/x",
    "https://shop.example/home",
    "https://news.example.org/a",
    "android-app://com.google.android.gm",
    "about:blank",
    "",
    None,
]
IPS = ["203.0.113.42", "2001:db8:abcd:12::1", "::ffff:198.51.100.7", "fe80::1%eth0", "junk", 5]
PREFERENCES = [
    None,
    {"analytics": True, "marketing": True},
    {"Analytics": True, "advertising": False},
    {"analytics": False},
    {"analytics": "yes", "marketing": True},
    {},
    "all",
]
TYPES = ["track", "track", "track", "page", "screen", "identify", "alias", "group", "Track", 4]
EVENTS = [
    "Product Viewed",
    "Order Completed",
    "Product Added",
    "Checkout Started",
    "Custom Thing",
    "",
    9,
]
JUNK = [None, 1, -2.5, True, "x", [], [1, "a"], {}, {"a": {"b": []}}, 2**70]


def _maybe(rng: random.Random, value: Any, junk: float = 0.1, absent: float = 0.1) -> Any:
    """`value`, else a junk value, else the marker for an absent field."""
    roll = rng.random()
    if roll < junk:
        return rng.choice(JUNK)
    if roll < junk + absent:
        return _ABSENT
    return value


_ABSENT = object()


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not _ABSENT:
        target[key] = value


def _call(rng: random.Random, i: int) -> Any:
    if rng.random() < 0.02:
        return rng.choice(JUNK)  # not an object at all
    call: dict[str, Any] = {}
    _put(call, "type", _maybe(rng, rng.choice(TYPES), 0.03, 0.02))
    _put(call, "event", _maybe(rng, rng.choice(EVENTS), 0.05, 0.05))
    _put(call, "name", _maybe(rng, f"Page {i % 7}", 0.05, 0.3))
    _put(call, "messageId", _maybe(rng, f"m-{i}", 0.05, 0.3))
    _put(call, "anonymousId", _maybe(rng, f"a-{i % 97}", 0.05, 0.1))
    _put(call, "userId", _maybe(rng, f"u-{i % 13}", 0.05, 0.6))
    _put(call, "previousId", _maybe(rng, f"p-{i % 5}", 0.05, 0.7))
    for field in ("timestamp", "sentAt", "originalTimestamp"):
        _put(call, field, _maybe(rng, rng.choice(DATES), 0.02, 0.4))
    properties: dict[str, Any] = {}
    _put(properties, "product_id", _maybe(rng, f"p{i % 50}"))
    _put(properties, "price", _maybe(rng, rng.choice([19.99, 0, 5, -1, "9.99", 1e308])))
    _put(properties, "currency", _maybe(rng, rng.choice(["USD", "usd", "EURO", "ÜSD"])))
    _put(properties, "quantity", _maybe(rng, rng.choice([1, 3.0, 3.5, 0])))
    _put(properties, "order_id", _maybe(rng, f"o{i}", 0.05, 0.5))
    _put(properties, "revenue", _maybe(rng, 42.5, 0.05, 0.5))
    _put(properties, "products", _maybe(rng, [{"product_id": "p1", "price": 2}], 0.1, 0.6))
    _put(properties, "url", _maybe(rng, rng.choice(URLS), 0.05, 0.7))
    _put(properties, "path", _maybe(rng, "/from-props", 0.05, 0.8))
    _put(properties, "referrer", _maybe(rng, rng.choice(REFERRERS), 0.05, 0.8))
    _put(properties, "title", _maybe(rng, "Props title", 0.05, 0.8))
    _put(call, "properties", _maybe(rng, properties, 0.05, 0.05))
    context: dict[str, Any] = {}
    page: dict[str, Any] = {}
    _put(page, "url", _maybe(rng, rng.choice(URLS)))
    _put(page, "path", _maybe(rng, "/p", 0.05, 0.4))
    _put(page, "referrer", _maybe(rng, rng.choice(REFERRERS)))
    _put(page, "title", _maybe(rng, "Title", 0.05, 0.3))
    _put(page, "search", _maybe(rng, "?utm_source=search&gbraid=g", 0.05, 0.6))
    _put(context, "page", _maybe(rng, page, 0.05, 0.1))
    _put(context, "userAgent", _maybe(rng, rng.choice(AGENTS), 0.02, 0.2))
    _put(context, "ip", _maybe(rng, rng.choice(IPS), 0.02, 0.4))
    campaign = rng.choice(
        [{"source": "Fallback", "medium": "cpc", "name": "n"}, {"term": " t "}, {}, "x"]
    )
    _put(context, "campaign", _maybe(rng, campaign, 0.02, 0.7))
    prefs = rng.choice(PREFERENCES)
    if prefs is not None:
        context["consent"] = {"categoryPreferences": prefs} if rng.random() < 0.9 else prefs
    _put(context, "traits", _maybe(rng, {"email": "x@example.com"}, 0.05, 0.8))
    _put(call, "context", _maybe(rng, context, 0.05, 0.05))
    _put(call, "traits", _maybe(rng, {"plan": "pro", "n": 1}, 0.05, 0.7))
    if rng.random() < 0.01:
        call["properties"] = {"blob": "x" * 40_000}  # over 32 KB
    return call


BODIES = [
    b"",
    b"   ",
    b"{",
    b"[]",
    b'"x"',
    b"\xff\xfe",
    b'{"batch": 1}',
    b'{"batch": []}',
    b'{"batch": [{"type": "track"}], "writeKey": 5}',
    b'{"type": "page", "writeKey": "dev-write-key"}',
    b'{"type": "identify"}',
    b'{"event": "x", "writeKey": "nope"}',
]
HEADERS = ["", "Basic ZGV2LXdyaXRlLWtleTo=", "Basic !!", "Bearer x", "basic ZGV2LXdyaXRlLWtleQ=="]


def outputs(seed: int = 15, n: int = CALLS) -> list[bytes]:
    """Every output of the collector's compiled modules for generated input, as bytes."""
    from stream.collector import intake
    from stream.collector.accept import Acceptor
    from stream.collector.consent import DAY_MS, ConsentRules, DailySalt
    from stream.collector.validate import Validator
    from stream.config import REPO_ROOT
    from stream.enrich import Enricher

    rng = random.Random(seed)
    out: list[bytes] = []
    validator = Validator(REPO_ROOT / "schemas")
    salt = DailySalt()
    salt.for_time(RECEIVED)
    salt._salt = b"s" * 32  # a fixed salt: cookieless ids comparable across runs
    rules = [
        ConsentRules(frozenset({"analytics"}), frozenset({"marketing", "advertising"})),
        ConsentRules(frozenset({"analytics"}), frozenset({"marketing"}), True, True),
    ]
    acceptors = [
        Acceptor(validator, Enricher(anonymize_ip=anonymize), rule, salt, 180_000)
        for anonymize in (True, False)
        for rule in rules
    ]
    for body in BODIES:
        for endpoint in ("batch", "track", "page"):
            for header in HEADERS:
                try:
                    parsed = intake.parse_json(intake.decode_body(body, ""))
                    source = intake.resolve_source(header, parsed, {"dev-write-key": "web"}, "")
                    calls, shared = intake.split_calls(parsed, endpoint)
                    out.append(orjson.dumps([source, [tuple(c) for c in calls], shared]))
                except intake.IntakeError as exc:
                    out.append(orjson.dumps([exc.status, exc.reason, exc.code]))
    done = 0
    while done < n:
        size = rng.choice([1, 1, 5, 20])
        batch = [_call(rng, done + k) for k in range(size)]
        done += size
        body: dict[str, Any] = {"batch": batch}
        if rng.random() < 0.3:
            body["sentAt"] = rng.choice(DATES)
        if rng.random() < 0.2:
            body["context"] = rng.choice([{"ip": "198.51.100.1", "library": {"name": "x"}}, 3])
        calls, shared = intake.split_calls(body, "batch")
        sorted_ = rng.choice(acceptors).sort(
            calls,
            shared,
            "web",
            RECEIVED,
            rng.choice(["192.0.2.10", ""]),
            rng.choice(["curl/8.4.0", AGENTS[0]]),
            rng.random() < 0.2,
            rng.random() < 0.1,
            None,
            {},
        )
        for record in (*sorted_.events, *sorted_.invalid, *sorted_.errors):
            out.append(orjson.dumps(record))
        out.append(orjson.dumps({"dropped": sorted_.dropped, "day": RECEIVED // DAY_MS}))
    return out


def _run(pure: bool) -> list[bytes]:
    environ = {k: v for k, v in os.environ.items() if k != compiled.PURE_PYTHON}
    environ["PYTHONPATH"] = str(compiled.REPO_ROOT)
    if pure:
        environ[compiled.PURE_PYTHON] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.test_collector_compiled"],
        cwd=compiled.REPO_ROOT,
        env=environ,
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    status, *lines = done.stdout.splitlines()
    assert status.startswith(b"pure" if pure else b"compiled"), status
    return lines


@pytest.mark.skipif(compiled.check() is not None, reason=f"no current build: {compiled.check()}")
def test_compiled_and_pure_collector_give_the_same_bytes():
    assert {"stream.collector.accept", "stream.collector.validate"} <= set(compiled.MODULES)
    pure, fast = _run(pure=True), _run(pure=False)
    assert len(pure) == len(fast)
    for i, (a, b) in enumerate(zip(pure, fast, strict=True)):
        assert a == b, f"output {i} differs:\npure     {a[:600]!r}\ncompiled {b[:600]!r}"
    # the generated input reaches every outcome
    text = b"\n".join(pure)
    for needle in (b'"stage":"collector"', b'"analytics_consent":false', b'"ip":"203.0.113.0"'):
        assert needle in text
    for needle in (b"larger than 32 KB", b"ISO-8601", b"in the future", b"cl-", b"must be"):
        assert needle in text, needle


def test_the_generated_outputs_are_reproducible_in_process():
    assert outputs(7, 200) == outputs(7, 200)


if __name__ == "__main__":
    print(compiled.STATUS)
    sys.stdout.flush()
    sys.stdout.buffer.write(b"\n".join(outputs()) + b"\n")
