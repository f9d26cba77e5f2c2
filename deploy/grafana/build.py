"""Build the Grafana dashboards in deploy/grafana/dashboards/ from plain dicts.

    python deploy/grafana/build.py           # rewrite the JSON files
    python deploy/grafana/build.py --check   # exit 1 if a committed file is stale

Edit the panels here, never the JSON. Metric names: stream/telemetry.py; recorded
series: deploy/prometheus/alerts.yml; tables: schemas/clickhouse/. The datasource
uids are those of provisioning/datasources/datasources.yml.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"
STAGES_FILE = HERE.parent.parent / "schemas" / "journey" / "stages.json"

PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "clickhouse"}
SCHEMA_VERSION = 39
GRID_WIDTH = 24


# --- targets ---------------------------------------------------------------


def prom(expr: str, legend: str = "") -> dict:
    return {"datasource": PROMETHEUS, "expr": expr, "legendFormat": legend, "range": True}


def sql(raw: str, table: bool = False) -> dict:
    """A raw-SQL query of the ClickHouse plugin; time series unless `table`."""
    return {
        "datasource": CLICKHOUSE,
        "editorType": "sql",
        "queryType": "table" if table else "timeSeries",
        "format": 1 if table else 0,
        "rawSql": raw.strip(),
    }


# --- panels ----------------------------------------------------------------


def _panel(kind, title, targets, *, datasource, unit, description, width, height, options):
    targets = [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},  # placed by layout()
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": options,
    }


def timeseries(title, targets, unit="short", description="", width=12, height=8, ds=PROMETHEUS):
    options = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    panel = _panel(
        "timeseries",
        title,
        targets,
        datasource=ds,
        unit=unit,
        description=description,
        width=width,
        height=height,
        options=options,
    )
    panel["fieldConfig"]["defaults"]["custom"] = {
        "drawStyle": "line",
        "fillOpacity": 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
    }
    return panel


def stat(title, target, unit="short", description="", width=4, height=4, ds=CLICKHOUSE):
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "textMode": "auto",
    }
    return _panel(
        "stat",
        title,
        [target],
        datasource=ds,
        unit=unit,
        description=description,
        width=width,
        height=height,
        options=options,
    )


def table(title, target, unit="short", description="", width=12, height=8, ds=CLICKHOUSE):
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return _panel(
        "table",
        title,
        [target],
        datasource=ds,
        unit=unit,
        description=description,
        width=width,
        height=height,
        options=options,
    )


def bars(title, target, unit="short", description="", width=12, height=8, ds=CLICKHOUSE):
    """One horizontal bar per row of a table result (label column + value column)."""
    options = {
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
        "reduceOptions": {"calcs": [], "fields": "", "values": True},
    }
    return _panel(
        "bargauge",
        title,
        [target],
        datasource=ds,
        unit=unit,
        description=description,
        width=width,
        height=height,
        options=options,
    )


def layout(sections: list[tuple[str, list[dict]]]) -> list[dict]:
    """A row per section, its panels left to right wrapping at 24 columns; ids in order."""
    panels: list[dict] = []
    y = 0
    for title, members in sections:
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x, row_height = 0, 0
        for panel in members:
            grid = panel["gridPos"]
            if x + grid["w"] > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            grid["x"], grid["y"] = x, y
            x += grid["w"]
            row_height = max(row_height, grid["h"])
            panels.append(panel)
        y += row_height
    return [{"id": i, **panel} for i, panel in enumerate(panels, start=1)]


def dashboard(uid, title, description, sections, variables, time_from="now-6h") -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["clickstream"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": variables},
        "panels": layout(sections),
    }


def variable(name, label, datasource, query) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource,
        "query": query,
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }


# --- Pipeline health (Prometheus) -------------------------------------------

RATE = "$__rate_interval"
SRC = 'source=~"$source"'


def quantiles(metric: str, by: str = "") -> list[dict]:
    labels = f"le, {by}" if by else "le"
    legend = f" {{{{{by}}}}}" if by else ""
    return [
        prom(
            f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RATE}])))",
            f"p{int(q * 100)}{legend}",
        )
        for q in (0.5, 0.99)
    ]


def pipeline_health() -> dict:
    collector = [
        timeseries(
            "Events per second by source",
            [
                prom(
                    f"sum by (source) (rate(clickstream_events_received_total{{{SRC}}}[{RATE}]))",
                    "received {{source}}",
                ),
                prom(
                    f"sum by (source) (rate(clickstream_events_accepted_total{{{SRC}}}[{RATE}]))",
                    "accepted {{source}}",
                ),
                prom(
                    f"sum by (source) (rate(clickstream_events_rejected_total{{{SRC}}}[{RATE}]))",
                    "rejected {{source}}",
                ),
            ],
            unit="ops",
            description="Received over HTTP, accepted (acknowledged by Kafka) and rejected (dead-lettered).",
        ),
        timeseries(
            "Rejects by reason",
            [
                prom(
                    f"sum by (reason) (rate(clickstream_events_rejected_total{{{SRC}}}[{RATE}]))",
                    "event: {{reason}}",
                ),
                prom(
                    f"sum by (status, reason) (rate(clickstream_requests_rejected_total[{RATE}]))",
                    "request {{status}}: {{reason}}",
                ),
            ],
            unit="ops",
            description="Events sent to clickstream.invalid, and whole requests refused.",
        ),
        timeseries(
            "Request latency",
            quantiles("clickstream_request_duration_seconds", "endpoint"),
            unit="s",
            description="Collector request latency, receipt to response.",
        ),
        timeseries(
            "Produce latency",
            quantiles("clickstream_produce_duration_seconds"),
            unit="s",
            description="Send to Kafka acknowledgement, per request.",
        ),
    ]
    processor = [
        timeseries(
            "Events processed, late and failed",
            [
                prom(
                    f"sum by (source) (rate(clickstream_events_processed_total{{{SRC}}}[{RATE}]))",
                    "processed {{source}}",
                ),
                prom(
                    f"sum by (source) (rate(clickstream_events_late_total{{{SRC}}}[{RATE}]))",
                    "late {{source}}",
                ),
                prom(
                    f"sum by (reason) (rate(clickstream_processing_failures_total[{RATE}]))",
                    "failed: {{reason}}",
                ),
            ],
            unit="ops",
        ),
        timeseries(
            "Consumer lag by topic and partition",
            [
                prom(
                    "max by (group, topic, partition) (clickstream_consumer_lag_records)",
                    "{{group}} {{topic}}/{{partition}}",
                )
            ],
            description="High watermark minus committed offset.",
        ),
        timeseries(
            "Event-time lag",
            [
                prom(
                    "max by (partition) (clickstream_event_time_lag_seconds)",
                    "partition {{partition}}",
                )
            ],
            unit="s",
            description="Now minus the event time of the last processed event.",
        ),
        timeseries(
            "Processing latency",
            quantiles("clickstream_processing_duration_seconds"),
            unit="s",
            description="Collector receipt to processed by the journey agent.",
        ),
        timeseries(
            "Sessions",
            [
                prom("sum(clickstream_active_sessions)", "active"),
                prom(
                    f"sum by (source) (rate(clickstream_sessions_started_total{{{SRC}}}[{RATE}])) * 60",
                    "started/min {{source}}",
                ),
                prom(
                    f"sum by (reason) (rate(clickstream_sessions_closed_total[{RATE}])) * 60",
                    "closed/min: {{reason}}",
                ),
            ],
        ),
        timeseries(
            "Processor state and recovery",
            [
                prom("sum(clickstream_visitors_in_state)", "visitors in state"),
                prom(f"sum(rate(clickstream_states_expired_total[{RATE}])) * 60", "expired/min"),
                prom(
                    "sum by (topic) (increase(clickstream_offset_gaps_total[15m]))",
                    "seeks back, 15 min: {{topic}}",
                ),
            ],
            description="Visitors the processors hold state for (bounded by "
            "CLICKSTREAM_STATE_TTL_DAYS), states expired, and seeks back to skipped or "
            "stuck records.",
        ),
        timeseries(
            "Stage transitions per minute",
            [
                prom(
                    f"sum by (from_stage, to_stage) (rate(clickstream_stage_transitions_total[{RATE}])) * 60",
                    "{{from_stage}} → {{to_stage}}",
                )
            ],
        ),
        timeseries(
            "Triggers per minute",
            [
                prom(
                    f"sum by (trigger) (rate(clickstream_triggers_total[{RATE}])) * 60",
                    "{{trigger}}",
                )
            ],
        ),
        timeseries(
            "Hourly conversion against last week",
            [
                prom("clickstream:conversion_rate:ratio1h", "last hour"),
                prom("clickstream:conversion_rate:ratio1h offset 1w", "same hour last week"),
            ],
            unit="percentunit",
            description="Purchase-stage transitions over sessions started, per hour "
            "(recording rule; the ClickstreamConversionRateDrop alert compares the two).",
        ),
    ]
    sink = [
        timeseries(
            "Rows written per second",
            [
                prom(
                    f"sum by (table) (rate(clickstream_sink_rows_written_total[{RATE}]))",
                    "{{table}}",
                )
            ],
            unit="ops",
        ),
        timeseries(
            "Batch size",
            [
                prom(
                    f"sum by (table) (rate(clickstream_sink_batch_rows_sum[{RATE}]))"
                    f" / sum by (table) (rate(clickstream_sink_batch_rows_count[{RATE}]))",
                    "mean {{table}}",
                ),
                prom(
                    "histogram_quantile(0.99, sum by (le, table) "
                    f"(rate(clickstream_sink_batch_rows_bucket[{RATE}])))",
                    "p99 {{table}}",
                ),
            ],
            description="Rows per insert.",
        ),
        timeseries(
            "Insert latency",
            quantiles("clickstream_sink_insert_duration_seconds", "table"),
            unit="s",
        ),
        timeseries(
            "Failures, retries and rejected rows",
            [
                prom(
                    f"sum by (table, kind) (rate(clickstream_sink_failures_total[{RATE}])) * 60",
                    "failed/min {{table}} {{kind}}",
                ),
                prom(
                    f"sum by (table) (rate(clickstream_sink_retries_total[{RATE}])) * 60",
                    "retries/min {{table}}",
                ),
                prom(
                    f"sum by (table) (rate(clickstream_sink_rejected_rows_total[{RATE}])) * 60",
                    "rejected rows/min {{table}}",
                ),
            ],
        ),
        timeseries(
            "Sink paused",
            [prom("max by (instance) (clickstream_sink_paused)", "{{instance}}")],
            description="1 while the sink backs off from ClickHouse (consumer paused).",
        ),
        timeseries(
            "Query API requests per second",
            [
                prom(
                    f"sum by (route, status) (rate(clickstream_api_requests_total[{RATE}]))",
                    "{{route}} {{status}}",
                )
            ],
            unit="reqps",
        ),
    ]
    processes = [
        timeseries(
            "CPU by process",
            [
                prom(
                    f"sum by (job, instance) (rate(process_cpu_seconds_total[{RATE}]))",
                    "{{job}} {{instance}}",
                )
            ],
            unit="percentunit",
            description="CPU seconds per second (1 = one core). Faust's own sensor "
            "metrics are not exported yet; this is the processes' view.",
        ),
        timeseries(
            "Resident memory by process",
            [
                prom(
                    "sum by (job, instance) (process_resident_memory_bytes)", "{{job}} {{instance}}"
                )
            ],
            unit="bytes",
        ),
        timeseries(
            "Scrape targets up",
            [prom('sum by (job) (up{job=~"clickstream.*"})', "{{job}}")],
            description="Targets Prometheus scraped successfully, per job.",
        ),
    ]
    return dashboard(
        "clickstream-pipeline",
        "Clickstream: pipeline health",
        "Collector, processor and sink: throughput, latency, lag, failures.",
        [
            ("Collector", collector),
            ("Processor", processor),
            ("Sink and API", sink),
            ("Processes", processes),
        ],
        [
            {
                **variable(
                    "source",
                    "Source",
                    PROMETHEUS,
                    "label_values(clickstream_events_received_total, source)",
                ),
                "allValue": ".*",
            }
        ],
    )


# --- Customer journey (ClickHouse) ------------------------------------------

SOURCES = "source IN (${source:singlequote})"
SESSIONS = f"""
FROM clickstream.sessions FINAL
WHERE $__timeFilter(started_at) AND is_bot = 0 AND {SOURCES}"""
BOT_SESSIONS = (
    "SELECT session_id FROM clickstream.sessions WHERE is_bot = 1 AND $__timeFilter(started_at)"
)
BOT_VISITORS = (
    "SELECT visitor_id FROM clickstream.sessions WHERE is_bot = 1 AND $__timeFilter(started_at)"
)
EVENTS_FILTER = f"$__timeFilter(ts) AND is_bot = 0 AND {SOURCES}"


def stage_order() -> str:
    """['awareness', ..., 'lapsed'] from schemas/journey/stages.json, for ORDER BY indexOf."""
    spec = json.loads(STAGES_FILE.read_text())
    stages = [*spec["stages"], spec["lapse"]["stage"]]
    return "[" + ", ".join(f"'{s}'" for s in stages) + "]"


def customer_journey() -> dict:
    overview = [
        stat("Sessions", sql(f"SELECT count() AS sessions{SESSIONS}", table=True)),
        stat(
            "Visitors",
            sql(f"SELECT uniqExact(visitor_id) AS visitors{SESSIONS}", table=True),
        ),
        stat(
            "Conversion rate",
            sql(f"SELECT countIf(orders > 0) / count() AS conversion_rate{SESSIONS}", table=True),
            unit="percentunit",
            description="Sessions with an order over sessions.",
        ),
        stat(
            "Bounce rate",
            sql(f"SELECT countIf(bounce) / count() AS bounce_rate{SESSIONS}", table=True),
            unit="percentunit",
        ),
        stat(
            "Revenue",
            sql(f"SELECT sum(revenue) AS revenue{SESSIONS}", table=True),
            unit="currencyUSD",
        ),
        stat(
            "Average order value",
            sql(f"SELECT sum(revenue) / nullIf(sum(orders), 0) AS aov{SESSIONS}", table=True),
            unit="currencyUSD",
        ),
    ]
    funnel = [
        bars(
            "Visitors by current stage",
            sql(
                f"""
