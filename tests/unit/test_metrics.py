import time

import orjson
import pytest

from stream.metrics import FIGURES, WindowAccumulator, metric_row_key
from stream.metrics.figures import WINDOW_MS

pytestmark = pytest.mark.unit

LATE = 300_000  # allowed lateness, ms
P = 3  # partition
FLUSH = 10**13  # a watermark that completes every window


def event(ts, visitor="v1", kind="page", name="", props=None, **extra):
    e = {
        "message_id": f"m-{visitor}-{ts}-{name}",
        "type": kind,
        "event": name,
        "name": "",
        "visitor_id": visitor,
        "ts": ts,
        "received_at": 999_999_999,  # arrival time: never used for windows
        "source": "web",
        "properties": props or {},
        "device_type": "desktop",
        "is_bot": False,
        "utm_campaign": "",
    }
    e.update(extra)
    return e


def add(acc, e, new=True, started=False, cart=False):
    acc.add_event(e, new_visitor=new, session_started=started, cart_created=cart)


def flush(acc):
    return acc.close(FLUSH, LATE, P)


def one(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def session(visitor, started, ended, **extra):
    s = {
        "session_id": f"s-{visitor}-{started}",
        "visitor_id": visitor,
        "source": "web",
        "started_at": started,
        "ended_at": ended,
        "bounce": False,
        "utm_campaign": "",
        "device_type": "desktop",
        "is_bot": False,
        "stage_reached": "",
        "is_new_visitor": True,
        "closed": True,
        "close_reason": "timeout",
    }
    s.update(extra)
    return s


def test_windows_by_event_time_and_boundaries():
    acc = WindowAccumulator()
    # Arrival order is not event order; 59.999 s is the first window, 60.000 s the next.
    add(acc, event(60_000, "a"))
    add(acc, event(59_999, "a"))
    add(acc, event(0, "b"))
    rows = flush(acc)
    assert [(r["window_start"], r["window_end"], r["pageviews"]) for r in rows] == [
        (0, 60_000, 2),
        (60_000, 120_000, 1),
    ]
    assert one(rows, window_start=0)["visitors"] == 2
    assert all(r["partition"] == P for r in rows)
    assert list(rows[0])[:7] == [
        "window_start",
        "window_end",
        "source",
        "campaign",
        "device_type",
        "visitor_type",
        "partition",
    ]
    assert list(rows[0])[7:] == [*FIGURES, "version"]


def test_close_waits_for_watermark_past_end_plus_lateness():
    acc = WindowAccumulator()
    add(acc, event(10_000))
    assert acc.close(WINDOW_MS + LATE, LATE, P) == []  # == end + lateness: not yet
    rows = acc.close(WINDOW_MS + LATE + 1, LATE, P)
    assert [r["window_start"] for r in rows] == [0]
    assert acc.close(FLUSH, LATE, P) == []  # emitted once, then forgotten
    # An event for the completed window is dropped and counted.
    add(acc, event(59_999))
    assert acc.late_dropped == 1
    assert acc.windows == {}


def test_close_moves_the_horizon_even_for_windows_without_rows():
    acc = WindowAccumulator()
    acc.close(5 * WINDOW_MS + LATE + 1, LATE, P)
    add(acc, event(4 * WINDOW_MS + 1))
    add(acc, event(5 * WINDOW_MS))
    assert acc.late_dropped == 1
    assert [r["window_start"] for r in flush(acc)] == [5 * WINDOW_MS]


def test_bots_count_nothing():
    acc = WindowAccumulator()
    bot = {"is_bot": True, "device_type": "bot"}
    add(acc, event(1_000, "bot", **bot), started=True)
    add(
        acc, event(2_000, "bot", "track", "Order Completed", {"order_id": "o", "revenue": 5}, **bot)
    )
    acc.add_stage_change(
        {"visitor_id": "bot", "from_stage": "", "to_stage": "awareness", "ts": 1_000}
    )
    acc.add_trigger({"trigger": "cart_abandoned", "visitor_id": "bot", "ts": 2_000})
    acc.add_session_closed(session("bot", 1_000, 2_000, is_bot=True, bounce=True))
    acc.add_stage_change({"visitor_id": "x", "to_stage": "awareness", "ts": 1, "is_bot": True})
    assert flush(acc) == []
    assert acc.late_dropped == 0


def test_distinct_visitors_new_and_returning():
    acc = WindowAccumulator()
    for ts in (1_000, 2_000, 3_000):
        add(acc, event(ts, "a"), new=True)
    add(acc, event(4_000, "b"), new=False)
    add(acc, event(5_000, "b"), new=False)
    rows = flush(acc)
    new = one(rows, visitor_type="new")
    old = one(rows, visitor_type="returning")
    assert (new["visitors"], new["new_visitors"], new["returning_visitors"]) == (1, 1, 0)
    assert (old["visitors"], old["new_visitors"], old["returning_visitors"]) == (1, 0, 1)
    assert (new["pageviews"], old["pageviews"]) == (3, 2)
    assert new["version"] == 3


def test_campaign_sticks_to_the_session():
    acc = WindowAccumulator()
    add(acc, event(1_000, utm_campaign="spring"), started=True)
    add(acc, event(2_000))  # no utm on later pages: still the campaign's visit
    add(acc, event(3_000, kind="track", name="Checkout Started"))
    add(acc, event(4_000), started=True)  # a new session without utm
    rows = flush(acc)
    spring = one(rows, campaign="spring")
    assert (spring["sessions"], spring["pageviews"], spring["checkouts"]) == (1, 2, 1)
    none = one(rows, campaign="(none)")
    assert (none["sessions"], none["pageviews"], none["visitors"]) == (1, 1, 1)
    assert {r["source"] for r in rows} == {"web"}
    assert {r["device_type"] for r in rows} == {"desktop"}


def test_commerce_engagement_and_feedback_figures():
    acc = WindowAccumulator()
    t = "track"
    add(acc, event(1_000, kind=t, name="Page Ping", props={"engaged_seconds": 12.5}))
    add(acc, event(1_100, kind=t, name="Page Ping", props={"engaged_seconds": "bad"}))
    add(acc, event(1_200, kind=t, name="Product Added"), cart=True)
    add(acc, event(1_300, kind=t, name="Product Added"))  # not the session's first
    add(acc, event(1_400, kind=t, name="Checkout Started"))
    order = {"order_id": "o1", "revenue": 40.25, "total": 50}
    add(acc, event(1_500, kind=t, name="Order Completed", props=order))
    add(acc, event(1_600, kind=t, name="Order Completed", props=order))  # reload: once
    add(acc, event(1_700, kind=t, name="Order Completed", props={"order_id": 2, "total": "9.75"}))
    add(acc, event(1_800, kind=t, name="Order Refunded", props={"order_id": "o1"}))
    add(acc, event(1_900, kind=t, name="Product Reviewed", props={"rating": 4}))
    for i, answer in enumerate((10, 9, 8, 7, 6, 0, 11, 7.5, None)):
        add(acc, event(2_000 + i, kind=t, name="Feedback Submitted", props={"nps": answer}))
    add(acc, event(2_100, kind=t, name="Feedback Submitted", props={"rating": 2, "nps": 3}))
    add(acc, event(2_200, kind=t, name="Feedback Submitted", props={"rating": 9}))  # out of range
    row = one(flush(acc))
    assert row["engaged_seconds"] == 12.5
    assert (row["carts_created"], row["checkouts"], row["refunds"]) == (1, 1, 1)
    assert (row["orders"], row["revenue"]) == (2, 50.0)
    assert (row["ratings_count"], row["ratings_sum"]) == (2, 6.0)
    assert (row["nps_count"], row["nps_promoters"], row["nps_detractors"]) == (7, 2, 3)
    assert row["pageviews"] == 0 and row["visitors"] == 1


def test_session_close_counts_in_the_start_row_and_re_emits_it():
    acc = WindowAccumulator()
    add(acc, event(1_000, "a", utm_campaign="spring"), started=True)
    add(acc, event(2_000, "b"), started=True)
    rows = acc.close(WINDOW_MS + LATE + 1, LATE, P)
    spring = one(rows, campaign="spring")
    assert (spring["sessions"], spring["bounces"], spring["version"]) == (1, 0, 1)
    assert len(acc.settling) == 2  # both rows wait for their sessions
    # "a" bounces; the summary carries its own (other) campaign: the start row wins.
    acc.add_session_closed(session("a", 1_000, 1_000, bounce=True, stage_reached="awareness"))
    acc.add_session_closed(session("a", 1_000, 1_000, bounce=True))  # a duplicate: no start
    assert acc.unmatched_sessions == 1
    later = acc.close(40 * WINDOW_MS, LATE, P)
    again = one(later)
    assert again["campaign"] == "spring" and again["window_start"] == 0
    assert (again["sessions"], again["bounces"], again["sessions_awareness"]) == (1, 1, 1)
    assert again["version"] == 2
    assert metric_row_key(again) != metric_row_key(spring)
    assert len(acc.settling) == 1  # finished rows are forgotten; "b" still open
    acc.add_session_closed(session("b", 2_000, 200_000, stage_reached="decision"))
    last = one(acc.close(41 * WINDOW_MS, LATE, P))
    assert (last["campaign"], last["sessions_decision"], last["bounces"]) == ("(none)", 1, 0)
    assert acc.settling == {}
    assert acc.close(42 * WINDOW_MS, LATE, P) == []


def test_session_updates_and_unseen_sessions_are_not_counted():
    acc = WindowAccumulator()
    add(acc, event(1_000, "a"), started=True)
    acc.add_session_closed(session("a", 1_000, 1_000, closed=False, bounce=True))
    acc.add_session_closed(session("zz", 1_000, 1_000, bounce=True))
    row = one(flush(acc))
    assert row["bounces"] == 0
    assert acc.unmatched_sessions == 1


def test_session_whose_start_moved_earlier_still_matches():
    acc = WindowAccumulator()
    add(acc, event(61_000, "a"), started=True)
    add(acc, event(59_000, "a"))  # out of order: the session now starts in window 0
    acc.add_session_closed(session("a", 59_000, 61_000, bounce=False, stage_reached="purchase"))
    rows = flush(acc)
    start = one(rows, window_start=WINDOW_MS)
    assert (start["sessions"], start["sessions_purchase"]) == (1, 1)


def test_settling_rows_are_dropped_after_settle_ms():
    acc = WindowAccumulator()
    add(acc, event(1_000, "a"), started=True)
    acc.close(WINDOW_MS + LATE + 1, LATE, P, settle_ms=10 * WINDOW_MS)
    assert acc.settling
    acc.close(11 * WINDOW_MS + 1, LATE, P, settle_ms=10 * WINDOW_MS)
    assert acc.settling == {} and acc.visitors == {}
    acc.add_session_closed(session("a", 1_000, 1_000, bounce=True))
    assert acc.unmatched_sessions == 1


def test_stage_changes_and_triggers_use_the_visitors_latest_key():
    acc = WindowAccumulator()
    add(acc, event(1_000, "a", utm_campaign="spring", device_type="mobile"), new=False)
    acc.add_stage_change(
        {"visitor_id": "a", "from_stage": "", "to_stage": "awareness", "ts": 1_000}
    )
    acc.add_trigger({"trigger": "cart_abandoned", "visitor_id": "a", "source": "web", "ts": 70_000})
    acc.add_trigger({"trigger": "first_purchase", "visitor_id": "a", "source": "web", "ts": 1_000})
    # A visitor the accumulator does not know: the record's own fields, or defaults.
    acc.add_stage_change({"visitor_id": "old", "to_stage": "lapsed", "ts": 2_000, "source": "app"})
    rows = flush(acc)
    first = one(rows, window_start=0, source="web")
    assert (first["campaign"], first["device_type"], first["visitor_type"]) == (
        "spring",
        "mobile",
        "returning",
    )
    assert first["stage_transitions"] == 1 and first["carts_abandoned"] == 0
    later = one(rows, window_start=WINDOW_MS)
    assert (later["carts_abandoned"], later["campaign"], later["visitors"]) == (1, "spring", 0)
    lapsed = one(rows, source="app")
    assert (lapsed["campaign"], lapsed["device_type"], lapsed["stage_transitions"]) == (
        "(none)",
        "(unknown)",
        1,
    )


def test_late_stage_change_reaches_a_settling_row_or_is_dropped():
    acc = WindowAccumulator()
    add(acc, event(1_000, "a"), started=True)
    add(acc, event(2_000, "b"), new=False)  # its row has no open session: not kept
    acc.close(WINDOW_MS + LATE + 1, LATE, P)
    acc.add_stage_change({"visitor_id": "a", "to_stage": "decision", "ts": 3_000})
    acc.add_stage_change({"visitor_id": "b", "to_stage": "decision", "ts": 3_000})
    assert acc.late_dropped == 1
    row = one(acc.close(WINDOW_MS + LATE + 2, LATE, P))
    assert (row["stage_transitions"], row["visitors"], row["version"]) == (1, 1, 2)


def test_visitor_map_is_bounded():
    acc = WindowAccumulator()
    add(acc, event(1_000, "gone"))
    add(acc, event(1_000, "open"), started=True)
    add(acc, event(3 * WINDOW_MS, "recent"))
    acc.close(3 * WINDOW_MS + LATE + 1, LATE, P)  # windows 0..2 complete
    assert set(acc.visitors) == {"gone", "open", "recent"}  # "gone" seen 2 windows ago
    acc.close(4 * WINDOW_MS + LATE + 1, LATE, P)
    assert set(acc.visitors) == {"open", "recent"}  # an open session keeps its visitor


def test_encode_decode_round_trip_preserves_everything():
    acc = WindowAccumulator()
    add(acc, event(1_000, "a", utm_campaign="spring"), started=True)
    add(acc, event(2_000, "a", "track", "Order Completed", {"order_id": "o1", "revenue": 0.1}))
    add(acc, event(3_000, "b"), new=False)
    add(acc, event(4_000, "bot", is_bot=True))
    acc.close(WINDOW_MS + LATE + 1, LATE, P)  # one settling row
    add(acc, event(WINDOW_MS + LATE, "c", "track", "Page Ping", {"engaged_seconds": 0.3}))
    acc.add_session_closed(session("a", 1_000, 2_000, stage_reached="purchase"))
    add(acc, event(10, "late"))
    raw = acc.encode()
    back = WindowAccumulator.decode(raw)
    assert back == acc
    assert back.encode() == raw
    assert back.late_dropped == 1 and back.closed_until == WINDOW_MS
    assert flush(back) == flush(acc)
    with pytest.raises(ValueError):
        WindowAccumulator.decode(b'[99, "x"]')


def test_decode_pads_figures_added_later():
    acc = WindowAccumulator()
    add(acc, event(1_000))
    data = orjson.loads(acc.encode())
    data[6][0] = data[6][0][:-2]  # as if written before the last two figures existed
    row = one(flush(WindowAccumulator.decode(orjson.dumps(data))))
    assert row["nps_promoters"] == 0 and row["nps_detractors"] == 0 and row["pageviews"] == 1


def test_metric_row_key_is_deterministic():
    acc = WindowAccumulator()
    add(acc, event(1_000))
    row = one(flush(acc))
    assert metric_row_key(row) == metric_row_key(dict(row))
    assert len(metric_row_key(row)) == 32
    assert metric_row_key(row) != metric_row_key({**row, "partition": P + 1})


def active_visitors(n, windows=6):
    """n visitors, each with an open session and a page + ping in each open window."""
    acc = WindowAccumulator()
    for w in range(windows):
        for i in range(n):
            visitor = f"{i:08d}-6d1c-4f3e-9a2b-5c8d7e6f{i:04d}"  # uuid-sized ids
            ts = w * WINDOW_MS + (i * 37) % WINDOW_MS
            add(
                acc, event(ts, visitor, utm_campaign="spring" if i % 4 == 0 else ""), started=w == 0
            )
            ping = {"engaged_seconds": 10}
            add(acc, event(ts + 10, visitor, "track", "Page Ping", ping, device_type="mobile"))
    return acc


def test_memory_for_1000_active_visitors():
    acc = active_visitors(1_000)
    raw = acc.encode()
    print(f"\nencoded accumulator, 1,000 active visitors x 6 open windows: {len(raw):,} B")
    assert len(raw) < 150_000
    acc.close(6 * WINDOW_MS + LATE + 1, LATE, P)  # all windows complete, sessions still open
    print(f"after close (sessions open, rows settling): {len(acc.encode()):,} B")


def mixed_events(n, visitors=1_000):
    """A realistic mix over ~14 minutes: pings, pages, cart and order events."""
    kinds = [("track", "Page Ping", {"engaged_seconds": 5})] * 6 + [("page", "", {})] * 3
    kinds += [("track", "Product Added", {"product_id": "p"})]
    kinds += [("track", "Order Completed", {"order_id": "o", "revenue": 10})]
    out = []
    for i in range(n):
        kind, name, props = kinds[i % len(kinds)]
        visitor = f"visitor-{(i * 7919) % visitors:05d}"
        out.append(event(i * 17, visitor, kind, name, props, utm_campaign="" if i % 9 else "x"))
    return out


def test_add_event_cost():
    events = mixed_events(50_000)
    acc = WindowAccumulator()
    start = time.perf_counter()
    for i, e in enumerate(events):
        acc.add_event(e, new_visitor=i % 5 == 0, session_started=i % 50 == 0, cart_created=False)
    per_event = (time.perf_counter() - start) / len(events) * 1e6
    closes = time.perf_counter()
    rows = acc.close(FLUSH, LATE, P)
    close_ms = (time.perf_counter() - closes) * 1e3
    print(
        f"\nadd_event: {per_event:.2f} us per event; close of {len(rows)} rows: {close_ms:.1f} ms"
    )
    assert per_event < 25  # target < 5 us; generous here so a busy CI box does not flake
