"""The Rust validator's quick yes never changes a verdict: with it and without it, every
call gets the same reasons (fixtures, edge values where Python and Rust could differ,
and generated Segment-like calls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.collector.validate import Validator
from stream.config import REPO_ROOT

pytestmark = pytest.mark.unit

SCHEMAS = REPO_ROOT / "schemas"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
RECEIVED = 1_714_557_600_000  # 2024-05-01T10:00:00Z
INDEX = json.loads((SCHEMAS / "events" / "index.json").read_text())
EVENT_NAMES = sorted(INDEX["events"])

QUICK = Validator(SCHEMAS)
FULL = Validator(SCHEMAS, quick=False)


def _same(call: object) -> list[str]:
    quick = QUICK.validate(call, received_at_ms=RECEIVED)
    assert quick == FULL.validate(call, received_at_ms=RECEIVED)
    return quick


def test_the_quick_check_is_in_use() -> None:
    assert QUICK._quick_envelope is not None
    assert set(QUICK._quick_events) == set(INDEX["events"])
    assert set(QUICK._quick_tracks) == set(INDEX["events"])


@pytest.mark.parametrize(
    "path", sorted(FIXTURES.glob("*/*.json")), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_fixtures_get_the_same_reasons(path: Path) -> None:
    call = json.loads(path.read_text())
    call.pop("_expect", None)
    _same(call)


BASE = {
    "type": "track",
    "event": "Product Viewed",
    "anonymousId": "a1",
    "timestamp": "2024-05-01T09:59:00Z",
}
EDGES = [
    # currency: `$` is end of text in both (fastjsonschema rewrites it to \Z)
    {"properties": {"currency": "USD\n"}},
    {"properties": {"currency": "ÜSD"}},
    {"properties": {"currency": "usd"}},
    # numbers: bools are not numbers, 3.0 is an integer, huge and negative values
    {"properties": {"price": True}},
    {"properties": {"quantity": 3.0}},
    {"properties": {"quantity": 3.5}},
    {"properties": {"quantity": 0}},
    {"properties": {"price": -0.0}},
    {"properties": {"price": 2**63 - 1}},
    {"properties": {"price": 1e308}},
    # lengths count code points, astral ones included
    {"anonymousId": "𝕏" * 200},
    {"anonymousId": "𝕏" * 201},
    {"anonymousId": "e\u0301" * 100},
    {"messageId": "\x00" * 200},
    {"anonymousId": ""},
    {"anonymousId": None, "userId": "u"},
    {"anonymousId": None},
    {"type": "alias", "previousId": ""},
    {"type": "alias", "previousId": "p"},
    {"type": "Track"},
    {"event": ""},
    {"event": 1},
    {"properties": None},
    {"properties": []},
    {"properties": "x"},
    {"context": {"page": {"url": 1}}},
    {"context": {"ip": "1" * 65}},
    {"context": None},
    {"groupId": 12.5},
    {"groupId": True},
    {"timestamp": "not a date"},
    # values JSON cannot carry: the Rust side refuses them, the full check decides
    {"properties": {"price": 2**70}},
    {"properties": {"tags": (1, 2)}},
    {"properties": {1: "x"}},
    {"context": {"page": {"url": b"bytes"}}},
]


@pytest.mark.parametrize("change", EDGES, ids=lambda c: json.dumps(c, default=repr)[:60])
def test_edge_values_get_the_same_reasons(change: dict) -> None:
    _same({**BASE, **change})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


def mostly(*good: object, junk: st.SearchStrategy = json_values) -> st.SearchStrategy:
    """Plausible values nine times in ten (so many calls are valid), junk otherwise."""
    good_values = st.sampled_from(good)
    return st.integers(0, 9).flatmap(lambda roll: junk if roll == 0 else good_values)


plain = mostly("p1", "", "x" * 201, 0, 1, -1, 1.5, 3.0, 2**40, None, "USD", "usd", "US")
product = st.dictionaries(
    st.sampled_from(["product_id", "sku", "price", "quantity", "name", "position"]),
    plain,
    max_size=4,
)
properties = st.dictionaries(
    st.sampled_from(
        ["product_id", "sku", "price", "quantity", "currency", "value", "order_id", "total",
         "revenue", "query", "rating", "coupon", "name", "step", "position", "list_id"]
    ),
    plain,
    max_size=5,
) | st.fixed_dictionaries(
    {"products": st.lists(product, max_size=3) | plain}, optional={"order_id": plain}
)  # fmt: skip
context = st.fixed_dictionaries(
    {},
    optional={
        "ip": mostly("203.0.113.7", "1" * 65, None),
        "userAgent": mostly("Mozilla/5.0", None),
        "page": st.dictionaries(
            st.sampled_from(["url", "path", "referrer", "title", "search"]),
            mostly("https://shop.example/?utm_source=x", "", None),
            max_size=3,
        ),
        "campaign": st.dictionaries(st.sampled_from(["source", "name"]), mostly("news", None)),
        "library": st.dictionaries(st.sampled_from(["name", "version"]), mostly("js", None)),
    },
)
calls = st.fixed_dictionaries(
    {
        "type": mostly("track", "track", "track", "page", "identify", "alias", "screen", "x"),
        "event": st.sampled_from(EVENT_NAMES) | mostly("Custom", "", None),
        "properties": properties | mostly(None, {}),
        "anonymousId": mostly("a1", "a1", "a1", "", None, "x" * 201),
    },
    optional={
        "userId": mostly("u1", "", None),
        "previousId": mostly("p1", ""),
        "messageId": mostly("m1", "x" * 201, None),
        "timestamp": mostly("2024-05-01T09:59:00Z", "2024-05-01T09:59:00+02:00", "2024", None),
        "sentAt": mostly("2024-05-01T10:00:00.123Z", None),
        "context": context | mostly(None, {}),
        "traits": mostly({"email": "x"}, None, []),
        "groupId": mostly("g1", 12, None),
    },
)


@settings(max_examples=600, deadline=None)
@given(calls)
def test_generated_calls_get_the_same_reasons(call: dict) -> None:
    _same(call)