SELECT stage, count() AS visitors
FROM clickstream.visitors FINAL
WHERE $__timeFilter(last_seen) AND {SOURCES}
  AND visitor_id NOT IN ({BOT_VISITORS})
GROUP BY stage
ORDER BY indexOf({stage_order()}, stage)""",
                table=True,
            ),
            description="Visitors seen in the time range, by the stage they are in now (bots excluded).",
        ),
        table(
            "Stage flow",
            sql(
                f"""
SELECT if(from_stage = '', '(new)', from_stage) AS from_stage,
       to_stage,
       count() AS transitions,
       uniqExact(visitor_id) AS visitors
FROM clickstream.stage_transitions FINAL
WHERE $__timeFilter(ts) AND {SOURCES}
  AND session_id NOT IN ({BOT_SESSIONS})
GROUP BY from_stage, to_stage
ORDER BY transitions DESC""",
                table=True,
            ),
            description="Stage transitions from → to in the time range (bots excluded).",
        ),
    ]
    conversion = [
        timeseries(
            "Conversion, bounce and cart abandonment",
            [
                sql(
                    f"""
SELECT $__timeInterval(started_at) AS time,
       countIf(orders > 0) / count() AS conversion_rate,
       countIf(bounce) / count() AS bounce_rate,
       countIf(cart_items > 0 AND orders = 0) / nullIf(countIf(cart_items > 0 OR orders > 0), 0) AS cart_abandonment_rate{SESSIONS}
