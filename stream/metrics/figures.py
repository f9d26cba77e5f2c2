"""What one metric row counts: its key, its figures in column order, and how an event's
properties are read into them. Plain data and pure functions; nothing here raises.

A row is one tumbling 1-minute window of EVENT time (`window_start` a multiple of
60,000 ms, end exclusive) for one key: (source, campaign, device_type, visitor_type).
"""

from __future__ import annotations

import math
from typing import Any

WINDOW_MS = 60_000
NO_CAMPAIGN = "(none)"
UNKNOWN_DEVICE = "(unknown)"
NEW = "new"
RETURNING = "returning"

Dims = tuple[str, ...]  # source, campaign, device_type, visitor_type
DIMS = ("source", "campaign", "device_type", "visitor_type")

STAGES = ("awareness", "consideration", "decision", "purchase", "retention", "advocacy")

# Column order of the figures; the encoding relies on it: add new figures at the end only.
FIGURES = (
    "visitors",
    "new_visitors",
    "returning_visitors",
    "sessions",
    "bounces",
    "pageviews",
    "engaged_seconds",
    *(f"sessions_{stage}" for stage in STAGES),
    "stage_transitions",
    "carts_created",
    "carts_abandoned",
    "checkouts",
    "orders",
    "revenue",
    "refunds",
    "ratings_count",
    "ratings_sum",
    "nps_count",
    "nps_promoters",
    "nps_detractors",
)
FLOATS = frozenset({"engaged_seconds", "revenue", "ratings_sum"})
ZERO = tuple(0.0 if name in FLOATS else 0 for name in FIGURES)

_I = {name: i for i, name in enumerate(FIGURES)}
VISITORS = _I["visitors"]
NEW_VISITORS = _I["new_visitors"]
RETURNING_VISITORS = _I["returning_visitors"]
SESSIONS = _I["sessions"]
BOUNCES = _I["bounces"]
PAGEVIEWS = _I["pageviews"]
ENGAGED_SECONDS = _I["engaged_seconds"]
STAGE_SESSIONS = {stage: _I[f"sessions_{stage}"] for stage in STAGES}
STAGE_TRANSITIONS = _I["stage_transitions"]
CARTS_CREATED = _I["carts_created"]
CARTS_ABANDONED = _I["carts_abandoned"]
CHECKOUTS = _I["checkouts"]
ORDERS = _I["orders"]
REVENUE = _I["revenue"]
REFUNDS = _I["refunds"]
RATINGS_COUNT = _I["ratings_count"]
RATINGS_SUM = _I["ratings_sum"]
NPS_COUNT = _I["nps_count"]
NPS_PROMOTERS = _I["nps_promoters"]
NPS_DETRACTORS = _I["nps_detractors"]


def window_of(ts: int) -> int:
    """Start of the 1-minute window holding `ts`: 59,999 is in [0, 60,000), 60,000 is not."""
    return ts - ts % WINDOW_MS


def dims_of(record: dict[str, Any]) -> Dims:
    """The key of a record that carries its own dimensions (a session summary, or a stage
    change / trigger of a visitor the accumulator no longer knows)."""
    return (
        record.get("source") or "",
        record.get("utm_campaign") or NO_CAMPAIGN,
        record.get("device_type") or UNKNOWN_DEVICE,
        NEW if record.get("is_new_visitor") else RETURNING,
    )


def number(value: Any) -> float | None:
    """A finite float from a number or numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def order_value(props: dict[str, Any]) -> float:
    """Segment's order amount: `revenue`, else `total`, else `value`; 0 when none is a number."""
    for name in ("revenue", "total", "value"):
        got = number(props.get(name))
        if got is not None:
            return got
    return 0.0


def rating(props: dict[str, Any]) -> float | None:
    """A 1..5 rating, or None."""
    got = number(props.get("rating"))
    return got if got is not None and 1.0 <= got <= 5.0 else None


def nps_score(props: dict[str, Any]) -> int | None:
    """A whole 0..10 NPS answer, or None."""
    got = number(props.get("nps"))
    if got is None or not got.is_integer() or not 0 <= got <= 10:
        return None
    return int(got)


def as_row(window_start: int, dims: Dims, partition: int, figures: list, version: int) -> dict:
    """The output row (topic journey.metrics, table clickstream.journey_metrics_1m)."""
    row: dict[str, Any] = {
        "window_start": window_start,
        "window_end": window_start + WINDOW_MS,
        "source": dims[0],
        "campaign": dims[1],
        "device_type": dims[2],
        "visitor_type": dims[3],
        "partition": partition,
    }
    for name, value in zip(FIGURES, figures, strict=True):
        row[name] = round(value, 6) if name in FLOATS else value
    row["version"] = version
    return row
