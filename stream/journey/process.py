"""apply() and tick(): the journey of one visitor, event by event, as pure functions.

Inputs are never changed: each call works on a copy and returns it in the Outcome
(`state` is None when the stored state need not be rewritten). Every id and key comes
from data (visitor, session start, message_id, stages), so a replay of the same
partition yields the same records, and an offset at or below the last applied one
is a no-op.

The time model (README, "Journeys"):
- EVENT time (`ts`, the client's clock, clamped by the collector) only places a
  visitor's events: which session, in which order, which metric window. It is
  compared with the same visitor's other events, never with anyone else's.
- ARRIVAL time (`received_at`, the collector's clock, and the partition clock that
  tick records carry in the log) decides when a visitor has gone quiet: idle sessions
  close, buyers lapse and state expires by how long the partition has not heard from
  the visitor (tick()). A client's clock can therefore only ever move its own journey.
- A late event amends: it joins its open session, or reopens one of the visitor's last
  MAX_CLOSED_KEPT closed sessions (which closes again with a higher version). Only an
  event older than a session the state has already forgotten (`floor`) is left out.

Order of work in apply(), also the order of the records it returns:
  1. close sessions the visitor's own later events have settled (its latest ts - lateness),
  2. lapse a buyer whose previous event is `lapse_ms` or more older than this one,
  3. put the event in its session (reopening a closed one it belongs to), record its
     facts (effects.py),
  4. move the session's and the visitor's stage (machine.py), fire triggers.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.journey import consent, effects, records
from stream.journey.facts import campaign, text
from stream.journey.machine import StageMachine
from stream.journey.state import (
    MAX_CLOSED_KEPT,
    MAX_HISTORY,
    MAX_OPEN_SESSIONS,
    SessionState,
    VisitorState,
    copy_session,
    copy_state,
)
from stream.records import EventRecord
from stream.sessionize.assign import EVICTED, choose, end_reason, reach
from stream.sessionize.ids import session_id
from stream.sessionize.rules import SessionRules

CART_ABANDONED = "cart_abandoned"
CHECKOUT_ABANDONED = "checkout_abandoned"
FIRST_PURCHASE = "first_purchase"
REPEAT_PURCHASE = "repeat_purchase"
LAPSED = "lapsed"

# Session field <- event field: the entry of a visit, taken from its earliest event.
_ENTRY = (
    ("referrer", "referrer"),
    ("ref_source", "ref_source"),
    ("ref_medium", "ref_medium"),
    ("utm_source", "utm_source"),
    ("utm_medium", "utm_medium"),
    ("utm_campaign", "utm_campaign"),
    ("click_id", "click_id"),
)


@dataclass(slots=True, init=False)
class Outcome:
    state: VisitorState | None  # to store; None: the stored state is still right
    stage_changes: list[dict]
    stage_amends: list[dict]  # earlier changes re-sent, corrected
    sessions: list[dict]
    triggers: list[dict]
    withheld: list[dict]  # triggers without marketing consent
    visitor: dict | None  # snapshot, when stage, sessions, orders or user_id changed
    late: bool  # left out: older than what the state still holds (`floor`)
    applied: bool
    session_id: str  # the session the event went to ("" unless applied)
    reopened: list[SessionState]  # closed sessions amended
    session: SessionState | None  # the session the event went to (applied)
    started: bool  # ... which the event opened
    cart_before: bool  # ... whose cart was touched before the event
    closed: list[SessionState]  # sessions closed by this call

    def __init__(
        self, state: VisitorState | None, *, late: bool = False, applied: bool = False
    ) -> None:
        # Written out: one is made per event, and the generated __init__'s default
        # factories cost twice as much.
        self.state = state
        self.stage_changes = []
        self.stage_amends = []
        self.sessions = []
        self.triggers = []
        self.withheld = []
        self.visitor = None
        self.late = late
        self.applied = applied
        self.session_id = ""
        self.reopened = []
        self.session = None
        self.started = False
        self.cart_before = False
        self.closed = []


def apply(
    state: VisitorState | None,
    event: EventRecord,
    offset: int,
    rules: SessionRules,
    machine: StageMachine,
    partition: int = 0,
    *,
    in_place: bool = False,
) -> Outcome:
    """Apply one event of the visitor, read at `offset` of `partition`. `in_place`: the
    caller owns `state` (e.g. decoded for this batch) and lets it change, which spares
    a copy per event."""
    if state is not None and offset <= state.offsets.get(partition, -1):
        return Outcome(None)
    ts = int(event["ts"])
    arrival = int(event.get("received_at") or ts)
    if state is None:
        state = _new_visitor(event, ts)
    elif not in_place:
        state = copy_state(state)
    state.offsets[partition] = offset
    state.last_arrival = max(state.last_arrival, arrival)
    if ts < state.floor:
        state.late += 1  # the offset still advances: a replay stays a no-op
        return Outcome(state, late=True)
    out = Outcome(state, applied=True)
    watched = _watched(state)
    _close_settled(state, max(state.last_seen, ts) - rules.lateness_ms, rules, out)
    if ts - state.last_seen >= rules.lapse_ms:
        _lapse(state, machine, rules.lapse_ms, out)
    effects.identify(state, event)
    _reopen(state, ts, campaign(event), rules, out)
    count = state.session_count
    session = _session_for(state, event, ts, rules, out)
    out.session, out.started = session, state.session_count != count
    out.cart_before = session.cart_touched
    order = effects.record(state, session, event, ts)
    consent.note(state, event, ts)
    _seen(state, event, ts)
    if session.is_new:
        _first_touch(state, session)
    event_id = event.get("message_id") or ""
    _advance(state, session, machine.match(event, session, state), ts, event_id, machine, out)
    if order is not None and not session.is_bot:
        name = FIRST_PURCHASE if order.first else REPEAT_PURCHASE
        out.triggers.append(
            records.trigger(
                state, name, ts, session.id, event_id, order.order_id, order.revenue, order.lines
            )
        )
    out.triggers = consent.gate(out.triggers, out.withheld, consent.of_event(event))
    state.version += 1
    if _watched(state) != watched:
        out.visitor = records.visitor_snapshot(state)
    out.session_id = session.id
    return out


def tick(
    state: VisitorState,
    clock_ms: int,
    rules: SessionRules,
    machine: StageMachine,
    lapse_ms: int | None = None,
    *,
    in_place: bool = False,
) -> Outcome:
    """The partition clock (arrival time) reached `clock_ms`: close the sessions of a
    visitor not heard from for rules.idle_ms (timeout + lateness); lapse a buyer not heard from for
    `lapse_ms` (default rules.lapse_ms). `in_place` as for apply()."""
    lapse_ms = rules.lapse_ms if lapse_ms is None else lapse_ms
    quiet = clock_ms - state.last_arrival
    settles = bool(state.sessions) and quiet >= rules.idle_ms
    lapses = machine.can_lapse(state.stage) and quiet >= lapse_ms
    if not (settles or lapses):
        return Outcome(None)
    if not in_place:
        state = copy_state(state)
    out = Outcome(state)
    watched = _watched(state)
    if settles:
        for s in list(state.sessions):
            state.sessions.remove(s)  # closed, so no longer held (_close's floor)
            _close(state, s, s.ended_by or end_reason(s, rules), rules, out)
    if lapses:
        _lapse(state, machine, lapse_ms, out)
    out.triggers = consent.gate(out.triggers, out.withheld, state.marketing)
    state.version += 1
    if _watched(state) != watched:
        out.visitor = records.visitor_snapshot(state)
    return out


def due(
    state: VisitorState, rules: SessionRules, machine: StageMachine, lapse_ms: int | None = None
) -> int | None:
    """The lowest partition clock (arrival ms) at which tick() has work; None: never.

    Lets the shell tick only the visitors that are due instead of its whole table.
    """
    lapse_ms = rules.lapse_ms if lapse_ms is None else lapse_ms
    times = []
    if state.sessions:
        times.append(state.last_arrival + rules.idle_ms)
    if machine.can_lapse(state.stage):
        times.append(state.last_arrival + lapse_ms)
    return min(times, default=None)


def _watched(state: VisitorState) -> tuple:
    return (state.stage, state.session_count, state.orders, state.user_id)


def _new_visitor(event: EventRecord, ts: int) -> VisitorState:
    return VisitorState(visitor_id=event["visitor_id"], first_seen=ts, last_seen=ts)


def _seen(state: VisitorState, event: EventRecord, ts: int) -> None:
    if ts >= state.last_seen:
        state.last_seen = ts
        state.last_event_id = event.get("message_id") or ""
        state.is_bot = bool(event.get("is_bot"))
    state.first_seen = min(state.first_seen, ts)


def _first_touch(state: VisitorState, s: SessionState) -> None:
    """First touch is the entry of the visitor's first session."""
    state.first_referrer = s.referrer
    state.first_landing_page = s.landing_page
    state.first_utm_source = s.utm_source
    state.first_utm_medium = s.utm_medium
    state.first_utm_campaign = s.utm_campaign