GROUP BY time
ORDER BY time"""
                )
            ],
            unit="percentunit",
            description="By session start. Conversion: sessions with an order / sessions. "
            "Bounce: bounced sessions / sessions. Cart abandonment: sessions with a cart and "
            "no order / sessions with a cart. Sessions still open count as they are so far.",
            ds=CLICKHOUSE,
        ),
        timeseries(
            "Revenue and average order value",
            [
                sql(
                    f"""
SELECT $__timeInterval(started_at) AS time,
       sum(revenue) AS revenue,
       revenue / nullIf(sum(orders), 0) AS aov{SESSIONS}
GROUP BY time
ORDER BY time"""
                )
            ],
            unit="currencyUSD",
            ds=CLICKHOUSE,
        ),
    ]
    audience = [
        table(
            "Sessions by campaign",
            sql(
                f"""
SELECT if(utm_campaign = '', '(none)', utm_campaign) AS campaign,
       count() AS sessions,
       countIf(orders > 0) AS converted,
       countIf(orders > 0) / count() AS conversion_rate,
       sum(revenue) AS revenue{SESSIONS}
GROUP BY campaign
ORDER BY sessions DESC
LIMIT 50""",
                table=True,
            ),
            width=8,
        ),
        timeseries(
            "Sessions by device type",
            [
                sql(
                    f"""
