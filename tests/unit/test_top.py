"""`clickstream top`'s pure parts: counters from Prometheus text, their rates, the
formatters, and the screen rendered from a fixed snapshot."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from rich.console import Console

from stream.top import (
    Counters,
    Snapshot,
    bar,
    clock,
    fmt_count,
    fmt_money,
    fmt_per_second,
    fmt_rate,
    parse_counters,
    render,
    sparkline,
    throughput,
    window_label,
)

pytestmark = pytest.mark.unit

METRICS = """\
# HELP clickstream_events_accepted_total Events acknowledged by Kafka.
# TYPE clickstream_events_accepted_total counter
clickstream_events_accepted_total{source="web"} 120.0
clickstream_events_accepted_total{source="ios"} 30.0
clickstream_events_accepted_created{source="web"} 1.7e+09
clickstream_events_rejected_total{reason="schema",source="web"} 4.0
clickstream_events_received_total{source="web"} 154.0
clickstream_events_processed_total 99
broken_line_without_value
"""


def test_parse_counters_sums_every_labelled_sample_of_the_named_counters():
    assert parse_counters(METRICS) == {"accepted": 150.0, "rejected": 4.0, "processed": 99.0}


def test_parse_counters_leaves_out_counters_without_samples():
    assert parse_counters("# TYPE clickstream_events_rejected_total counter\n") == {}
    assert parse_counters("") == {}


def test_throughput_is_the_delta_per_second():
    before = Counters({"accepted": 100.0, "rejected": 2.0}, at=10.0)
    after = Counters({"accepted": 150.0, "rejected": 2.0, "processed": 40.0}, at=12.0)
    assert throughput(before, after) == {"accepted": 25.0, "rejected": 0.0, "processed": 20.0}


def test_throughput_needs_an_earlier_reading_and_survives_a_restart():
    now = Counters({"accepted": 10.0}, at=5.0)
    assert throughput(None, now) is None
    assert throughput(Counters({"accepted": 1.0}, at=5.0), now) is None  # no time passed
    restarted = throughput(Counters({"accepted": 500.0}, at=3.0), now)
    assert restarted == {"accepted": 5.0}  # counted from zero, never negative


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "–"), (0, "0"), (12, "12"), (1234, "1,234"), (12_345, "12.3k"),
     (123_456, "123k"), (4_500_000, "4.5M")],
)  # fmt: skip
def test_fmt_count(value, text):
    assert fmt_count(value) == text


def test_rates_money_and_speeds():
    assert fmt_rate(None) == "–"
    assert fmt_rate(0.3125) == "31.2%"
    assert fmt_rate(1) == "100.0%"
    assert fmt_money(1234.5) == "1,234.50"
    assert fmt_money(None) == "–"
    assert fmt_per_second(2.25) == "2.2/s"
    assert fmt_per_second(1500.4) == "1,500/s"
    assert fmt_per_second(None) == "–"


def test_bar_is_proportional_in_eighths():
    assert bar(10, 10, 5) == "█████"
    assert bar(5, 10, 5) == "██▌"
    assert bar(1, 1000, 5) == "▏"  # anything above zero shows
    assert bar(0, 10, 5) == ""
    assert bar(20, 10, 5) == "█████"  # capped at the width
    assert bar(3, 0, 5) == ""


def test_sparkline_scales_to_the_largest_value():
    assert sparkline([0, 1, 2, 4]) == "▁▂▄█"
    assert sparkline([None, 3]) == " █"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([]) == ""


def test_clock_and_window_label():
    assert clock("2026-01-01T12:34:56.789Z") == "12:34:56"
    assert clock("") == ""
    assert clock("not a time") == "not a time"
    assert window_label(24) == "last 24 h"
    assert window_label(1.5) == "last 1.5 h"
    assert window_label(168) == "last 7 d"


def snapshot(**parts) -> Snapshot:
    return Snapshot(
        "http://127.0.0.1:8081",
        24,
        dt.datetime(2026, 1, 1, 12, 0, 5, tzinfo=dt.UTC),
        **parts,
    )


FUNNEL = {
    "stages": [
        {"stage": "awareness", "visitors": 40, "current": 10, "conversion": None},
        {"stage": "consideration", "visitors": 30, "current": 12, "conversion": 0.75},
        {"stage": "decision", "visitors": 12, "current": 5, "conversion": 0.4},
        {"stage": "purchase", "visitors": 6, "current": 4, "conversion": 0.5},
        {"stage": "retention", "visitors": 2, "current": 1, "conversion": 1 / 3},
        {"stage": "advocacy", "visitors": 1, "current": 1, "conversion": 0.5},
    ]
}
SUMMARY = {
    "sessions": 55, "visitors": 40, "active_sessions": 7, "orders": 6, "revenue": 321.5,
    "conversion_rate": 6 / 55, "bounce_rate": 0.25, "cart_abandonment_rate": 0.5,
    "average_order_value": 321.5 / 6,
}  # fmt: skip
RECENT = {
    "changes": [
        {"ts": "2026-01-01T11:59:58.000Z", "visitor_id": "v-42", "user_id": "",
         "from_stage": "decision", "to_stage": "purchase"},
        {"ts": "2026-01-01T11:59:01.000Z", "visitor_id": "v-7", "user_id": "user-7",
         "from_stage": "", "to_stage": "awareness"},
    ]
}  # fmt: skip
RATES = {"bucket": "hour", "points": [{"sessions": 3, "orders": 0, "conversion_rate": 0.0},
                                      {"sessions": 9, "orders": 2, "conversion_rate": 0.2}]}  # fmt: skip


def shows(text: str, *cells: str) -> bool:
    """The cells start, in this order, the words of one line (spaced any way)."""
    pattern = r"\S*\s+".join(re.escape(cell) for cell in cells)
    return any(re.search(pattern, line) for line in text.splitlines())


def screen(shot: Snapshot, width: int = 130) -> str:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    console.print(render(shot, width))
    return console.export_text()


def test_render_shows_funnel_throughput_sessions_rates_and_changes():
    text = screen(
        snapshot(
            summary=SUMMARY,
            funnel=FUNNEL,
            rates=RATES,
            recent=RECENT,
            per_second={"accepted": 42.0, "processed": 40.5},
        )
    )
    assert "clickstream top  12:00:05" in text.splitlines()[0]
    assert "last 24 h, bots excluded" in text
    assert shows(text, "accepted", "42.0/s")
    assert shows(text, "rejected", "0.0/s")  # no sample yet: none rejected
    assert shows(text, "processed", "40.5/s")
    assert shows(text, "open now", "7")
    assert shows(text, "conversion", "10.9%")
    assert shows(text, "cart abandonment", "50.0%")
    assert shows(text, "revenue", "321.50")
    assert shows(text, "avg order", "53.58")
    assert shows(text, "awareness", "█████████", "40", "10")
    assert shows(text, "consideration", "███", "30", "→ 75.0%", "12")
    assert shows(text, "retention", "█", "2", "→ 33.3%", "1")
    assert shows(text, "11:59:58", "v-42", "decision → purchase")
    assert shows(text, "11:59:01", "user-7", "new → awareness")  # a user id over the anonymous one
    assert shows(text, "sessions", "▃█")  # the per-hour sparkline
    assert "!" not in text


def test_render_before_any_answer_and_with_errors():
    text = screen(snapshot(errors=["API summary: Connection refused"]), width=80)
    assert "collector metrics: waiting" in text
    assert "waiting for the API" in text
    assert "no completed windows yet" in text
    assert "! API summary: Connection refused" in text
    assert shows(text, "open now", "–")


@pytest.mark.parametrize("width", [60, 80, 109, 110, 200])
def test_render_fits_the_terminal_width(width):
    text = screen(
        snapshot(summary=SUMMARY, funnel=FUNNEL, rates=RATES, recent=RECENT, per_second={}),
        width,
    )
    assert max(len(line) for line in text.splitlines()) <= width
