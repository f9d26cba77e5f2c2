"""From what the journey core did to the metric rows it changes. Pure.

`observe()` reads one Outcome of apply() or tick() and returns the Deltas for the
metric rows (windows.py). What it must remember of the visitor between calls (rows the
visitor was counted in, the row each session started in, what a close counted) it
writes into the visitor's own state, `outcome.state`, before the shell stores it.
"""

from __future__ import annotations

from typing import Any

from stream.journey.process import Outcome
from stream.journey.records import is_bounce
from stream.journey.state import VisitorState
from stream.metrics import windows as w
from stream.metrics.figures import window_of
from stream.metrics.windows import Delta


def observe(
    outcome: Outcome, event: dict[str, Any] | None = None, orders_before: int = 0
) -> list[Delta]:
    """The row changes of one outcome; `event` is the applied event (None for a tick),
    `orders_before` the visitor's order count before it."""
    state = outcome.state
    if state is None:
        return []
    out: list[Delta] = []
    for s in outcome.reopened:  # take back what its close counted; it is open again
        if s.dims is not None:
            figures = w.session_close_figures(s.counted_bounce, s.counted_stage, -1)
            out.append(Delta(s.window, s.dims, figures))
            s.counted_bounce, s.counted_stage = False, ""
    for s in outcome.closed:
        if s.dims is not None:
            s.counted_bounce, s.counted_stage = is_bounce(s), s.stage
            figures = w.session_close_figures(s.counted_bounce, s.counted_stage)
            out.append(Delta(s.window, s.dims, figures))
    if event is not None and outcome.applied and outcome.session is not None:
        delta = _event(orders_before, state, event, outcome)
        if delta is not None:
            out.append(delta)
    dims = state.metric_dims
    if dims is None or state.is_bot:
        return out
    for change in outcome.stage_changes:
        out.append(Delta(window_of(change["ts"]), dims, w.STAGE_CHANGE))
    for trigger in (*outcome.triggers, *outcome.withheld):  # consent hides, metrics count
        if trigger["trigger"] == "cart_abandoned":
            out.append(Delta(window_of(trigger["ts"]), dims, w.CART_ABANDONED))
    return out


def _event(
    orders_before: int, state: VisitorState, event: dict[str, Any], outcome: Outcome
) -> Delta | None:
    session = outcome.session
    assert session is not None  # observe() asked for an applied event's session
    if event.get("is_bot"):
        return None
    started = outcome.started
    window = window_of(event["ts"])
    dims = w.dims_for(event, state.metric_dims, started, session.is_new)
    first, state.counted = w.first_in_row(state.counted, window, dims)
    state.metric_dims = dims
    figures = w.event_figures(
        event,
        first_in_row=first,
        new_visitor=session.is_new,
        session_started=started,
        cart_created=event.get("event") == "Product Added"
        and session.cart_touched
        and not outcome.cart_before,
        order_counted=state.orders > orders_before,
    )
    if started:
        session.window, session.dims = window, dims
    return Delta(window, dims, figures)
