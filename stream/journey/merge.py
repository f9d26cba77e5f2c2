"""merge(): one person seen as two visitors (two devices), folded into one state.

`a` keeps its identity (visitor_id: the key the shell stores the result under); the
earliest first touch wins; counts add up; the stage is the furthest of the two that is
not lapsed (lapsed only when both are). Merge each pair once: counts would add twice.
Open sessions of both are kept; from different devices they may overlap in time.
"""

from __future__ import annotations

from functools import cache

from stream.journey.machine import StageMachine
from stream.journey.state import (
    MAX_HISTORY,
    MAX_OPEN_SESSIONS,
    MAX_ORDER_IDS,
    VisitorState,
    copy_state,
)

_FIRST_TOUCH = (
    "first_referrer",
    "first_landing_page",
    "first_utm_source",
    "first_utm_medium",
    "first_utm_campaign",
)


@cache
def _default_machine() -> StageMachine:
    return StageMachine.load()


def merge(a: VisitorState, b: VisitorState, machine: StageMachine | None = None) -> VisitorState:
    machine = machine or _default_machine()
    out, other = copy_state(a), copy_state(b)
    first = out if a.first_seen <= b.first_seen else other
    latest = out if a.last_seen >= b.last_seen else other
    later_first = other if first is out else out
    for s in later_first.sessions:
        s.is_new = False  # the first session is the earliest state's

    out.anonymous_id = a.anonymous_id or b.anonymous_id
    out.user_id = a.user_id or b.user_id
    out.source = a.source or b.source
    out.first_seen = first.first_seen
    for name in _FIRST_TOUCH:
        setattr(out, name, getattr(first, name))
    out.last_seen, out.last_event_id, out.is_bot, out.marketing = (
        latest.last_seen,
        latest.last_event_id,
        latest.is_bot,
        latest.marketing,
    )
    out.cart, out.currency, out.last_product = latest.cart, latest.currency, latest.last_product
    out.floor = min(a.floor, b.floor)  # neither device's open sessions turn late
    for partition, offset in b.offsets.items():
        out.offsets[partition] = max(offset, out.offsets.get(partition, -1))
    out.sessions = sorted(out.sessions + other.sessions, key=lambda s: s.start)[
        -2 * MAX_OPEN_SESSIONS :
    ]

    out.session_count += b.session_count
    out.events += b.events
    out.late += b.late
    out.orders += b.orders
    out.refunds += b.refunds
    out.revenue = round(a.revenue + b.revenue, 2)
    out.refunded = round(a.refunded + b.refunded, 2)
    out.last_order_ts = max(a.last_order_ts, b.last_order_ts)
    out.order_ids = [*a.order_ids, *(o for o in b.order_ids if o not in a.order_ids)][
        -MAX_ORDER_IDS:
    ]

    live = [s for s in (a.stage, b.stage) if s and s != machine.lapsed]
    if live:
        out.stage = max(live, key=machine.rank)
    elif machine.lapsed in (a.stage, b.stage):
        out.stage = machine.lapsed
    out.max_stage = max(a.max_stage, b.max_stage, key=machine.rank)
    steps = sorted(set(a.history) | set(b.history), key=lambda h: (h[1], machine.rank(h[0])))
    out.history = steps[-MAX_HISTORY:]
    out.version = max(a.version, b.version) + 1
    return out
