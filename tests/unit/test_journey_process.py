"""apply(), tick() and merge(): behaviour the golden journeys do not spell out."""

from __future__ import annotations

import itertools

import pytest

from stream.journey import StageMachine, apply, encode_state, merge, tick
from stream.journey.state import MAX_CLOSED_KEPT, MAX_OPEN_SESSIONS
from stream.sessionize.rules import DAY_MS, SessionRules
from tests.golden.script import event

pytestmark = pytest.mark.unit

MACHINE = StageMachine.load()
RULES = SessionRules()
MIN = 60_000
T0 = 1_709_287_200_000


def play(*events, state=None, start_offset=0):
    outcomes = []
    for offset, e in enumerate(events, start_offset):
        outcome = apply(state, e, offset, RULES, MACHINE)
        outcomes.append(outcome)
        state = outcome.state or state
    return state, outcomes


def test_apply_leaves_its_input_alone_and_returns_the_new_state() -> None:
    state, _ = play(event(ts=T0))
    before = encode_state(state)
    outcome = apply(
        state,
        event(ts=T0 + MIN, event="Product Added", properties={"product_id": "p"}),
        5,
        RULES,
        MACHINE,
    )
    assert encode_state(state) == before
    assert outcome.state is not state and outcome.applied
    assert outcome.state.offsets == {0: 5} and outcome.state.cart


def test_offsets_are_kept_per_partition() -> None:
    state, _ = play(event(ts=T0))
    other = apply(state, event(ts=T0 + 1), 0, RULES, MACHINE, partition=3)
    assert other.applied and other.state.offsets == {0: 0, 3: 0}
    assert apply(other.state, event(ts=T0 + 2), 0, RULES, MACHINE, partition=3).state is None


def test_an_idle_tick_changes_nothing() -> None:
    state, _ = play(event(ts=T0))
    quiet = tick(state, T0 + 34 * MIN, RULES, MACHINE)
    assert quiet.state is None and not quiet.sessions
    closing = tick(state, T0 + 35 * MIN, RULES, MACHINE)
    assert [s["close_reason"] for s in closing.sessions] == ["timeout"]
    assert closing.state.sessions == [] and closing.state.floor == 0
    assert [s.closed_as for s in closing.state.closed] == ["timeout"]  # kept: amendable
    assert tick(closing.state, T0 + 36 * MIN, RULES, MACHINE).state is None


def test_live_summaries_only_when_the_session_stage_moves() -> None:
    _, outcomes = play(
        event(ts=T0),
        event(ts=T0 + MIN, url="https://shop.example/a"),
        event(ts=T0 + 2 * MIN, event="Product Viewed"),
        event(ts=T0 + 3 * MIN, event="Product Viewed"),
    )
    assert [len(o.sessions) for o in outcomes] == [1, 0, 1, 0]
    assert [o.sessions[0]["stage_reached"] for o in outcomes if o.sessions] == [
        "awareness",
        "consideration",
    ]
    assert [o.visitor is not None for o in outcomes] == [True, False, True, False]
    assert len({o.session_id for o in outcomes}) == 1


def test_a_user_id_on_any_event_links_the_visitor() -> None:
    state, outcomes = play(event(ts=T0), event(ts=T0 + MIN, event="Signed In", user_id="u9"))
    assert state.user_id == "u9"
    assert outcomes[1].visitor["user_id"] == "u9"


def test_too_many_open_sessions_evict_the_oldest() -> None:
    # a bot switching campaign on every hit opens a session per hit
    hits = [
        event(ts=T0 + i * 1000, utm_source=f"s{i}", is_bot=True)
        for i in range(MAX_OPEN_SESSIONS + MAX_CLOSED_KEPT + 3)
    ]
    state, outcomes = play(*hits)
    closed = [s for o in outcomes for s in o.sessions if s["closed"]]
    assert len(state.sessions) == MAX_OPEN_SESSIONS and len(state.closed) == MAX_CLOSED_KEPT
    assert [s["close_reason"] for s in closed] == ["evicted"] * (MAX_CLOSED_KEPT + 3)
    assert not any(o.triggers for o in outcomes)
    late = apply(state, event(ts=T0 + 1500), 99, RULES, MACHINE)
    assert late.late  # before the floor the forgotten sessions left


