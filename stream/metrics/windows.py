"""Live 1-minute journey metrics as small increments, per (partition, window, key). Pure.

Every state record here is small and fixed in size, whatever the traffic: the pending
increment of one metric row, or a partition's clock. What a row needs to know about a
visitor (was the visitor already counted in this row? which row did the visitor's
session start in? what did its close count?) lives in that visitor's journey state
(observe.py), so nothing holds every open session or visitor of a partition, and a
batch writes only the rows it changed.

The rules, in one place:
- A row is a 1-minute window of EVENT time and a key (source, campaign, device type,
  new/returning visitor). An event counts in the row of its own time; the key's
  campaign is the event's utm_campaign, else its session's (the event that opened it).
- visitors = distinct visitors with an event in the row (the visitor state remembers
  its last MAX_COUNTED rows).
- A session counts in the row of its opening event; when it closes, its bounce and
  stage_reached land in that same row, and a reopened (amended) session takes them
  back (negative increments) until it closes again. Stage changes and cart
  abandonments count in the row of their time under the visitor's latest key. Bots
  count nothing.
- Rows are published as INCREMENTS on tick records (which carry the partition clock in
  the log): at each tick every row changed since the previous one is published once,
  numbered by the partition's publish sequence (`version`), and leaves the state. The
  same log gives the same increments and numbers, whatever the batch boundaries or
  crash points. ClickHouse keeps one row per (window, key, partition, version)
  (ReplacingMergeTree, so a replay adds nothing) and figures are sums: a late event,
  however late, adds to its window, and no state is kept for a window once published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import blake2b
from typing import Any

import orjson

from stream.metrics import figures as fig
from stream.metrics.figures import Dims
from stream.sessionize.ids import idempotency_key

FORMAT = 1
MAX_COUNTED = 8
MAX_DIM = 200  # characters of one key part: a row's size is bounded
_PAGE_TYPES = frozenset({"page", "screen"})

# (figure index, amount) pairs; counts stay ints (a row's JSON says 1, not 1.0)
Figures = tuple[tuple[int, int | float], ...]


class Delta:
    """One row change. A plain class with its __init__ written out: one or more are made
    per event, and compiled, a NamedTuple's (or a dataclass's) generated __init__ stays
    interpreted Python (2 % of the engine, BENCHMARKS.md, seventh session)."""

    __slots__ = ("window", "dims", "figures")

    def __init__(self, window: int, dims: Dims, figures: Figures = ()) -> None:
        self.window = window
        self.dims = dims
        self.figures = figures

    def __repr__(self) -> str:
        return f"Delta({self.window!r}, {self.dims!r}, {self.figures!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Delta):
            return NotImplemented
        return (self.window, self.dims, self.figures) == (other.window, other.dims, other.figures)

    def __hash__(self) -> int:
        return hash((self.window, self.dims, self.figures))


@dataclass(slots=True, init=False)
class MetricRow:
    """The increment of one row since it was last published."""

    figures: list = field(default_factory=lambda: list(fig.ZERO))

    def __init__(self, figures: list | None = None) -> None:  # written out, as Delta's
        self.figures = list(fig.ZERO) if figures is None else figures

    def fold(self, delta: Delta) -> None:
        f = self.figures
        for i, amount in delta.figures:
            f[i] += amount

    def encode(self) -> bytes:
        return orjson.dumps([FORMAT, *self.figures])

    @classmethod
    def decode(cls, raw: bytes) -> MetricRow:
        data = orjson.loads(raw)
        if not isinstance(data, list) or not data or data[0] != FORMAT:
            raise ValueError(f"not a metric row of format {FORMAT}")
        figures = data[1:]
        if len(figures) > len(fig.FIGURES):
            raise ValueError("metric row written by a newer format")
        return cls(figures + list(fig.ZERO[len(figures) :]))

    def as_output(self, partition: int, window: int, dims: Dims, version: int) -> dict:
        row = fig.as_row(window, dims, partition, self.figures, version)
        row["idempotency_key"] = metric_row_key(row)
        return row


@dataclass(slots=True)
class PartitionRecord:
    """A partition's clock (the largest arrival time in its log so far), how many times
    it published metric rows, and the last tick applied (a replayed tick is a no-op)."""

    clock: int = 0
    published: int = 0
    tick_offset: int = -1

    def encode(self) -> bytes:
        return orjson.dumps([FORMAT, self.clock, self.published, self.tick_offset])

    @classmethod
    def decode(cls, raw: bytes) -> PartitionRecord:
        _, clock, published, *rest = orjson.loads(raw)
        return cls(clock, published, rest[0] if rest else -1)


# --- state keys ---------------------------------------------------------------


@lru_cache(maxsize=65_536)
def row_key(partition: int, window: int, dims: Dims) -> bytes:
    return orjson.dumps([partition, window, *dims])


def parse_row_key(key: bytes) -> tuple[int, int, Dims]:
    partition, window, *dims = orjson.loads(key)
    return partition, window, tuple(dims)


def key_partition(key: bytes) -> int:
    """The partition a key of the windows table belongs to (rows and clocks alike)."""
    if is_partition_key(key):
        return int(key[2:])
    return int(key[1 : key.index(b",")])


def partition_key(partition: int) -> bytes:
    return b"p|%d" % partition


def is_partition_key(key: bytes) -> bool:
    return key.startswith(b"p|")


def metric_row_key(row: dict[str, Any]) -> str:
    """Idempotency key of a published increment: partition, window, key and version
    (the partition's publish sequence). A replay re-publishes the same key."""
    return idempotency_key(
        str(row["partition"]),
        str(row["window_start"]),
        row["source"],
        row["campaign"],
        row["device_type"],
        row["visitor_type"],
        str(row["version"]),
    )


# --- from journey facts to deltas ----------------------------------------------


def _dim(value: Any, default: str) -> str:
    return (value or default)[:MAX_DIM] if isinstance(value, str) else default


def dims_for(
    event: dict[str, Any], previous: Dims | None, session_started: bool, new: bool
) -> Dims:
    campaign = event.get("utm_campaign")
    if not campaign:
        campaign = fig.NO_CAMPAIGN if session_started or previous is None else previous[1]
    return (
        _dim(event.get("source"), ""),
        _dim(campaign, fig.NO_CAMPAIGN),
        _dim(event.get("device_type"), fig.UNKNOWN_DEVICE),
        fig.NEW if new else fig.RETURNING,
    )


@lru_cache(maxsize=65_536)
def _hash(dims: Dims) -> int:
    return int.from_bytes(blake2b("\x1f".join(dims).encode(), digest_size=6).digest(), "big")


def first_in_row(counted: list, window: int, dims: Dims) -> tuple[bool, list]:
    """Is this the visitor's first event in the row? And its updated `counted` list."""
    entry = (window, _hash(dims))
    if entry in counted:
        return False, counted
    return True, [*counted[-(MAX_COUNTED - 1) :], entry]


def event_figures(
    event: dict[str, Any],
    *,
    first_in_row: bool,
    new_visitor: bool,
    session_started: bool,
    cart_created: bool,
    order_counted: bool,
) -> Figures:
    """What one applied (non-bot) event adds to its row."""
    out: list[tuple[int, int | float]] = []
    if first_in_row:
        out += [(fig.VISITORS, 1), (fig.NEW_VISITORS if new_visitor else fig.RETURNING_VISITORS, 1)]
    if session_started:
        out.append((fig.SESSIONS, 1))
    if cart_created:
        out.append((fig.CARTS_CREATED, 1))
    kind = event.get("type")
    if kind in _PAGE_TYPES:
        out.append((fig.PAGEVIEWS, 1))
        return tuple(out)
    if kind != "track":
        return tuple(out)
    name = event.get("event")
    props = event.get("properties")
    props = props if isinstance(props, dict) else {}
    if name == "Page Ping":
        seconds = fig.number(props.get("engaged_seconds"))
        if seconds is not None and seconds > 0:
            out.append((fig.ENGAGED_SECONDS, seconds))
    elif name == "Checkout Started":
        out.append((fig.CHECKOUTS, 1))
    elif name == "Order Completed":
        if order_counted:
            out += [(fig.ORDERS, 1), (fig.REVENUE, fig.order_value(props))]
    elif name == "Order Refunded":
        out.append((fig.REFUNDS, 1))
    elif name in ("Product Reviewed", "Feedback Submitted"):
        stars = fig.rating(props)
        if stars is not None:
            out += [(fig.RATINGS_COUNT, 1), (fig.RATINGS_SUM, stars)]
        nps = fig.nps_score(props) if name == "Feedback Submitted" else None
        if nps is not None:
            out.append((fig.NPS_COUNT, 1))
            if nps >= 9:
                out.append((fig.NPS_PROMOTERS, 1))
            elif nps <= 6:
                out.append((fig.NPS_DETRACTORS, 1))
    return tuple(out)


def session_close_figures(bounce: bool, stage: str, sign: int = 1) -> Figures:
    """A closed session's bounce and stage_reached (sign -1: a reopened session takes
    back what its earlier close added)."""
    out: list[tuple[int, int | float]] = []
    if bounce:
        out.append((fig.BOUNCES, sign))
    if (i := fig.STAGE_SESSIONS.get(stage)) is not None:
        out.append((i, sign))
    return tuple(out)


STAGE_CHANGE = ((fig.STAGE_TRANSITIONS, 1),)
CART_ABANDONED = ((fig.CARTS_ABANDONED, 1),)
