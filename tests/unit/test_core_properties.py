"""Properties of the journey core over generated event streams of one visitor.

Streams mix page views, pings, commerce events, identify/alias, campaigns, gaps around
the timeout, lapse-sized silences, out-of-order arrival (some beyond the lateness and
after their session closed: amendments) and ticks of the arrival clock, under several
session rules.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.journey import StageMachine, apply, decode_state, due, encode_state, tick
from stream.journey.process import Outcome
from stream.journey.state import VisitorState
from stream.sessionize.rules import DAY_MS, SessionRules
from tests.golden.script import event
from tests.support.examples import examples

pytestmark = pytest.mark.unit

MACHINE = StageMachine.load()
MIN = 60_000
T0 = 1_709_287_200_000  # 2024-03-01 10:00 UTC

GAPS = [
    0,
    1,
    1000,
    MIN,
    5 * MIN - 1,
    5 * MIN,
    30 * MIN - 1,
    30 * MIN,
    30 * MIN + 1,
    60 * MIN,
    20 * 60 * MIN,
]
DELAYS = [0, 0, 0, 0, MIN, 5 * MIN - 1000, 5 * MIN + 1000, 60 * MIN]
CAMPAIGNS = [
    {},
    {},
    {},
    {"utm_source": "news", "utm_medium": "email"},
    {"utm_source": "google", "click_id": "g1"},
]
PRODUCTS = st.sampled_from(["p1", "p2", "p3"])

TRACKS = {
    "Page Ping": st.fixed_dictionaries(
        {"engaged_seconds": st.sampled_from([0, 5, 10, 30, "x", None])}
    ),
    "Product Viewed": st.fixed_dictionaries({"product_id": PRODUCTS, "name": st.just("n")}),
    "Product Added": st.fixed_dictionaries(
        {
            "product_id": PRODUCTS,
            "price": st.sampled_from([0, 9.99, "12", -1, None]),
            "quantity": st.integers(-1, 3),
        }
    ),
    "Product Removed": st.fixed_dictionaries({"product_id": PRODUCTS}),
    "Cart Viewed": st.fixed_dictionaries(
        {"products": st.lists(st.fixed_dictionaries({"product_id": PRODUCTS}), max_size=2)}
    ),
    "Checkout Started": st.just({}),
    "Order Completed": st.fixed_dictionaries(
        {
            "order_id": st.sampled_from(["o1", "o2", "o3", ""]),
            "revenue": st.sampled_from([10, 0, "5.5", None]),
        }
    ),
    "Order Refunded": st.fixed_dictionaries(
        {"order_id": st.just("o1"), "total": st.sampled_from([10, None])}
    ),
    "Product Reviewed": st.just({"rating": 5}),
    "Feedback Submitted": st.fixed_dictionaries({"nps": st.sampled_from([3, 9, 10, "10", None])}),
    "Weird": st.just({"products": "not a list", "nps": {"a": 1}}),
}


@st.composite
def calls(draw) -> dict:
    kind = draw(
        st.sampled_from(
            ["page", "page", "page", "track", "track", "track", "track", "identify", "alias"]
        )
    )
    fields: dict = {"type": kind, **draw(st.sampled_from(CAMPAIGNS))}
    if kind == "track":
        name = draw(st.sampled_from(sorted(TRACKS)))
        fields.update(event=name, properties=draw(TRACKS[name]))
    elif kind == "page":
        fields["url"] = draw(
            st.sampled_from(
                [
                    "https://shop.example/",
                    "https://shop.example/p/1",
                    "https://shop.example/reviews",
                ]
            )
        )
    else:
        fields["user_id"] = draw(st.sampled_from(["u1", "u2"]))
    fields["is_bot"] = draw(st.sampled_from([False] * 9 + [True]))
    return fields


@st.composite
def streams(draw) -> tuple[SessionRules, list]:
    """Rules, and a list of ("event", record, offset) / ("tick", clock) in arrival order."""
    timeout = draw(st.sampled_from([MIN, 30 * MIN]))
    rules = SessionRules(
        timeout_ms=timeout,
        max_ms=draw(st.sampled_from([max(10 * MIN, timeout), DAY_MS])),
        lateness_ms=draw(st.sampled_from([0, 5 * MIN, 60 * MIN])),
        lapse_ms=draw(st.sampled_from([DAY_MS, 90 * DAY_MS])),
    )
    n = draw(st.integers(1, 40))
    ts, timed = T0, []
    for i in range(n):
        ts += draw(
            st.sampled_from(GAPS + [2 * DAY_MS, 95 * DAY_MS])
            if i % 7 == 6
            else st.sampled_from(GAPS)
        )
        record = event(ts=ts, message_id=f"m{i}", **draw(calls()))
        timed.append((ts + draw(st.sampled_from(DELAYS)), i, record))
    timed.sort(key=lambda t: (t[0], t[1]))  # arrival order: some events come late
    script, watermark, seen = [], 0, 0
    for offset, (arrival, _, record) in enumerate(timed):
        record["received_at"] = arrival  # the collector's clock
        script.append(("event", record, offset))
        seen = max(seen, record["received_at"])
        if draw(st.booleans()):
            ahead = draw(st.sampled_from([-10 * MIN, 0, 35 * MIN, 3 * DAY_MS, 100 * DAY_MS]))
            watermark = max(watermark, seen + ahead)
            script.append(("tick", watermark))
    return rules, script


@dataclass
class Played:
    outcomes: list[tuple[str, object, Outcome]]
    before: VisitorState  # the state after the script
    state: VisitorState  # ... and after a final tick that closes every session
    final: Outcome  # that final tick


def play(rules: SessionRules, script: list, roundtrip: bool = False) -> Played:
    state, outcomes = None, []
    for step in script:
        if step[0] == "event":
            _, record, offset = step
            before = encode_state(state) if state is not None else None
            outcome = apply(state, record, offset, rules, MACHINE)
            assert state is None or encode_state(state) == before, "apply changed its input"
        else:
            if state is None:
                continue
            outcome = tick(state, step[1], rules, MACHINE)
        outcomes.append((step[0], step, outcome))
        if outcome.state is not None:
            state = decode_state(encode_state(outcome.state)) if roundtrip else outcome.state
    end = max(r["received_at"] for kind, r, *_ in script if kind == "event") + 2 * DAY_MS
    final = tick(state, end, rules, MACHINE, lapse_ms=10**15)  # closes all, lapses none
    return Played(outcomes, state, final.state or state, final)


def _records(played: Played) -> list:
    out = []
    for _, _, o in [*played.outcomes, ("tick", None, played.final)]:
        out.append(
            (o.stage_changes, o.sessions, o.triggers, o.visitor, o.late, o.applied, o.session_id)
        )
    return out


PROPS = settings(
    max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPS
@given(streams())
def test_every_applied_event_is_in_exactly_one_session_and_sessions_never_overlap(case) -> None:
    rules, script = case
    played = play(rules, script)
    assert not played.state.sessions, "the final tick closes every session"
    closed = {}  # the final summary of each session (an amended one closes again)
    for _, _, o in [*played.outcomes, ("tick", None, played.final)]:
        for record in o.sessions:
            if record["closed"]:
                known = closed.get(record["session_id"])
                assert known is None or record["version"] > known["version"]
                closed[record["session_id"]] = record
    members: dict[str, list[int]] = {}
    for kind, step, o in played.outcomes:
        if kind == "event" and o.applied:
            members.setdefault(o.session_id, []).append(step[1]["ts"])
        else:
            assert not o.session_id
    assert set(members) == set(closed)
    for sid, times in members.items():
        summary = closed[sid]
        assert summary["events"] == len(times)
        assert summary["started_at"] == min(times) and summary["ended_at"] == max(times)
        assert summary["ended_at"] - summary["started_at"] < rules.max_ms
    spans = sorted((s["started_at"], s["ended_at"]) for s in closed.values())
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start > end, spans


@PROPS
@given(streams())
def test_stages_never_go_back_except_to_lapsed(case) -> None:
    """The stored path (each transition's last record by key: an out-of-order event can
    insert a step and re-send the next one) runs forward in event time, each step from
    the one before, back only to lapsed."""
    rules, script = case
    played = play(rules, script)
    path: dict[str, dict] = {}
    order: list[str] = []  # keys in path order: an inserted step goes before the one it amends
    session_stage: dict[str, int] = {}
    for _, _, o in played.outcomes:
        amended = [a["idempotency_key"] for a in o.stage_amends]
        for change in o.stage_changes:
            key = change["idempotency_key"]
            if amended and change["to_stage"] == o.stage_amends[0]["from_stage"]:
                order.insert(order.index(amended[0]), key)
            elif key not in order:
                order.append(key)
            path[key] = change
        for change in o.stage_amends:
            path[change["idempotency_key"]] = change
        for record in o.sessions:
            rank = MACHINE.rank(record["stage_reached"])
            assert rank >= session_stage.get(record["session_id"], -1)
            session_stage[record["session_id"]] = rank
    stage = ""
    for change in (path[key] for key in order):
        assert change["from_stage"] == stage, change
        to = change["to_stage"]
        assert to == MACHINE.lapsed or MACHINE.rank(to) > MACHINE.rank(stage), change
        stage = to
    assert played.state.stage == stage


@PROPS
@given(streams())
def test_a_replay_gives_identical_records_and_ids(case) -> None:
    rules, script = case
    first = play(rules, script)
    assert _records(play(rules, script)) == _records(first)
    assert _records(play(rules, script, roundtrip=True)) == _records(first)
    assert encode_state(play(rules, script).state) == encode_state(first.state)


@PROPS
@given(streams(), st.data())
def test_reapplying_an_applied_offset_is_a_no_op(case, data) -> None:
    rules, script = case
    played = play(rules, script)
    events = [s for s in script if s[0] == "event"]
    for _, record, offset in data.draw(st.lists(st.sampled_from(events), min_size=1, max_size=5)):
        again = apply(played.state, record, offset, rules, MACHINE)
        assert again.state is None and not again.applied and not again.late
        assert not (again.stage_changes or again.sessions or again.triggers or again.visitor)


@PROPS
@given(streams())
def test_versions_grow_and_late_events_change_nothing_but_the_offset(case) -> None:
    rules, script = case
    played = play(rules, script)
    versions: dict[str, int] = {}
    visitor_version = 0
    for _, _, o in [*played.outcomes, ("tick", None, played.final)]:
        for record in o.sessions:
            assert record["version"] > versions.get(record["session_id"], 0)
            versions[record["session_id"]] = record["version"]
        if o.visitor:
            assert o.visitor["version"] > visitor_version
            visitor_version = o.visitor["version"]
        if o.late:
            assert not (o.applied or o.stage_changes or o.sessions or o.triggers or o.visitor)


@PROPS
@given(streams())
def test_bots_never_trigger(case) -> None:
    rules, script = case
    bot_script = [(s[0], {**s[1], "is_bot": True}, s[2]) if s[0] == "event" else s for s in script]
    played = play(rules, bot_script)
    assert not any(o.triggers for _, _, o in played.outcomes)
    assert not played.final.triggers


@PROPS
@given(streams(), st.integers(0, 30))
def test_due_is_the_first_watermark_a_tick_acts_on(case, cut) -> None:
    rules, script = case
    events = [s for s in script if s[0] == "event"]
    state = play(rules, events[: max(1, len(events) * cut // 30)]).before
    at = due(state, rules, MACHINE)
    if at is None:
        assert tick(state, 10**15, rules, MACHINE).state is None
    else:
        assert tick(state, at - 1, rules, MACHINE).state is None
        assert tick(state, at, rules, MACHINE).state is not None
