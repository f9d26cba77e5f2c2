"""Windowed metrics against the raw data: for a replayed (historic) dataset, every
one-minute figure the processor emitted equals the same figure recomputed with SQL over
the raw events and sessions in ClickHouse (bots excluded on both sides). The dataset is
posted under a write key of its own (source 'metrics'): the pipeline is shared."""

import itertools
import time

import pytest

from stream.simulate import Mix, generate
from tests.integration.conftest import METRICS_KEY
from tests.support.pipeline import basic_auth

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000

# figure in journey_metrics_1m -> (SQL over raw tables grouped by minute `w`)
RAW = {
    "pageviews": "SELECT toStartOfMinute(ts) AS w, count() FROM clickstream.events FINAL "
    "WHERE type IN ('page', 'screen') AND NOT is_bot AND source = 'metrics' GROUP BY w",
    "engaged_seconds": "SELECT toStartOfMinute(ts) AS w, round(sum(JSONExtractFloat(properties, 'engaged_seconds')), 3) "
    "FROM clickstream.events FINAL WHERE event = 'Page Ping' AND NOT is_bot AND source = 'metrics' GROUP BY w",
    "checkouts": "SELECT toStartOfMinute(ts) AS w, count() FROM clickstream.events FINAL "
    "WHERE event = 'Checkout Started' AND NOT is_bot AND source = 'metrics' GROUP BY w",
    "orders": "SELECT toStartOfMinute(ts) AS w, uniqExact(visitor_id, JSONExtractString(properties, 'order_id')) "
    "FROM clickstream.events FINAL WHERE event = 'Order Completed' AND NOT is_bot AND source = 'metrics' GROUP BY w",
    "sessions": "SELECT toStartOfMinute(started_at) AS w, count() FROM clickstream.sessions FINAL "
    "WHERE NOT is_bot AND source = 'metrics' GROUP BY w",
    "bounces": "SELECT toStartOfMinute(started_at) AS w, countIf(bounce) FROM clickstream.sessions FINAL "
    "WHERE NOT is_bot AND source = 'metrics' GROUP BY w",
    "sessions_purchase": "SELECT toStartOfMinute(started_at) AS w, countIf(stage_reached = 'purchase') "
    "FROM clickstream.sessions FINAL WHERE NOT is_bot AND source = 'metrics' GROUP BY w",
    "stage_transitions": "SELECT toStartOfMinute(t.ts) AS w, count() FROM clickstream.stage_transitions AS t FINAL "
    "WHERE t.visitor_id NOT IN (SELECT visitor_id FROM clickstream.events WHERE is_bot) AND t.source = 'metrics' GROUP BY w",
}


def as_map(rows: list[list]) -> dict[str, float]:
    return {str(w): round(float(v), 3) for w, v in rows if float(v) != 0}


def test_every_window_figure_equals_sql_over_raw_data(pipeline):
    base = (int(time.time() * 1000) - 3 * HOUR_MS) // 60_000 * 60_000
    calls = list(
        itertools.islice(generate(7, 150, mix=Mix(conversion=0.2), base_time_ms=base), 2500)
    )
    for i in range(0, len(calls), 100):
        batch = {"batch": calls[i : i + 100]}
        status, answer = pipeline.post("/v1/batch", batch, headers=basic_auth(METRICS_KEY))
        assert status == 200 and answer["rejected"] == 0, answer

    # Everything is two or more hours old: once the partitions are idle their watermark
    # moves on, every session closes and every window is complete.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        open_sessions = pipeline.sql(
            "SELECT countIf(NOT closed), count() FROM clickstream.sessions FINAL WHERE source = 'metrics'"
        )
        if open_sessions[0][1] > 0 and open_sessions[0][0] == 0:
            break
        time.sleep(1)
    time.sleep(4)  # the settling rows of the last closes

    for figure, sql in RAW.items():
        windows = as_map(
            pipeline.sql(
                f"SELECT window_start AS w, round(sum({figure}), 3) FROM clickstream.journey_metrics_1m FINAL "
                "WHERE source = 'metrics' GROUP BY w"
            )
        )
        raw = as_map(pipeline.sql(sql))
        assert raw, f"no raw data for {figure}"
        assert windows == raw, (
            f"{figure}: windows differ from raw data\n{sorted(set(windows.items()) ^ set(raw.items()))[:10]}"
        )
