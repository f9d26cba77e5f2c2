"""What an applied event does to its session and visitor (counts, pages, cart, orders).

Stages are not decided here (see machine.py); this only records facts. Event names
follow Segment's e-commerce spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.journey import cart
from stream.journey.facts import MAX_TEXT, line, lines, num, page_of, props, text
from stream.journey.state import (
    MAX_CART_LINES,
    MAX_ORDER_IDS,
    CartLine,
    SessionState,
    VisitorState,
)
from stream.records import EventRecord

PAGE_TYPES = frozenset({"page", "screen"})
PAGE_PING = "Page Ping"
PRODUCT_VIEWED = "Product Viewed"
PRODUCT_ADDED = "Product Added"
PRODUCT_REMOVED = "Product Removed"
CART_SNAPSHOTS = frozenset({"Cart Viewed", "Checkout Started"})  # carry the whole cart
CHECKOUT = frozenset(
    {"Checkout Started", "Checkout Step Viewed", "Checkout Step Completed", "Payment Info Entered"}
)
ORDER_COMPLETED = "Order Completed"
ORDER_REFUNDED = "Order Refunded"
MAX_PING_S = 3600.0  # one ping cannot claim more engagement than this
AMOUNT_KEYS = ("revenue", "total", "value")  # Segment: revenue excludes shipping and tax


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    revenue: float
    lines: list[CartLine]
    first: bool  # the visitor's first order


def identify(state: VisitorState, event: EventRecord) -> None:
    """Any event with a user_id links it (identify, alias's new id, or a tracked login)."""
    if user_id := event.get("user_id"):
        state.user_id = text(user_id)
    if not state.anonymous_id and (anonymous_id := event.get("anonymous_id")):
        state.anonymous_id = text(anonymous_id)
    if not state.source:
        state.source = event.get("source") or ""


def record(state: VisitorState, session: SessionState, event: EventRecord, ts: int) -> Order | None:
    """Count the event in its session; return the order it completed, if any."""
    session.events += 1
    state.events += 1
    kind = event.get("type")
    if kind in PAGE_TYPES:
        session.pageviews += 1
        _page(session, page_of(event), ts)
        return None
    if kind != "track":
        return None
    name = event.get("event") or ""
    p = props(event)
    if name == PAGE_PING:
        session.engaged_s += min(max(num(p.get("engaged_seconds")), 0.0), MAX_PING_S)
        return None
    session.interactions += 1
    return _commerce(state, session, name, p, event, ts)


def _page(session: SessionState, page: str, ts: int) -> None:
    if not page:
        return
    if not session.landing_page or ts < session.landing_ts:
        session.landing_page, session.landing_ts = page, ts
    if ts >= session.exit_ts:
        session.exit_page, session.exit_ts = page, ts


def _commerce(
    state: VisitorState, session: SessionState, name: str, p: dict, event: EventRecord, ts: int
) -> Order | None:
    if currency := text(p.get("currency"))[:8]:
        state.currency = currency
    if name == PRODUCT_VIEWED:
        url = text(p.get("url")) or page_of(event)
        state.last_product = (text(p.get("product_id")), text(p.get("name")), url[:MAX_TEXT])
    elif name == PRODUCT_ADDED:
        if (got := line(p)) is not None:
            state.cart = cart.add(state.cart, got)
        session.cart_touched = True
    elif name == PRODUCT_REMOVED:
        if (got := line({**p, "quantity": 0})) is not None:
            quantity = int(num(p["quantity"])) if "quantity" in p else None
            state.cart = cart.remove(state.cart, got, quantity)
        session.cart_touched = True
    elif name in CART_SNAPSHOTS and (snapshot := lines(p)) is not None:
        state.cart = snapshot[:MAX_CART_LINES]
        session.cart_touched = True
    if name in CHECKOUT:
        session.checkout = session.cart_touched = True
    if name == ORDER_COMPLETED:
        return _order(state, session, p, ts)
    if name == ORDER_REFUNDED:
        state.refunds += 1
        session.refunds += 1
        state.refunded = round(state.refunded + _amount(p, 0.0), 2)
    return None


def _amount(p: dict, default: float) -> float:
    for key in AMOUNT_KEYS:
        if key in p:
            return max(num(p[key]), 0.0)
    return default


def _order(state: VisitorState, session: SessionState, p: dict, ts: int) -> Order | None:
    order_id = text(p.get("order_id"))
    if order_id and order_id in state.order_ids:
        return None  # the same order reported twice (a reloaded thank-you page)
    ordered = lines(p) or state.cart
    revenue = round(_amount(p, cart.value(ordered)), 2)
    first = state.orders == 0
    state.orders += 1
    state.revenue = round(state.revenue + revenue, 2)
    state.last_order_ts = max(state.last_order_ts, ts)
    if order_id:
        state.order_ids = [*state.order_ids[-(MAX_ORDER_IDS - 1) :], order_id]
    state.cart = []
    session.orders += 1
    session.revenue = round(session.revenue + revenue, 2)
    return Order(order_id, revenue, ordered, first)
