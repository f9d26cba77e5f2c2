"""Live metric rows through the engine: increments per (window, key), published on ticks.

What ClickHouse ends up with is the SUM of the published increments per window and
key (`totals`), so that is what these tests check, plus the shape of the records.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from stream.metrics import FIGURES
from stream.metrics.figures import WINDOW_MS
from stream.metrics.windows import MetricRow, PartitionRecord, metric_row_key
from tests.support.engine_shell import Shell

pytestmark = pytest.mark.unit

MIN = 60_000
T0 = 1_709_287_200_000  # a window start
METRICS = "journey.metrics"


def totals(shell: Shell) -> dict[tuple, dict[str, float]]:
    """(window, source, campaign, device, visitor type) -> summed figures (non-zero)."""
    out: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in shell.of(METRICS):
        key = (
            row["window_start"],
            row["source"],
            row["campaign"],
            row["device_type"],
            row["visitor_type"],
        )
        for name in FIGURES:
            out[key][name] += row[name]
    return {k: {n: round(v, 6) for n, v in f.items() if v} for k, f in out.items()}


def figure(shell: Shell, name: str, window: int | None = None) -> float:
    return sum(f.get(name, 0) for k, f in totals(shell).items() if window in (None, k[0]))


def test_windows_by_event_time_and_boundaries() -> None:
    shell = Shell()
    shell.send(visitor="a", ts=T0)
    shell.send(visitor="a", ts=T0 + WINDOW_MS - 1)
    shell.send(visitor="a", ts=T0 + WINDOW_MS)
    shell.tick(T0 + 2 * MIN)
    assert figure(shell, "pageviews", T0) == 2 and figure(shell, "pageviews", T0 + WINDOW_MS) == 1
    assert figure(shell, "visitors", T0) == 1 and figure(shell, "visitors", T0 + WINDOW_MS) == 1


def test_rows_are_published_on_ticks_only_and_once() -> None:
    shell = Shell()
    shell.send(visitor="a", ts=T0)
    assert not shell.of(METRICS)
    shell.tick(T0 + 1000)
    first = shell.of(METRICS)
    assert len(first) == 1 and first[0]["version"] == 1 and first[0]["partition"] == 0
    shell.tick(T0 + 2000)  # nothing changed: nothing published, nothing kept
    assert len(shell.of(METRICS)) == 1 and not [k for k in shell.rows if k.startswith(b"[")]
    shell.send(visitor="a", ts=T0 + 10)
    shell.tick(T0 + 3000)
    rows = shell.of(METRICS)
    assert [r["version"] for r in rows] == [1, 2] and rows[1]["pageviews"] == 1
    assert rows[1]["visitors"] == 0  # counted once per row, in the first increment


def test_bots_count_nothing() -> None:
    shell = Shell()
    shell.send(visitor="bot", ts=T0, is_bot=True, device_type="bot")
    shell.send(
        visitor="bot",
        ts=T0 + 1000,
        event="Order Completed",
        is_bot=True,
        properties={"order_id": "1", "revenue": 5},
    )
    shell.tick(T0 + 40 * MIN)
    assert totals(shell) == {}


def test_distinct_visitors_new_and_returning() -> None:
    shell = Shell()
    shell.send(visitor="a", ts=T0)
    shell.send(visitor="a", ts=T0 + 1000)
    shell.send(visitor="b", ts=T0 + 2000)
    shell.send(visitor="a", ts=T0 + 40 * MIN)  # a second session: returning
    shell.tick(T0 + 41 * MIN)
    new = totals(shell)[(T0, "web", "(none)", "desktop", "new")]
    assert new["visitors"] == 2 and new["new_visitors"] == 2 and new["pageviews"] == 3
    back = totals(shell)[(T0 + 40 * MIN, "web", "(none)", "desktop", "returning")]
    assert back["returning_visitors"] == 1 and back["sessions"] == 1


def test_campaign_sticks_to_the_session() -> None:
    shell = Shell()
    shell.send(visitor="a", ts=T0, utm_campaign="spring", utm_source="mail")
    shell.send(visitor="a", ts=T0 + 2 * MIN)  # no utm: still the campaign's visit
    shell.tick(T0 + 3 * MIN)
    campaigns = {k[2] for k in totals(shell)}
    assert campaigns == {"spring"} and figure(shell, "pageviews") == 2


def test_commerce_engagement_and_feedback_figures() -> None:
    shell = Shell()
    shell.send(visitor="a", ts=T0)
    shell.send(visitor="a", ts=T0 + 1, event="Page Ping", properties={"engaged_seconds": 12.5})
    shell.send(
        visitor="a",
        ts=T0 + 2,
        event="Product Added",
        properties={"product_id": "p", "price": 10, "quantity": 1},
    )
    shell.send(
        visitor="a",
        ts=T0 + 3,
        event="Checkout Started",
        properties={"products": [{"product_id": "p", "price": 10, "quantity": 1}]},
    )
    shell.send(
        visitor="a",
        ts=T0 + 4,
        event="Order Completed",
        properties={"order_id": "o1", "revenue": 10},
    )
    shell.send(
        visitor="a",
        ts=T0 + 5,
        event="Order Completed",
        properties={"order_id": "o1", "revenue": 10},
    )
    shell.send(
        visitor="a",
        ts=T0 + 6,
        event="Product Reviewed",
        properties={"product_id": "p", "rating": 4},
    )
    shell.send(visitor="a", ts=T0 + 7, event="Feedback Submitted", properties={"nps": 10})
    shell.tick(T0 + MIN)
    f = totals(shell)[(T0, "web", "(none)", "desktop", "new")]
    assert f["engaged_seconds"] == 12.5 and f["carts_created"] == 1 and f["checkouts"] == 1
    assert f["orders"] == 1 and f["revenue"] == 10  # the same order id twice: once
    assert f["ratings_count"] == 1 and f["ratings_sum"] == 4
    assert f["nps_count"] == 1 and f["nps_promoters"] == 1


def test_a_session_close_counts_in_its_start_row() -> None:
    shell = Shell()
    shell.send(visitor="a", ts=T0 + 30_000)  # a bounce, started in window T0
    shell.send(visitor="b", ts=T0 + 5 * MIN)
    shell.send(visitor="b", ts=T0 + 6 * MIN, event="Product Viewed", properties={"product_id": "p"})
    shell.tick(T0 + 45 * MIN)  # both quiet for 35 minutes: closed
    assert figure(shell, "sessions", T0) == 1 and figure(shell, "bounces", T0) == 1
    assert figure(shell, "sessions_awareness", T0) == 1
    assert figure(shell, "bounces", T0 + 5 * MIN) == 0
    assert figure(shell, "sessions_consideration", T0 + 5 * MIN) == 1


def test_a_reopened_session_takes_back_what_its_close_counted() -> None:
    shell = Shell()
    shell.send(visitor="a", ts=T0)  # one page view: a bounce when it closes
    shell.tick(T0 + 36 * MIN)
    assert figure(shell, "bounces", T0) == 1
    # A page view of that visit arrives late (an offline queue): the session is
    # amended, no longer a bounce, and closes again.
    shell.send(visitor="a", ts=T0 + 2 * MIN, arrival=T0 + 50 * MIN)
    shell.tick(T0 + 90 * MIN)
    assert figure(shell, "bounces", T0) == 0 and figure(shell, "sessions", T0) == 1
    assert figure(shell, "pageviews") == 2
    closes = [s for s in shell.of("journey.sessions") if s["closed"]]
    assert [s["pageviews"] for s in closes] == [1, 2]
    assert closes[1]["version"] > closes[0]["version"]


def test_stage_changes_and_abandonments_use_the_visitors_latest_key() -> None:
    shell = Shell()
    shell.send(visitor="a", ts=T0, utm_campaign="spring")
    shell.send(
        visitor="a",
        ts=T0 + 1000,
        event="Product Added",
        properties={"product_id": "p", "price": 3, "quantity": 1},
    )
    shell.tick(T0 + 40 * MIN)
    f = totals(shell)[(T0, "web", "spring", "desktop", "new")]
    assert f["stage_transitions"] == 2  # awareness, decision
    assert f["carts_abandoned"] == 1


def test_replaying_the_same_records_publishes_the_same_keys() -> None:
    def run() -> list[str]:
        shell = Shell()
        records = [
            shell.event_record(visitor="a", ts=T0),
            shell.event_record(visitor="b", ts=T0 + 1),
            shell.tick_record(T0 + 1000),
            shell.event_record(visitor="a", ts=T0 + 2),
            shell.tick_record(T0 + 2000),
        ]
        for record in records:
            shell.feed(record)
        return [r["idempotency_key"] for r in shell.of(METRICS)]

    assert run() == run() and len(set(run())) == len(run())


def test_records_round_trip() -> None:
    row = MetricRow()
    row.figures[0] = 3
    assert MetricRow.decode(row.encode()) == row
    assert MetricRow.decode(b"[1,2]").figures[0] == 2  # figures added later decode as 0
    clock = PartitionRecord(123, 4)
    assert PartitionRecord.decode(clock.encode()) == clock


def test_metric_row_key_is_deterministic() -> None:
    row = MetricRow().as_output(2, T0, ("web", "(none)", "desktop", "new"), 7)
    assert row["idempotency_key"] == metric_row_key(dict(row)) and row["version"] == 7
