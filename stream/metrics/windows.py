"""Live 1-minute journey metrics of ONE Kafka partition, by event time. Pure: no Faust, no Kafka.

The shell keeps one `WindowAccumulator` per partition, feeds it what the journey core
applied (events with their outcome flags, closed sessions, stage changes, triggers),
calls `close(watermark)` once per batch or tick, sends the rows it returns, and writes
`encode()` back to its table as one value. Rows carry the partition: rows of different
partitions add up in ClickHouse, and a re-emitted row (same partition, window and key)
replaces the earlier one (ReplacingMergeTree by `version`).

The rules, in one place:
- A window [start, start + 60 s) is complete once the partition watermark is past
  `window_end + lateness`; `close` emits its rows and forgets its distinct-visitor sets.
  An event for a complete window is dropped and counted in `late_dropped`.
- Bots (`is_bot`) count nothing. A bot's visitor id is remembered for a few windows
  so its stage changes and triggers are skipped too.
- An event's key is its source, device type, visitor type (from the journey's
  `new_visitor`) and the campaign of its SESSION: the campaign of the event that opened
  the session, or a later event's non-empty utm_campaign, else "(none)". Most events
  of a campaign visit carry no utm_campaign, and must still count for the campaign.
- visitors = distinct visitors with an event in the window and key.
- A session counts where its opening event was counted (`sessions`); when it closes,
  its bounce and stage_reached land in that same row (the window of its start), so
  bounces <= sessions per row. A row that still has open sessions is kept after it
  was emitted ("settling"), and re-emitted with a higher version when a session of
  it closes; it is forgotten once all its sessions closed, or `settle_ms` after its
  window. A closed session whose start was not seen here (or was already matched: a
  repeated summary) is not counted, only tallied in `unmatched_sessions`.
- Stage changes and triggers count in the window of their `ts`, under the visitor's
  latest key; for a complete window, only if that row is still settling.
- An order counts once per order id (recent ids of the visitor are kept).
- `version` = observations folded into the row: same inputs, same version; more
  data, higher version. Replaying the same inputs after `decode` yields the same rows.
- Memory: open windows, settling rows, and one small entry per visitor with an open
  session or an event less than three windows before the newest complete one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.metrics import figures as fig
from stream.metrics.figures import WINDOW_MS, Dims, window_of
from stream.records import EventRecord
from stream.sessionize.ids import idempotency_key
from stream.sessionize.rules import SessionRules

FORMAT = 1
MAX_ORDER_IDS = 8
_DEFAULTS = SessionRules()
# How long an emitted row waits for the sessions that started in it (a session can last
# session_max, then needs timeout + lateness to close). `settle_ms(rules)` for settings.
SETTLE_MS = _DEFAULTS.max_ms + _DEFAULTS.timeout_ms + _DEFAULTS.lateness_ms

_PAGE_TYPES = frozenset({"page", "screen"})
_TRACKED = frozenset(
    {
        "Page Ping",
        "Checkout Started",
        "Order Completed",
        "Order Refunded",
        "Product Reviewed",
        "Feedback Submitted",
    }
)


def settle_ms(rules: SessionRules) -> int:
    return rules.max_ms + rules.timeout_ms + rules.lateness_ms


@dataclass(slots=True)
class Row:
    """The figures of one window and key."""

    figures: list = field(default_factory=lambda: list(fig.ZERO))
    version: int = 0  # observations folded in
    open: int = 0  # sessions started here, not closed yet
    dirty: bool = False  # settling: changed since it was last emitted
    visitors: set[str] = field(default_factory=set)  # while the window is open


@dataclass(slots=True)
class Visitor:
    """What the accumulator remembers of a visitor between events."""

    dims: Dims  # latest key: dims of the visitor's stage changes and triggers
    seen: int  # latest window with an event
    bot: bool = False
    starts: list[tuple[int, Dims]] = field(default_factory=list)  # open sessions: (start ts, key)
    orders: list[str] = field(default_factory=list)  # recent order ids


@dataclass(slots=True)
class WindowAccumulator:
    windows: dict[int, dict[Dims, Row]] = field(default_factory=dict)  # open, by start
    settling: dict[tuple[int, Dims], Row] = field(default_factory=dict)  # emitted, sessions open
    visitors: dict[str, Visitor] = field(default_factory=dict)
    closed_until: int = 0  # windows starting before this are complete
    late_dropped: int = 0
    unmatched_sessions: int = 0

    # --- inputs ---------------------------------------------------------------
    def add_event(
        self,
        event: EventRecord,
        *,
        new_visitor: bool,
        session_started: bool,
        cart_created: bool,
    ) -> None:
        """One event the journey applied. `new_visitor`: it belongs to the visitor's first
        session; `session_started`: it opened a session; `cart_created`: it is the first
        Product Added of its session."""
        visitor_id = event["visitor_id"]
        ts = event["ts"]
        w = ts - ts % WINDOW_MS
        entry = self.visitors.get(visitor_id)
        if event.get("is_bot"):
            self._remember_bot(visitor_id, entry, event, w)
            return
        if w < self.closed_until:
            self.late_dropped += 1
            return
        utm = event.get("utm_campaign")
        if entry is None or session_started:
            campaign = utm or fig.NO_CAMPAIGN
        else:
            campaign = utm or entry.dims[1]
        dims = (
            event.get("source") or "",
            campaign,
            event.get("device_type") or fig.UNKNOWN_DEVICE,
            fig.NEW if new_visitor else fig.RETURNING,
        )
        if entry is None:
            entry = self.visitors[visitor_id] = Visitor(dims, w)
        else:
            entry.dims = dims
            entry.bot = False
            if w > entry.seen:
                entry.seen = w

        rows = self.windows.get(w)
        if rows is None:
            rows = self.windows[w] = {}
        row = rows.get(dims)
        if row is None:
            row = rows[dims] = Row()
        row.version += 1
        f = row.figures
        if visitor_id not in row.visitors:
            row.visitors.add(visitor_id)
            f[fig.VISITORS] += 1
            f[fig.NEW_VISITORS if new_visitor else fig.RETURNING_VISITORS] += 1
        if session_started:
            f[fig.SESSIONS] += 1
            row.open += 1
            entry.starts.append((ts, dims))
        if cart_created:
            f[fig.CARTS_CREATED] += 1
        kind = event.get("type")
        if kind in _PAGE_TYPES:
            f[fig.PAGEVIEWS] += 1
        elif kind == "track" and event.get("event") in _TRACKED:
            self._track(f, event, entry)

    def add_session_closed(self, session: dict[str, Any]) -> None:
        """A session summary; counted only once closed, in the row its start was counted in."""
        if not session.get("closed") or session.get("is_bot"):
            return
        entry = self.visitors.get(session.get("visitor_id", ""))
        started = int(session.get("started_at") or 0)
        ended = int(session.get("ended_at") or started)
        start = None
        if entry is not None:
            for i, (ts, _) in enumerate(entry.starts):
                if started <= ts <= ended:  # sessions never overlap: this one is ours
                    start = entry.starts.pop(i)
                    break
        if start is None:
            self.unmatched_sessions += 1
            return
        row = self._row_for(window_of(start[0]), start[1])
        if row is None:
            self.late_dropped += 1
            return
        row.open -= 1
        row.version += 1
        if session.get("bounce"):
            row.figures[fig.BOUNCES] += 1
        stage = fig.STAGE_SESSIONS.get(session.get("stage_reached") or "")
        if stage is not None:
            row.figures[stage] += 1

    def add_stage_change(self, change: dict[str, Any]) -> None:
        row = self._row_of_visitor_record(change)
        if row is not None:
            row.version += 1
            row.figures[fig.STAGE_TRANSITIONS] += 1

    def add_trigger(self, trigger: dict[str, Any]) -> None:
        if trigger.get("trigger") != "cart_abandoned":
            return
        row = self._row_of_visitor_record(trigger)
        if row is not None:
            row.version += 1
            row.figures[fig.CARTS_ABANDONED] += 1

    # --- output ---------------------------------------------------------------
    def close(
        self, watermark_ms: int, lateness_ms: int, partition: int, *, settle_ms: int = SETTLE_MS
    ) -> list[dict]:
        """Rows of the windows the watermark completed (window_end + lateness < watermark),
        then the settling rows that changed since they were emitted. Removes what is done."""
        until = max(self.closed_until, window_of(watermark_ms - lateness_ms - 1))
        out = []
        for w in sorted(w for w in self.windows if w < until):
            rows = self.windows.pop(w)
            for dims in sorted(rows):
                row = rows[dims]
                out.append(fig.as_row(w, dims, partition, row.figures, row.version))
                if row.open > 0:
                    row.visitors = set()
                    self.settling[(w, dims)] = row
        self.closed_until = until

        oldest = window_of(watermark_ms - settle_ms)
        for key in sorted(self.settling):
            row = self.settling[key]
            if row.dirty:
                out.append(fig.as_row(key[0], key[1], partition, row.figures, row.version))
                row.dirty = False
            if row.open <= 0 or key[0] < oldest:
                del self.settling[key]

        stale = until - 3 * WINDOW_MS  # last seen > 2 windows before the newest complete one
        for visitor_id, entry in list(self.visitors.items()):
            if entry.starts and min(entry.starts)[0] < oldest:
                entry.starts = [s for s in entry.starts if s[0] >= oldest]
            if entry.seen < stale and not entry.starts:
                del self.visitors[visitor_id]
        return out

    # --- helpers --------------------------------------------------------------
    def _track(self, f: list, event: EventRecord, entry: Visitor) -> None:
        name = event.get("event")
        props = event.get("properties")
        if not isinstance(props, dict):
            props = {}
        if name == "Page Ping":
            seconds = fig.number(props.get("engaged_seconds"))
            if seconds is not None and seconds > 0:
                f[fig.ENGAGED_SECONDS] += seconds
        elif name == "Checkout Started":
            f[fig.CHECKOUTS] += 1
        elif name == "Order Completed":
            order_id = props.get("order_id")
            order_id = "" if order_id is None else str(order_id)
            if order_id and order_id in entry.orders:
                return
            if order_id:
                entry.orders.append(order_id)
                del entry.orders[:-MAX_ORDER_IDS]
            f[fig.ORDERS] += 1
            f[fig.REVENUE] += fig.order_value(props)
        elif name == "Order Refunded":
            f[fig.REFUNDS] += 1
        else:  # Product Reviewed, Feedback Submitted
            stars = fig.rating(props)
            if stars is not None:
                f[fig.RATINGS_COUNT] += 1
                f[fig.RATINGS_SUM] += stars
            nps = fig.nps_score(props) if name == "Feedback Submitted" else None
            if nps is not None:
                f[fig.NPS_COUNT] += 1
                if nps >= 9:
                    f[fig.NPS_PROMOTERS] += 1
                elif nps <= 6:
                    f[fig.NPS_DETRACTORS] += 1

    def _remember_bot(
        self, visitor_id: str, entry: Visitor | None, event: EventRecord, w: int
    ) -> None:
        if entry is None:
            self.visitors[visitor_id] = Visitor(fig.dims_of(event), w, bot=True)
        else:
            entry.bot = True
            entry.seen = max(entry.seen, w)

    def _row_of_visitor_record(self, record: dict[str, Any]) -> Row | None:
        """The row of a stage change or trigger: window of its ts, the visitor's latest key."""
        if record.get("is_bot"):
            return None
        entry = self.visitors.get(record.get("visitor_id", ""))
        if entry is not None and entry.bot:
            return None
        dims = entry.dims if entry is not None else fig.dims_of(record)
        row = self._row_for(window_of(int(record["ts"])), dims)
        if row is None:
            self.late_dropped += 1
        return row

    def _row_for(self, w: int, dims: Dims) -> Row | None:
        """An open window's row (created), a settling row (marked for re-emission), or None."""
        if w >= self.closed_until:
            rows = self.windows.get(w)
            if rows is None:
                rows = self.windows[w] = {}
            row = rows.get(dims)
            if row is None:
                row = rows[dims] = Row()
            return row
        row = self.settling.get((w, dims))
        if row is not None:
            row.dirty = True
        return row

    # --- persistence ----------------------------------------------------------
    def encode(self) -> bytes:
        """One positional JSON value: [FORMAT, closed_until, late_dropped, unmatched,
        keys, visitors, open rows, settling rows]; keys and visitors are referred to by
        index. Rows end with their figures: a figure added later decodes as 0."""
        keys: dict[Dims, int] = {}

        def key(dims: Dims) -> int:
            i = keys.get(dims)
            if i is None:
                i = keys[dims] = len(keys)
            return i

        index = {visitor_id: i for i, visitor_id in enumerate(self.visitors)}
        visitors = [
            [vid, key(v.dims), v.seen, v.bot, [[ts, key(d)] for ts, d in v.starts], v.orders]
            for vid, v in self.visitors.items()
        ]

        def row(w: int, dims: Dims, r: Row) -> list:
            seen = sorted(index[v] for v in r.visitors)
            return [w, key(dims), r.version, r.open, r.dirty, seen, *r.figures]

        open_rows = [row(w, d, r) for w, rows in self.windows.items() for d, r in rows.items()]
        settling = [row(w, d, r) for (w, d), r in self.settling.items()]
        head = [FORMAT, self.closed_until, self.late_dropped, self.unmatched_sessions]
        return orjson.dumps([*head, list(keys), visitors, open_rows, settling])

    @classmethod
    def decode(cls, raw: bytes) -> WindowAccumulator:
        data = orjson.loads(raw)
        if not isinstance(data, list) or not data or data[0] != FORMAT:
            raise ValueError(f"not a metrics accumulator of format {FORMAT}")
        _, closed_until, late, unmatched, keys, visitors, open_rows, settling = data
        keys = [tuple(k) for k in keys]
        acc = cls(closed_until=closed_until, late_dropped=late, unmatched_sessions=unmatched)
        ids = []
        for vid, k, seen, bot, starts, orders in visitors:
            ids.append(vid)
            acc.visitors[vid] = Visitor(
                keys[k], seen, bot, [(t, keys[d]) for t, d in starts], orders
            )

        def row(item: list) -> tuple[int, Dims, Row]:
            w, k, version, open_, dirty, seen, *figures = item
            if len(figures) > len(fig.FIGURES):
                raise ValueError("metrics accumulator written by a newer format")
            figures += fig.ZERO[len(figures) :]
            return w, keys[k], Row(figures, version, open_, dirty, {ids[i] for i in seen})

        for item in open_rows:
            w, dims, r = row(item)
            acc.windows.setdefault(w, {})[dims] = r
        for item in settling:
            w, dims, r = row(item)
            acc.settling[(w, dims)] = r
        return acc


def metric_row_key(row: dict[str, Any]) -> str:
    """Idempotency key of an emitted row: partition, window, key and version. A replay
    re-emits the same key; a re-emission with more data has a new one (higher version)."""
    return idempotency_key(
        str(row["partition"]),
        str(row["window_start"]),
        row["source"],
        row["campaign"],
        row["device_type"],
        row["visitor_type"],
        str(row["version"]),
    )
