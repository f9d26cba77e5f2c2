"""Every Prometheus metric of the pipeline, defined here and nowhere else.

Processes started by one `clickstream run` / `clickstream worker` share a
multiprocess directory (PROMETHEUS_MULTIPROC_DIR, set by the supervisor), so the
`/metrics` endpoint of any of them shows the sum over all of them. Gauges say
how they aggregate across processes (`multiprocess_mode`).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# --- collector -------------------------------------------------------------
EVENTS_RECEIVED = Counter(
    "clickstream_events_received_total", "Events received over HTTP.", ["source"]
)
EVENTS_ACCEPTED = Counter(
    "clickstream_events_accepted_total", "Events acknowledged by Kafka.", ["source"]
)
EVENTS_REJECTED = Counter(
    "clickstream_events_rejected_total",
    "Events sent to the dead-letter topic, by reason.",
    ["source", "reason"],
)
REQUESTS_REJECTED = Counter(
    "clickstream_requests_rejected_total",
    "Whole HTTP requests refused (401, 413, 400...).",
    ["status", "reason"],
)
REQUEST_LATENCY = Histogram(
    "clickstream_request_duration_seconds",
    "Collector request latency, receipt to response.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
PRODUCE_LATENCY = Histogram(
    "clickstream_produce_duration_seconds",
    "Time from send to Kafka acknowledgement for one request's events.",
    buckets=LATENCY_BUCKETS,
)

# Consent (stream/collector/consent.py, README "Consent").
CONSENT_COOKIELESS = Counter(
    "clickstream_consent_cookieless_total",
    "Events without analytics consent, given a daily cookieless visitor id.",
    ["source"],
)
CONSENT_DROPPED = Counter(
    "clickstream_consent_dropped_total",
    "identify/alias/group calls dropped (acknowledged, not stored): no analytics consent.",
    ["source", "type"],
)
CONSENT_SIGNALS = Counter(
    "clickstream_consent_signals_total",
    "Events whose marketing consent a Sec-GPC or DNT header withdrew (CLICKSTREAM_HONOR_GPC).",
    ["source", "signal"],
)
EVENTS_CLAMPED = Counter(
    "clickstream_events_clamped_total",
    "Events whose client time was later than receive time + the allowed skew (clamped).",
    ["source"],
)

# --- processor -------------------------------------------------------------
# Erasure (stream/privacy/): events of an erased id dropped, where (collector, processor)
# and from which source; rows the sink left out for naming one, per table.
EVENTS_SUPPRESSED = Counter(
    "clickstream_events_suppressed_total",
    "Events of an erased (suppressed) id dropped.",
    ["stage", "source"],
)
ROWS_SUPPRESSED = Counter(
    "clickstream_sink_rows_suppressed_total",
    "Rows naming an erased id that the sink did not write.",
    ["table"],
)
EVENTS_PROCESSED = Counter(
    "clickstream_events_processed_total", "Events applied to journey state.", ["source"]
)
EVENTS_LATE = Counter(
    "clickstream_events_late_total",
    "Events left out of journeys: older than any session the visitor's state still holds.",
    ["source"],
)
PROCESSING_FAILURES = Counter(
    "clickstream_processing_failures_total", "Events the processor dead-lettered.", ["reason"]
)
OFFSET_GAPS = Counter(
    "clickstream_offset_gaps_total",
    "Jumps in the offsets a processor received (records skipped before the agent).",
    ["topic"],
)
PROCESSING_LATENCY = Histogram(
    "clickstream_processing_duration_seconds",
    "Time from collector receipt to processed by the journey agent.",
    buckets=LATENCY_BUCKETS,
)
EVENT_TIME_LAG = Gauge(
    "clickstream_event_time_lag_seconds",
    "Now minus the event time of the last processed event.",
    ["partition"],
    multiprocess_mode="max",
)
ACTIVE_SESSIONS = Gauge(
    "clickstream_active_sessions", "Open sessions.", multiprocess_mode="livesum"
)
STAGE_TRANSITIONS = Counter(
    "clickstream_stage_transitions_total", "Journey stage transitions.", ["from_stage", "to_stage"]
)
TRIGGERS = Counter("clickstream_triggers_total", "Triggers published.", ["trigger"])
TRIGGERS_WITHHELD = Counter(
    "clickstream_triggers_withheld_total",
    "Triggers not published: the visitor had no marketing consent.",
    ["trigger"],
)
SESSIONS_CLOSED = Counter("clickstream_sessions_closed_total", "Sessions closed.", ["reason"])
STATES_EXPIRED = Counter(
    "clickstream_states_expired_total",
    "Visitor states dropped after CLICKSTREAM_STATE_TTL_DAYS without an event.",
)
VISITORS_IN_STATE = Gauge(
    "clickstream_visitors_in_state",
    "Visitors the processor holds state for, per partition it owns.",
    ["partition"],
    multiprocess_mode="livesum",
)
SESSIONS_STARTED = Counter(
    "clickstream_sessions_started_total", "Sessions opened (conversion denominator).", ["source"]
)

# --- consumers (processor and sink) ----------------------------------------
CONSUMER_LAG = Gauge(
    "clickstream_consumer_lag_records",
    "High watermark minus committed offset.",
    ["group", "topic", "partition"],
    multiprocess_mode="max",
)

# --- sink ------------------------------------------------------------------
SINK_ROWS = Counter("clickstream_sink_rows_written_total", "Rows inserted.", ["table"])
SINK_BATCH_ROWS = Histogram(
    "clickstream_sink_batch_rows",
    "Rows per insert.",
    ["table"],
    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000),
)
SINK_INSERT_LATENCY = Histogram(
    "clickstream_sink_insert_duration_seconds",
    "ClickHouse insert latency.",
    ["table"],
    buckets=LATENCY_BUCKETS,
)
SINK_FAILURES = Counter(
    "clickstream_sink_failures_total", "Failed inserts (retried).", ["table", "kind"]
)
SINK_RETRIES = Counter("clickstream_sink_retries_total", "Insert retries.", ["table"])
SINK_REJECTED_ROWS = Counter(
    "clickstream_sink_rejected_rows_total", "Rows ClickHouse refused for their content.", ["table"]
)
SINK_PAUSED = Gauge(
    "clickstream_sink_paused", "1 while the sink is backing off.", multiprocess_mode="max"
)

# --- api -------------------------------------------------------------------
API_REQUESTS = Counter("clickstream_api_requests_total", "Query API requests.", ["route", "status"])


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics: every process of this worker when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        ProcessCollector(registry=registry)  # CPU and memory of the process answering
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