# --- sessions ----------------------------------------------------------------


def _session_for(
    state: VisitorState, event: EventRecord, ts: int, rules: SessionRules, out: Outcome
) -> SessionState:
    spans = state.sessions
    if state.closed and state.sessions and state.closed[-1].start > state.sessions[0].start:
        # a reopened session has closed ones after it: it must not grow over them
        spans = sorted([*state.sessions, *state.closed], key=lambda o: o.start)
    i, ended_by = choose(spans, ts, campaign(event), rules)
    if i is not None:  # an open one: _reopen() brought back any closed one it belongs to
        s = spans[i]
        if ts < s.start:  # an earlier event: it becomes the entry where it says something
            s.start = ts
            _entry(s, event, only_given=True)
        s.end = max(s.end, ts)
        _device(s, event)
        return s
    s = SessionState(
        id=session_id(state.visitor_id, ts),  # first-seen start: fixed for life
        start=ts,
        end=ts,
        is_new=state.session_count == 0,
        after_purchase=state.orders > 0 and state.last_order_ts < ts,
    )
    _entry(s, event, only_given=False)
    _device(s, event)
    prev = next((o for o in reversed(spans) if o.start < ts), None)
    if ended_by and prev is not None and any(prev is o for o in state.sessions):
        prev.ended_by = ended_by  # a closed one has its reason already
    at = sum(1 for o in state.sessions if o.start < ts)
    state.sessions.insert(at, s)
    state.session_count += 1
    if len(state.sessions) > MAX_OPEN_SESSIONS:  # e.g. a bot switching campaign per hit
        oldest = state.sessions[1] if state.sessions[0] is s else state.sessions[0]
        state.sessions.remove(oldest)
        _close(state, oldest, EVICTED, rules, out)
    return s


