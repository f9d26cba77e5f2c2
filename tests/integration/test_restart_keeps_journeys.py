"""Stopping and starting `clickstream run` on the same data directory keeps every
visitor's journey (issue 12, item 5): the embedded broker forgets its log, but the sink
archived the processor's state in ClickHouse and the runner re-seeds the changelog
topics from it before the processor starts. A customer who bought before the restart
and returns after it reaches retention, with one awareness in their history."""

import signal
import subprocess
import time
import uuid

import pytest

from tests.integration.test_journey_pipeline import HOUR_MS, journey
from tests.support.pipeline import prestart, start_pipeline

pytestmark = pytest.mark.integration


def stop_with_sigint(pipeline, timeout: float = 20.0) -> None:
    pipeline.process.send_signal(signal.SIGINT)
    try:
        assert pipeline.process.wait(timeout) == 0, pipeline.log_tail()
    except subprocess.TimeoutExpired:
        pipeline.stop()
        raise


def wait_until(pipeline, query: str, check, timeout: float = 40.0):
    deadline = time.monotonic() + timeout
    rows = None
    while time.monotonic() < deadline:
        rows = pipeline.sql(query)
        if check(rows):
            return rows
        time.sleep(0.25)
    raise AssertionError(f"{query!r} still gives {rows!r}\n{pipeline.log_tail(60)}")


FIRST_RUN = prestart(__name__, "restart")


def test_a_customer_returning_after_a_restart_reaches_retention(tmp_path_factory):
    buyer = f"buyer-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)

    pipeline = FIRST_RUN.take(tmp_path_factory)
    data_dir = pipeline.log_path.parent
    try:
        first_visit = journey(
            buyer,
            now - 2 * HOUR_MS,
            ["page", "Product Viewed", "Product Added", "Checkout Started", "Order Completed"],
        )
        status, answer = pipeline.post("/v1/batch", {"batch": first_visit})
        assert status == 200 and answer["accepted"] == len(first_visit), answer
        visitor_query = (
            "SELECT stage, sessions, orders, version FROM clickstream.visitors FINAL "
            f"WHERE visitor_id = '{buyer}'"
        )
        before = wait_until(pipeline, visitor_query, lambda r: r and r[0][0] == "purchase")[0]
        wait_until(
            pipeline,
            "SELECT count() FROM clickstream.processor_state FINAL WHERE table_name = 'visitors'"
            f" AND key = '{buyer}' AND position(value, 'o-{buyer}') > 0",
            lambda r: r == [[1]],
        )
    finally:
        if pipeline.process.poll() is None:
            stop_with_sigint(pipeline)
    first_log = pipeline.log_path.read_text(errors="replace")
    pipeline.log_path.rename(data_dir / "first-run.log")

    pipeline = start_pipeline(data_dir)
    try:
        log = pipeline.log_path.read_text(errors="replace")
        assert "restored" in log and "processor state records" in log, log[-3000:]
        returning = journey(buyer, now - HOUR_MS, ["page"])
        for call in returning:
            call["messageId"] += "-return"
        status, answer = pipeline.post("/v1/batch", {"batch": returning})
        assert status == 200 and answer["accepted"] == 1, answer
        after = wait_until(
            pipeline, visitor_query, lambda r: r and r[0][0] == "retention", timeout=40
        )[0]
        stage, sessions, orders, version = after
        assert sessions >= 2 and orders == 1 and version > before[3], (before, after)
        # The transition comes through a topic of its own: it may land after the visitor.
        path = [["awareness", 1], ["consideration", 1], ["decision", 1], ["purchase", 1]]
        wait_until(
            pipeline,
            "SELECT to_stage, count() FROM clickstream.stage_transitions FINAL "
            f"WHERE visitor_id = '{buyer}' GROUP BY to_stage ORDER BY to_stage",
            lambda r: r == [*path, ["retention", 1]],
        )
        # The returning visit is not a new visitor's, and the ticks of the new broker
        # close it (the partitions' restored clocks do not take them for replays).
        wait_until(
            pipeline,
            "SELECT is_new_visitor, closed FROM clickstream.sessions FINAL "
            f"WHERE visitor_id = '{buyer}' ORDER BY started_at",
            lambda r: r == [[1, 1], [0, 1]],
        )
    finally:
        stop_with_sigint(pipeline)
    assert "Traceback" not in first_log