SELECT $__timeInterval(started_at) AS time,
       if(device_type = '', 'other', device_type) AS device_type,
       count() AS sessions{SESSIONS}
GROUP BY time, device_type
ORDER BY time"""
                )
            ],
            width=8,
            ds=CLICKHOUSE,
        ),
        timeseries(
            "New vs returning visitors",
            [
                sql(
                    f"""
SELECT $__timeInterval(started_at) AS time,
       countIf(is_new_visitor) AS new_visitor_sessions,
       countIf(NOT is_new_visitor) AS returning_visitor_sessions{SESSIONS}
GROUP BY time
ORDER BY time"""
                )
            ],
            width=8,
            description="Sessions by new and returning visitors.",
            ds=CLICKHOUSE,
        ),
    ]
    products = [
        table(
            "Top products: viewed, added, bought",
            sql(
                f"""
SELECT product_id,
       uniqExactIf(message_id, kind = 'view') AS views,
       uniqExactIf(message_id, kind = 'cart') AS cart_adds,
       uniqExactIf(message_id, kind = 'order') AS orders,
       orders / nullIf(views, 0) AS view_to_order
FROM (
    SELECT message_id,
           if(event = 'Product Viewed', 'view', 'cart') AS kind,
           JSONExtractString(properties, 'product_id') AS product_id
    FROM clickstream.events
    WHERE event IN ('Product Viewed', 'Product Added') AND {EVENTS_FILTER}
    UNION ALL
    SELECT message_id, 'order' AS kind, JSONExtractString(product, 'product_id') AS product_id
    FROM clickstream.events
    ARRAY JOIN JSONExtractArrayRaw(properties, 'products') AS product
    WHERE event = 'Order Completed' AND {EVENTS_FILTER}
)
WHERE product_id != ''
GROUP BY product_id
ORDER BY views DESC
LIMIT 25""",
                table=True,
            ),
            width=24,
            height=10,
            description="Events counted once per message id (replays do not count twice); "
            "orders are Order Completed events listing the product.",
        ),
    ]
    return dashboard(
        "clickstream-journey",
        "Clickstream: customer journey",
        "Funnel, conversion, acquisition and products from ClickHouse (bots excluded).",
        [
            ("Overview", overview),
            ("Funnel", funnel),
            ("Conversion and revenue", conversion),
            ("Acquisition and audience", audience),
            ("Products", products),
        ],
        [
            variable(
                "source",
                "Source",
                CLICKHOUSE,
                "SELECT DISTINCT source FROM clickstream.sessions ORDER BY source",
            )
        ],
        time_from="now-24h",
    )


# --- output ------------------------------------------------------------------


def dashboards() -> dict[str, dict]:
    """File name -> dashboard."""
    return {
        "pipeline-health.json": pipeline_health(),
        "customer-journey.json": customer_journey(),
    }


def render(board: dict) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, board in dashboards().items():
        path = OUT_DIR / name
        text = render(board)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent.parent)}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python deploy/grafana/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
