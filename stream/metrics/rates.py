"""Rates derived from summed figures (rows of any windows, keys and partitions added up).

Every division is 0-safe: a zero (or negative) denominator gives 0.0, never an error or
NaN, so an empty dashboard tile shows 0. Rates are fractions (0.25 = 25 %), except NPS,
which is on its usual -100..100 scale.
"""

from __future__ import annotations

from collections.abc import Mapping


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def conversion_rate(orders: float, sessions: float) -> float:
    return ratio(orders, sessions)


def bounce_rate(bounces: float, sessions: float) -> float:
    """Bounces count when a session closes: over a live window this trails the sessions."""
    return ratio(bounces, sessions)


def avg_session_duration(duration_seconds: float, sessions: float) -> float:
    """Seconds per session, from the summed `duration_s` of closed sessions."""
    return ratio(duration_seconds, sessions)


def avg_time_on_page(engaged_seconds: float, pageviews: float) -> float:
    return ratio(engaged_seconds, pageviews)


def cart_abandonment_rate(carts_abandoned: float, carts_created: float) -> float:
    return ratio(carts_abandoned, carts_created)


def average_order_value(revenue: float, orders: float) -> float:
    return ratio(revenue, orders)


def new_vs_returning_ratio(new_visitors: float, returning_visitors: float) -> float:
    """New visitors per returning visitor (0.0 when there is no returning visitor)."""
    return ratio(new_visitors, returning_visitors)


def customer_lifetime_value(revenue: float, purchasers: float) -> float:
    """Revenue per distinct purchaser; the distinct count comes from the caller (visitors
    table), since purchasers cannot be added up across windows."""
    return ratio(revenue, purchasers)


def average_rating(ratings_sum: float, ratings_count: float) -> float:
    return ratio(ratings_sum, ratings_count)


def net_promoter_score(promoters: float, detractors: float, answers: float) -> float:
    """% promoters (9-10) - % detractors (0-6), from -100 to 100."""
    return 100.0 * ratio(promoters - detractors, answers)


def derive(totals: Mapping[str, float]) -> dict[str, float]:
    """Every rate a sum of metric rows supports (missing figures count as 0)."""
    t = totals.get
    return {
        "conversion_rate": conversion_rate(t("orders", 0), t("sessions", 0)),
        "bounce_rate": bounce_rate(t("bounces", 0), t("sessions", 0)),
        "avg_time_on_page": avg_time_on_page(t("engaged_seconds", 0), t("pageviews", 0)),
        "cart_abandonment_rate": cart_abandonment_rate(
            t("carts_abandoned", 0), t("carts_created", 0)
        ),
        "average_order_value": average_order_value(t("revenue", 0), t("orders", 0)),
        "new_vs_returning_ratio": new_vs_returning_ratio(
            t("new_visitors", 0), t("returning_visitors", 0)
        ),
        "average_rating": average_rating(t("ratings_sum", 0), t("ratings_count", 0)),
        "net_promoter_score": net_promoter_score(
            t("nps_promoters", 0), t("nps_detractors", 0), t("nps_count", 0)
        ),
    }