def _entry(s: SessionState, event: EventRecord, only_given: bool) -> None:
    for name, key in _ENTRY:
        value = text(event.get(key))
        if value or not only_given:
            setattr(s, name, value)


def _device(s: SessionState, event: EventRecord) -> None:
    if not s.device_type:
        s.device_type = event.get("device_type") or ""
        s.browser = event.get("browser") or ""
        s.os = event.get("os") or ""
    s.is_bot = s.is_bot or bool(event.get("is_bot"))


def _close_settled(state: VisitorState, settled_at: int, rules: SessionRules, out: Outcome) -> None:
    """Close every open session no event at or after `settled_at` can join (the
    visitor's own later events settled it); it is kept, a late event can reopen it."""
    timeout, longest = rules.timeout_ms, rules.max_ms
    for s in state.sessions:  # reach(), inlined: this runs for every event
        if min(s.end + timeout, s.start + longest) <= settled_at:
            break
    else:
        return  # none settled: the usual case
    for s in [s for s in state.sessions if reach(s, rules) <= settled_at]:
        # One at a time: those still to close are still held (_close's floor).
        state.sessions.remove(s)
        _close(state, s, s.ended_by or end_reason(s, rules), rules, out)


def _reopen(
    state: VisitorState, ts: int, campaign_: tuple, rules: SessionRules, out: Outcome
) -> None:
    """A late event that belongs to a kept closed session brings it back (amended, it
    closes again later with a higher version)."""
    timeout, longest = rules.timeout_ms, rules.max_ms
    for c in state.closed:  # reach(), inlined: this runs for every event
        if ts < min(c.end + timeout, c.start + longest):
            break
    else:
        return  # after every closed session's reach: none can take it (the usual case)
    spans = sorted([*state.sessions, *state.closed], key=lambda s: s.start)
    i, _ = choose(spans, ts, campaign_, rules)
    if i is None or spans[i] not in state.closed:
        return
    state.closed.remove(spans[i])
    s = copy_session(spans[i])  # closed sessions are shared between state copies
    s.closed_as = ""
    state.sessions = sorted([*state.sessions, s], key=lambda o: o.start)
    out.reopened.append(s)