@pytest.mark.parametrize(
    "properties",
    [
        {"products": "x", "price": "abc", "quantity": 1e30, "engaged_seconds": float("inf")},
        {"product_id": {"a": 1}, "sku": ["b"], "revenue": -5, "currency": 7, "nps": [10]},
        {"products": [None, 1, {"product_id": 3, "quantity": "2"}], "order_id": 12},
    ],
)
@pytest.mark.parametrize(
    "name",
    [
        "Page Ping",
        "Product Added",
        "Product Removed",
        "Cart Viewed",
        "Checkout Started",
        "Order Completed",
        "Order Refunded",
        "Product Viewed",
        "Feedback Submitted",
    ],
)
def test_malformed_properties_never_crash(name: str, properties: dict) -> None:
    state, _ = play(event(ts=T0))
    outcome = apply(state, event(ts=T0 + MIN, event=name, properties=properties), 1, RULES, MACHINE)
    assert outcome.applied
    encode_state(outcome.state)  # still encodable (no huge ints, no NaN)


def test_properties_that_are_not_an_object_are_ignored() -> None:
    state, _ = play(event(ts=T0))
    assert apply(
        state, event(ts=T0 + 1, event="Product Added", properties=None), 1, RULES, MACHINE
    ).applied


def buyer(visitor: str, start: int, revenue: float, **fields):
    state, _ = play(
        event(ts=start, visitor=visitor, **fields),
        event(
            ts=start + MIN,
            visitor=visitor,
            event="Order Completed",
            properties={"order_id": f"o-{visitor}", "revenue": revenue},
        ),
    )
    return state


def test_merge_keeps_the_earliest_first_touch_and_adds_counts() -> None:
    a = buyer("a", T0 + DAY_MS, 10, utm_source="mail")
    b = buyer("b", T0, 5, utm_source="google", user_id="u1")
    merged = merge(a, b)
    assert merged.visitor_id == "a" and merged.user_id == "u1"
    assert merged.first_seen == T0 and merged.first_utm_source == "google"
    assert (merged.orders, merged.revenue, merged.session_count) == (2, 15.0, 2)
    assert merged.order_ids == ["o-a", "o-b"]
    assert merged.last_seen == a.last_seen and merged.stage == "purchase"
    assert sum(s.is_new for s in merged.sessions) == 1
    assert merged.version > max(a.version, b.version)
    assert encode_state(a) == encode_state(buyer("a", T0 + DAY_MS, 10, utm_source="mail"))


def test_merge_lapsed_only_when_both_are() -> None:
    a = buyer("a", T0, 10)
    lapsed = tick(a, a.last_seen + 90 * DAY_MS, RULES, MACHINE).state
    assert lapsed.stage == "lapsed"
    browsing, _ = play(event(ts=T0 + 100 * DAY_MS, visitor="b", event="Product Viewed"))
    assert merge(lapsed, browsing).stage == "consideration"
    assert merge(lapsed, lapsed).stage == "lapsed"
    assert merge(lapsed, browsing).max_stage == "purchase"


def test_a_session_the_visitors_own_later_events_settled_can_still_be_amended() -> None:
    state, _ = play(
        event(ts=T0),
        event(ts=T0 + 5 * MIN),
        event(ts=T0 + 10 * MIN, utm_source="news"),  # a new campaign: a second session
        event(ts=T0 + 30 * MIN),
    )
    settled = apply(state, event(ts=T0 + 41 * MIN, message_id="m41"), 9, RULES, MACHINE)
    assert [s["close_reason"] for s in settled.sessions if s["closed"]] == ["campaign"]
    assert settled.state.floor == 0 and len(settled.state.sessions) == 1
    amend = apply(settled.state, event(ts=T0 + 9 * MIN, message_id="m9"), 10, RULES, MACHINE)
    assert (
        amend.applied
        and not amend.late
        and [s.id for s in amend.reopened] == [settled.state.closed[0].id]
    )
    assert amend.session_id == settled.state.closed[0].id


