"""Batching, persisting and replaying never change what the accumulator emits.

A generated journey is a time-ordered list of operations, as the engine would produce
them for one partition: events (arriving up to `LATE` out of order, with the journey's
flags), stage changes, cart-abandoned triggers, closed sessions, and `close` calls.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.metrics import WindowAccumulator

pytestmark = pytest.mark.unit

LATE = 120_000
TIMEOUT = 300_000
P = 1
FLUSH = 10**13
KINDS = ("page", "ping", "view", "add", "order", "review")
TRACK = {
    "ping": ("Page Ping", {"engaged_seconds": 7.5}),
    "view": ("Product Viewed", {"product_id": "p1"}),
    "add": ("Product Added", {"product_id": "p1"}),
    "review": ("Feedback Submitted", {"rating": 4, "nps": 9}),
}


@st.composite
def journeys(draw):
    """Operations sorted by arrival: (key, seq, kind, payload)."""
    rnd = draw(st.randoms(use_true_random=False))
    ops = []
    free_at: dict[str, int] = {}
    for visit in range(draw(st.integers(0, 10))):
        visitor = f"v{draw(st.integers(0, 3))}"
        new = visitor not in free_at
        start = free_at.get(visitor, 0) + draw(st.integers(0, 600_000))
        gaps = draw(st.lists(st.integers(0, 90_000), min_size=1, max_size=5))
        kinds = draw(st.lists(st.sampled_from(KINDS), min_size=len(gaps), max_size=len(gaps)))
        campaign = draw(st.sampled_from(["", "spring", "fall"]))
        device = draw(st.sampled_from(["desktop", "mobile"]))
        bot = draw(st.integers(0, 5)) == 0
        stage = draw(st.sampled_from(["", "awareness", "decision", "purchase"]))
        dims = {"source": "web", "device_type": device, "is_bot": bot}
        ts = start
        times = []
        for i, (gap, kind) in enumerate(zip(gaps, kinds, strict=True)):
            ts += gap
            times.append(ts)
            name, props = TRACK.get(kind, ("", {}))
            if kind == "order":
                name, props = "Order Completed", {"order_id": f"o{visit}", "revenue": 12.5}
            event = {
                "visitor_id": visitor,
                "ts": ts,
                "type": "page" if kind == "page" else "track",
                "event": name,
                "properties": props,
                "utm_campaign": campaign if i == 0 else "",
                **dims,
            }
            key = ts + rnd.randrange(LATE + 1)  # arrives out of order, within lateness
            ops.append((key, len(ops), "event", (visit, kind, new, event)))
            if kind == "view":
                change = {"visitor_id": visitor, "to_stage": "consideration", "ts": ts, **dims}
                ops.append((key, len(ops), "stage", change))
        end = times[-1] + TIMEOUT
        if "add" in kinds and "order" not in kinds:
            trigger = {"trigger": "cart_abandoned", "visitor_id": visitor, "ts": end, **dims}
            ops.append((end, len(ops), "trigger", trigger))
        summary = {
            "visitor_id": visitor,
            "started_at": times[0],
            "ended_at": times[-1],
            "bounce": len(times) == 1,
            "stage_reached": stage,
            "closed": True,
            "utm_campaign": campaign,
            "is_new_visitor": new,
            **dims,
        }
        ops.append((end, len(ops), "session", summary))
        free_at[visitor] = end
    ops.sort(key=lambda op: op[:2])
    return with_flags(ops)


def with_flags(ops):
    """The journey's flags, by arrival: the first event of a visit opens its session, the
    first Product Added creates its cart."""
    opened, carts, out = set(), set(), []
    for _, _, kind, payload in ops:
        if kind == "event":
            visit, event_kind, new, event = payload
            flags = {
                "new_visitor": new,
                "session_started": visit not in opened,
                "cart_created": event_kind == "add" and visit not in carts,
            }
            opened.add(visit)
            if event_kind == "add":
                carts.add(visit)
            payload = (event, flags)
        out.append((kind, payload))
    return out


def run(acc, ops, rows, watermark=0, settle_ms=None):
    """Apply `ops`; return the highest event time seen (the partition watermark)."""
    extra = {} if settle_ms is None else {"settle_ms": settle_ms}
    for kind, payload in ops:
        if kind == "event":
            event, flags = payload
            acc.add_event(event, **flags)
            watermark = max(watermark, event["ts"])
        elif kind == "stage":
            acc.add_stage_change(payload)
        elif kind == "trigger":
            acc.add_trigger(payload)
            watermark = max(watermark, payload["ts"])
        elif kind == "session":
            acc.add_session_closed(payload)
        else:  # ("close", idle): the shell closes at the watermark, moved on when idle
            rows.extend(acc.close(watermark + payload, LATE, P, **extra))
    return watermark


def chunks(ops, cuts):
    bounds = [0, *sorted(set(cuts)), len(ops)]
    return [ops[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def latest(rows):
    """What ClickHouse keeps: per (window, key, partition), the row of the highest version."""
    out = {}
    for row in rows:
        ident = (row["window_start"], row["source"], row["campaign"], row["device_type"])
        ident += (row["visitor_type"], row["partition"])
        if ident in out:
            assert row["version"] >= out[ident]["version"]
            if row["version"] == out[ident]["version"]:
                assert row == out[ident]
        out[ident] = row
    return out


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    ops=journeys(),
    closes=st.lists(st.tuples(st.integers(0, 60), st.sampled_from([0, 0, 200_000, 2_000_000]))),
    cuts=st.lists(st.integers(0, 80)),
)
def test_encode_decode_between_batches_changes_nothing(ops, closes, cuts):
    """Same inputs (closes included), persisted and restored at arbitrary points: the same
    rows, in the same order, and the same final state. This is also the crash case: a
    restart from any persisted state, replaying the inputs after it, re-emits the same rows."""
    for at, idle in sorted(closes, key=lambda c: c[0], reverse=True):
        ops.insert(min(at, len(ops)), ("close", idle))
    ops.append(("close", FLUSH))
    settle = 15 * 60_000  # short, so that settling rows also expire

    one_pass = WindowAccumulator()
    expected: list[dict] = []
    run(one_pass, ops, expected, settle_ms=settle)

    acc, rows, watermark = WindowAccumulator(), [], 0
    for batch in chunks(ops, cuts):
        watermark = run(acc, batch, rows, watermark, settle_ms=settle)
        acc = WindowAccumulator.decode(acc.encode())
    assert rows == expected
    assert acc == one_pass
    assert acc.encode() == one_pass.encode()


@SETTINGS
@given(ops=journeys(), cuts=st.lists(st.integers(0, 80)))
def test_closing_per_batch_gives_the_rows_of_one_pass(ops, cuts):
    """Closing after every batch (at the partition watermark) instead of once at the end:
    windows are emitted earlier and settling rows re-emitted, but the rows ClickHouse
    keeps are those of one pass, and nothing is dropped."""
    one_pass = WindowAccumulator()
    expected: list[dict] = []
    run(one_pass, [*ops, ("close", FLUSH)], expected)

    acc, rows, watermark = WindowAccumulator(), [], 0
    for batch in chunks(ops, cuts):
        watermark = run(acc, [*batch, ("close", 0)], rows, watermark)
        acc = WindowAccumulator.decode(acc.encode())
    run(acc, [("close", FLUSH)], rows, watermark)

    assert latest(rows) == latest(expected)
    assert acc.late_dropped == one_pass.late_dropped == 0
    assert acc.unmatched_sessions == one_pass.unmatched_sessions == 0
    assert acc.settling == {} and acc.windows == {}
    for row in latest(expected).values():
        assert row["bounces"] <= row["sessions"]
        stages = sum(row[f"sessions_{s}"] for s in ("awareness", "decision", "purchase"))
        assert stages <= row["sessions"]
