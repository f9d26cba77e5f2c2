"""Consent: Segment's consent spec mapped to our purposes, the cookieless daily id, and
the journey rule that withholds triggers without marketing consent."""

from __future__ import annotations

import orjson
import pytest

from stream.collector.consent import (
    DAY_MS,
    Consent,
    ConsentRules,
    DailySalt,
    cookieless_id,
    preferences,
    resolve,
    without_identity,
)
from stream.collector.normalize import to_record
from stream.config import SettingsError, load
from stream.enrich import Enricher
from stream.journey import StageMachine, apply, decode_state, encode_state, tick
from stream.metrics import windows as w
from stream.metrics.observe import observe
from stream.sessionize.rules import SessionRules
from tests.golden.script import event

pytestmark = pytest.mark.unit

RULES = ConsentRules(
    analytics_categories=frozenset({"analytics", "performance"}),
    marketing_categories=frozenset({"marketing", "advertising"}),
)
MACHINE = StageMachine.load()
SESSIONS = SessionRules()
MIN = 60_000
T0 = 1_709_287_200_000


def call(prefs=None, **fields):
    c = {"type": "track", "event": "X", "anonymousId": "a1", **fields}
    if prefs is not None:
        c["context"] = {"consent": {"categoryPreferences": prefs}}
    return c


# --- the consent of a call ---------------------------------------------------------


def test_a_call_without_consent_keeps_todays_behaviour_unless_consent_is_required():
    assert resolve(call(), RULES) == Consent(True, True)
    required = ConsentRules(RULES.analytics_categories, RULES.marketing_categories, required=True)
    assert resolve(call(), required) == Consent(False, False)
    # A stated consent is read the same either way.
    assert resolve(call({"Analytics": True}), required) == Consent(True, False)


@pytest.mark.parametrize(
    ("prefs", "expected"),
    [
        ({}, (False, False)),  # stated, grants nothing
        ({"Analytics": True}, (True, False)),  # names are case-insensitive
        ({"analytics": True, "Marketing": True}, (True, True)),
        ({"Performance": True, "Advertising": True}, (True, True)),
        ({"analytics": True, "performance": False}, (False, False)),  # any refusal wins
        ({"analytics": "true", "marketing": 1}, (False, False)),  # only true is consent
        ({"functional": True, "C0004": True}, (False, False)),  # unmapped categories
    ],
)
def test_categories_map_to_purposes(prefs, expected):
    assert resolve(call(prefs), RULES)[:2] == expected


def test_a_malformed_consent_object_counts_as_none():
    for context in ({"consent": "yes"}, {"consent": {"categoryPreferences": [1]}}, "x"):
        assert preferences({"context": context}) is None


def test_gpc_and_dnt_withdraw_marketing_only_when_the_merchant_honours_them():
    granted = call({"analytics": True, "marketing": True})
    assert resolve(granted, RULES, gpc=True, dnt=True) == Consent(True, True)
    honour = ConsentRules(RULES.analytics_categories, RULES.marketing_categories, honor_gpc=True)
    assert resolve(granted, honour, gpc=True) == Consent(True, False, "gpc")
    assert resolve(granted, honour, dnt=True) == Consent(True, False, "dnt")
    assert resolve(call(), honour, gpc=True) == Consent(True, False, "gpc")  # no object
    # Already refused: the signal changed nothing, so it is not counted.
    assert resolve(call({"analytics": True}), honour, gpc=True) == Consent(True, False)


# --- the cookieless id -------------------------------------------------------------


def test_the_cookieless_id_is_stable_within_a_day_and_unlinkable_across_days():
    salt = DailySalt()
    day1, later, day2 = salt.for_time(T0), salt.for_time(T0 + 3_600_000), salt.for_time(T0 + DAY_MS)
    assert day1 == later and day1 != day2 and len(day1) == 32
    a = cookieless_id(day1, "web", "203.0.113.7", "UA")
    assert a == cookieless_id(later, "web", "203.0.113.7", "UA")
    assert a.startswith("cl-") and len(a) == 3 + 32
    assert a != cookieless_id(day2, "web", "203.0.113.7", "UA")  # next day: a new visitor
    assert a != cookieless_id(day1, "web", "203.0.113.8", "UA")
    assert a != cookieless_id(day1, "web", "203.0.113.7", "UA2")
    assert a != cookieless_id(day1, "app", "203.0.113.7", "UA")
    assert "203.0.113.7" not in a


def test_a_call_without_analytics_consent_loses_every_identity():
    c = call(
        {"analytics": False},
        userId="u1",
        previousId="p1",
        traits={"email": "a@b.c"},
    )
    c["context"]["traits"] = {"email": "a@b.c"}
    out = without_identity(c, "cl-1")
    assert out["anonymousId"] == "cl-1"
    assert "userId" not in out and "previousId" not in out and "traits" not in out
    assert "traits" not in out["context"] and out["context"]["consent"]
    assert c["userId"] == "u1" and c["context"]["traits"]  # the input is untouched