def test_a_reopened_session_does_not_grow_over_a_closed_one_after_it() -> None:
    """Found by the property test: a late event reopens a session that a campaign switch
    had ended; a later event with the first campaign must open a session of its own,
    not stretch the reopened one over the closed session in between."""
    rules = SessionRules(timeout_ms=30 * MIN, max_ms=30 * MIN, lateness_ms=0)
    state = None
    steps = [
        (T0, T0, {"utm_source": "google"}),
        (T0 + 1, T0 + 1, {"utm_source": "news", "utm_medium": "email"}),
        "tick",  # both close
        (T0, T0 + MIN, {}),  # late: reopens the first
        (T0 + MIN + 1, T0 + MIN + 1, {"utm_source": "google"}),
    ]
    for offset, step in enumerate(steps):
        if step == "tick":
            state = tick(state, T0 + 35 * MIN, rules, MACHINE).state
            continue
        ts, arrival, fields = step
        e = event(ts=ts, message_id=f"m{offset}", **fields)
        e["received_at"] = arrival
        state = apply(state, e, offset, rules, MACHINE).state or state
    spans = sorted((s.start, s.end) for s in [*state.sessions, *state.closed])
    assert len(spans) == 3
    assert all(a_end < b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans)), spans


def test_a_forgotten_reopened_session_is_never_started_again_under_its_id() -> None:
    """Found by the property tests: a late event reopens the oldest kept closed session;
    when it closes again it is the one forgotten (MAX_CLOSED_KEPT), so the next event of
    its time must be late. It used to open a new session with the same id, whose
    summaries went back to version 2 and to the first stage (the sink kept the old row)."""
    rules = SessionRules(timeout_ms=MIN, max_ms=10 * MIN, lateness_ms=0)
    steps = [(T0, T0)] + [
        (T0 + i * MIN, T0 + i * MIN) for i in range(1, MAX_CLOSED_KEPT + 1)
    ]  # the first session, then one a minute: the first is the oldest kept closed one
    steps += [(T0, T0 + 60 * MIN), "tick", (T0, T0 + 60 * MIN)]  # reopen; close; again
    state, summaries, last = None, {}, None
    for offset, step in enumerate(steps):
        if step == "tick":
            last = tick(state, T0 + 120 * MIN, rules, MACHINE)
        else:
            ts, arrival = step
            e = event(ts=ts, message_id=f"m{offset}")
            e["received_at"] = arrival
            last = apply(state, e, offset, rules, MACHINE)
        state = last.state or state
        for s in last.sessions:
            before = summaries.get(s["session_id"])
            assert before is None or s["version"] > before["version"], (before, s)
            summaries[s["session_id"]] = s
    assert last.late and not last.applied
    assert state.floor > T0


def test_sessions_closed_together_set_the_floor_from_what_is_still_held() -> None:
    """Found by the property test (eighth session): one tick closes more sessions than
    MAX_CLOSED_KEPT keeps. The floor for a forgotten one used to count the sessions the
    same tick had already closed and forgotten as still held, so it stayed below the
    forgotten session; its next event opened a new session under the old id, whose
    summaries went back to version 2 (the sink kept the stale row)."""
    rules = SessionRules(timeout_ms=MIN, max_ms=10 * MIN, lateness_ms=60 * MIN)
    starts = [T0 + i * 5 * MIN for i in range(MAX_CLOSED_KEPT + 2)]  # a session each
    state, summaries = None, {}

    def note(outcome) -> None:
        for s in outcome.sessions:
            before = summaries.get(s["session_id"])
            assert before is None or s["version"] > before["version"], (before, s)
            summaries[s["session_id"]] = s

    for offset, ts in enumerate(starts):
        outcome = apply(state, event(ts=ts, message_id=f"m{offset}"), offset, rules, MACHINE)
        note(outcome)
        state = outcome.state or state
    closing = tick(state, starts[-1] + DAY_MS, rules, MACHINE)  # closes every one
    note(closing)
    state = closing.state
    assert not state.sessions and len(state.closed) == MAX_CLOSED_KEPT
    late = event(ts=starts[1], message_id="late")  # in the second, forgotten session
    late["received_at"] = starts[-1] + DAY_MS
    outcome = apply(state, late, len(starts), rules, MACHINE)
    note(outcome)
    assert outcome.late and not outcome.applied
    assert state.floor > starts[1]
