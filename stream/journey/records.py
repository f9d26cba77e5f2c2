"""The journey records the processor publishes: contracts of the ClickHouse sink.

Keys are exactly those of schemas/topics/*.v1.json; times are epoch ms.
"""

from __future__ import annotations

from stream.journey import cart
from stream.journey.state import SessionState, VisitorState
from stream.sessionize.ids import idempotency_key


def stage_change(
    state: VisitorState,
    from_stage: str,
    to_stage: str,
    ts: int,
    session_id: str,
    event_id: str,
    key: str = "",
) -> dict:
    """`key`: what makes the transition unique when its event does not (a lapse)."""
    return {
        # Not from_stage: a transition re-sent with a corrected from_stage (an event that
        # arrived out of order, see process._insert) replaces the earlier row.
        "idempotency_key": idempotency_key(state.visitor_id, to_stage, key or event_id),
        "visitor_id": state.visitor_id,
        "anonymous_id": state.anonymous_id,
        "user_id": state.user_id,
        "source": state.source,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "ts": ts,
        "session_id": session_id,
        "event_id": event_id,
    }


def is_bounce(s: SessionState) -> bool:
    """One page view, under 10 s engaged, no interaction."""
    return s.pageviews == 1 and s.engaged_s < 10 and s.interactions == 0


def session_summary(state: VisitorState, s: SessionState, close_reason: str = "") -> dict:
    """A live summary when `close_reason` is "", else the final one (version + 1)."""
    closed = bool(close_reason)
    return {
        "session_id": s.id,
        "visitor_id": state.visitor_id,
        "anonymous_id": state.anonymous_id,
        "user_id": state.user_id,
        "source": state.source,
        "started_at": s.start,
        "ended_at": s.end,
        "duration_s": (s.end - s.start) / 1000,
        "pageviews": s.pageviews,
        "events": s.events,
        "engaged_seconds": round(s.engaged_s, 3),
        "bounce": is_bounce(s),
        "landing_page": s.landing_page,
        "exit_page": s.exit_page,
        "referrer": s.referrer,
        "ref_source": s.ref_source,
        "ref_medium": s.ref_medium,
        "utm_source": s.utm_source,
        "utm_medium": s.utm_medium,
        "utm_campaign": s.utm_campaign,
        "click_id": s.click_id,
        "device_type": s.device_type,
        "browser": s.browser,
        "os": s.os,
        "is_bot": s.is_bot,
        "stage_reached": s.stage,
        "cart_value": cart.value(state.cart),
        "cart_items": cart.items(state.cart),
        "orders": s.orders,
        "revenue": s.revenue,
        "refunds": s.refunds,
        "is_new_visitor": s.is_new,
        "closed": closed,
        "close_reason": close_reason,
        # Grows with every change: events, and each close (a reopened session that
        # closes again has more events, so a higher version than its first close).
        "version": 2 * s.events + closed,
    }


def trigger(
    state: VisitorState,
    name: str,
    ts: int,
    session_id: str,
    key: str,
    order_id: str = "",
    revenue: float = 0.0,
    lines: list | None = None,
) -> dict:
    """`key` is what makes this trigger unique for the visitor (session or event id)."""
    lines = state.cart if lines is None else lines
    product = state.last_product
    return {
        "idempotency_key": idempotency_key(name, state.visitor_id, key),
        "trigger": name,
        "visitor_id": state.visitor_id,
        "anonymous_id": state.anonymous_id,
        "user_id": state.user_id,
        "source": state.source,
        "ts": ts,
        "session_id": session_id,
        "cart_items": cart.as_records(lines),
        "cart_value": cart.value(lines),
        "currency": state.currency,
        "last_product_viewed": (
            {"product_id": product[0], "name": product[1], "url": product[2]} if product else None
        ),
        "order_id": order_id,
        "revenue": revenue,
    }


def visitor_snapshot(state: VisitorState) -> dict:
    return {
        "visitor_id": state.visitor_id,
        "anonymous_id": state.anonymous_id,
        "user_id": state.user_id,
        "source": state.source,
        "first_seen": state.first_seen,
        "last_seen": state.last_seen,
        "sessions": state.session_count,
        "orders": state.orders,
        "revenue": state.revenue,
        "lifetime_value": round(state.revenue - state.refunded, 2),
        "stage": state.stage,
        "first_utm_source": state.first_utm_source,
        "first_utm_medium": state.first_utm_medium,
        "first_utm_campaign": state.first_utm_campaign,
        "first_referrer": state.first_referrer,
        "first_landing_page": state.first_landing_page,
        "version": state.version,
    }