def test_consent_settings():
    s = load({})
    assert not s.consent_required and not s.honor_gpc
    assert "analytics" in s.consent_analytics_categories
    s = load(
        {
            "CLICKSTREAM_CONSENT_ANALYTICS_CATEGORIES": " Stats, C0002 ",
            "CLICKSTREAM_CONSENT_MARKETING_CATEGORIES": "C0004",
            "CLICKSTREAM_CONSENT_REQUIRED": "1",
            "CLICKSTREAM_HONOR_GPC": "true",
        }
    )
    assert s.consent_analytics_categories == ("stats", "c0002")
    assert s.consent_required and s.honor_gpc
    with pytest.raises(SettingsError, match="both name 'ads'"):
        load(
            {
                "CLICKSTREAM_CONSENT_ANALYTICS_CATEGORIES": "ads",
                "CLICKSTREAM_CONSENT_MARKETING_CATEGORIES": "Ads",
            }
        )
    with pytest.raises(SettingsError, match="names no consent category"):
        load({"CLICKSTREAM_CONSENT_MARKETING_CATEGORIES": " , "})


# --- triggers need marketing consent ------------------------------------------------

PRODUCT = {"product_id": "p1", "price": 10.0, "quantity": 1}


def shopper(marketing: bool, **fields):
    """A visit that adds to cart and buys: the purchase fires first_purchase."""
    return [
        event(ts=T0, message_id="m0", marketing_consent=marketing, **fields),
        event(
            ts=T0 + MIN,
            message_id="m1",
            event="Product Added",
            properties=PRODUCT,
            marketing_consent=marketing,
        ),
        event(
            ts=T0 + 2 * MIN,
            message_id="m2",
            event="Order Completed",
            properties={"order_id": "o1", "revenue": 10.0},
            marketing_consent=marketing,
        ),
    ]


def play(events, state=None):
    """As the shell does: apply, then let the metrics note what they count."""
    outcomes = []
    for offset, e in enumerate(events):
        orders = 0 if state is None else state.orders
        outcome = apply(state, e, offset, SESSIONS, MACHINE)
        observe(outcome, e, orders)
        outcomes.append(outcome)
        state = outcome.state or state
    return state, outcomes


def test_without_marketing_consent_the_journey_counts_but_no_trigger_is_published():
    granted, yes = play(shopper(True))
    refused, no = play(shopper(False))
    assert [t["trigger"] for o in yes for t in o.triggers] == ["first_purchase"]
    assert [t for o in no for t in o.triggers] == []
    assert [t["trigger"] for o in no for t in o.withheld] == ["first_purchase"]
    # Everything else is the same journey.
    assert [o.stage_changes for o in yes] == [o.stage_changes for o in no]
    assert (refused.stage, refused.orders, refused.revenue) == (
        granted.stage,
        granted.orders,
        granted.revenue,
    )
    assert granted.marketing and not refused.marketing


def test_records_from_before_consent_existed_grant_it():
    e = event(ts=T0)
    e.pop("marketing_consent", None)
    state, _ = play([e])
    assert state.marketing


def test_a_change_of_consent_applies_from_the_next_event_on():
    events = shopper(True)
    events[2]["marketing_consent"] = False  # withdrawn with the order itself
    _, outcomes = play(events)
    assert [t["trigger"] for o in outcomes for t in o.withheld] == ["first_purchase"]
    events = shopper(False)
    events[2]["marketing_consent"] = True  # granted on the order page
    _, outcomes = play(events)
    assert [t["trigger"] for o in outcomes for t in o.triggers] == ["first_purchase"]


def test_clock_triggers_follow_the_consent_of_the_latest_event():
    cart = [
        event(ts=T0, message_id="m0"),
        event(ts=T0 + MIN, message_id="m1", event="Product Added", properties=PRODUCT),
    ]
    cart[1]["marketing_consent"] = False
    # An older event arriving later does not bring an old choice back.
    late = event(ts=T0 + MIN // 2, message_id="m2", marketing_consent=True)
    state, _ = play([*cart, late])
    assert not state.marketing
    closed = tick(state, T0 + 2 * 3_600_000, SESSIONS, MACHINE)
    assert closed.triggers == []
    assert [t["trigger"] for t in closed.withheld] == ["cart_abandoned"]
    # Metrics still count the abandoned cart.
    deltas = observe(closed)
    assert any(d.figures == w.CART_ABANDONED for d in deltas)
    cart[1]["marketing_consent"] = True
    state, _ = play(cart)
    opened = tick(state, T0 + 2 * 3_600_000, SESSIONS, MACHINE)
    assert [t["trigger"] for t in opened.triggers] == ["cart_abandoned"]


def test_the_consent_survives_the_state_encoding():
    state, _ = play(shopper(False))
    assert not decode_state(encode_state(state)).marketing
    row = orjson.loads(encode_state(state))
    assert row[-1] is False
    assert decode_state(orjson.dumps(row[:-1])).marketing  # written before the field


def test_the_event_record_carries_the_resolved_consent():
    kwargs = dict(source="web", received_at_ms=T0, ip="198.51.100.23", header_user_agent="UA")
    base = to_record(call(), enricher=Enricher(), **kwargs)
    assert (base["analytics_consent"], base["marketing_consent"]) == (True, True)
    withheld = to_record(
        without_identity(call({"analytics": False}, userId="u1"), "cl-x"),
        enricher=Enricher(),
        consent=Consent(False, False),
        **kwargs,
    )
    assert (withheld["analytics_consent"], withheld["marketing_consent"]) == (False, False)
    assert (withheld["visitor_id"], withheld["user_id"]) == ("cl-x", "")