def _close(
    state: VisitorState, s: SessionState, reason: str, rules: SessionRules, out: Outcome
) -> None:
    """Emit the final summary and keep the session for amendments; the oldest kept one
    beyond MAX_CLOSED_KEPT is forgotten, and events before its reach are late from
    then on."""
    s.closed_as = reason
    state.closed = sorted([*state.closed, s], key=lambda o: o.start)
    while len(state.closed) > MAX_CLOSED_KEPT:
        gone = state.closed.pop(0)
        # Events that the forgotten session could have taken are late from now on,
        # up to where a session still held begins. `gone` can be `s` itself (a late
        # event reopened the oldest kept session, which closes again): then nothing may
        # start it afresh under its old id, so its start is not one still held.
        held = [o.start for o in (*state.sessions, *state.closed) if o is not gone]
        state.floor = max(state.floor, min([reach(gone, rules), *held]))
    out.closed.append(s)
    out.sessions.append(records.session_summary(state, s, reason))
    if s.is_bot or s.orders or state.last_order_ts >= s.start:
        return  # bots get no triggers; an order since the visit began is no abandonment
    if s.checkout:
        name = CHECKOUT_ABANDONED
    elif s.cart_touched and state.cart:
        name = CART_ABANDONED
    else:
        return
    out.triggers.append(records.trigger(state, name, s.end, s.id, s.id))


# --- stages ------------------------------------------------------------------


def _advance(
    state: VisitorState,
    session: SessionState,
    stage: str,
    ts: int,
    event_id: str,
    machine: StageMachine,
    out: Outcome,
) -> None:
    if not stage:
        return
    rank = machine.rank(stage)
    if rank > machine.rank(session.stage):
        session.stage = stage
        out.sessions.append(records.session_summary(state, session))
    if rank > machine.rank(state.stage):
        _move(state, stage, ts, session.id, event_id, session.is_bot, machine, out)
    elif ts < state.last_seen:
        _insert(state, stage, ts, session.id, event_id, machine, out)


def _insert(
    state: VisitorState,
    stage: str,
    ts: int,
    session_id_: str,
    event_id: str,
    machine: StageMachine,
    out: Outcome,
) -> None:
    """An out-of-order event that reaches, at its own time, a stage the visitor only
    passed over later (a product view that arrives after the cart add it preceded):
    the path becomes what happened, m -> stage -> next, by a new transition and the next
    one re-sent with its new from_stage (same idempotency key: it replaces the row)."""
    if any(step[0] == machine.lapsed for step in state.history):
        return  # a lapse is dated by arrival, not in event-time order: leave such paths
    before, following, at_index = "", None, 0
    for i, step in enumerate(state.history):
        if step[1] <= ts:
            before = step[0]
        else:
            following, at_index = step, i
            break
    rank = machine.rank(stage)
    if (
        following is None
        or len(following) < 4  # written before transitions kept their event
        or not machine.rank(before) < rank < machine.rank(following[0])
        or (state.history and len(state.history) == MAX_HISTORY and ts < state.history[0][1])
    ):
        return
    out.stage_changes.append(records.stage_change(state, before, stage, ts, session_id_, event_id))
    to, at, next_event, next_session = following[:4]
    out.stage_amends.append(records.stage_change(state, stage, to, at, next_session, next_event))
    step = (stage, ts, event_id, session_id_)
    state.history = [*state.history[:at_index], step, *state.history[at_index:]][-MAX_HISTORY:]


def _move(
    state: VisitorState,
    to: str,
    ts: int,
    session_id_: str,
    event_id: str,
    is_bot: bool,
    machine: StageMachine,
    out: Outcome,
    key: str = "",
) -> None:
    out.stage_changes.append(
        records.stage_change(state, state.stage, to, ts, session_id_, event_id, key)
    )
    state.stage = to
    state.history = [*state.history[-(MAX_HISTORY - 1) :], (to, ts, event_id, session_id_)]
    if machine.rank(to) > machine.rank(state.max_stage):
        state.max_stage = to
        if (name := machine.stage_triggers.get(to)) and not is_bot:
            out.triggers.append(records.trigger(state, name, ts, session_id_, event_id))


def _lapse(state: VisitorState, machine: StageMachine, lapse_ms: int, out: Outcome) -> None:
    """A buyer silent for `lapse_ms`: dated at last activity + lapse_ms, keyed by that event."""
    if not machine.can_lapse(state.stage):
        return
    at = state.last_seen + lapse_ms
    # Keyed by the last event AND how many events came before: a customer can lapse twice
    # after the same last event (a late event brought them back without moving it).
    key = f"{state.last_event_id}:{state.events}"
    _move(state, machine.lapsed, at, "", state.last_event_id, state.is_bot, machine, out, key)
    if not state.is_bot:
        out.triggers.append(records.trigger(state, LAPSED, at, "", key))
