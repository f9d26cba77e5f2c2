"""The built-in journey page, for people without Grafana, and the JSON it reads.

    GET /                               the page (stream/static/journey/index.html)
    GET /static/journey/*               its script and styles
    GET /api/v1/page/summary?from=&to=&source=     sessions, rates, revenue, AOV, open sessions
    GET /api/v1/page/funnel?from=&to=&source=      reached / entered / step conversion, current stage
    GET /api/v1/page/flow?from=&to=&source=        stage transitions counted by (from, to)
    GET /api/v1/page/rates?from=&to=&source=&bucket=minute|hour|auto
    GET /api/v1/page/top?from=&to=&source=&limit=  top events and products
    GET /api/v1/page/recent?from=&to=&source=&limit=   latest stage changes

These answers leave bots out, as the dashboards and the API's funnel and summary do
(the summary here is queries.summary's, plus the sessions open now): rows with `is_bot`
where the table has the column; elsewhere the stage transitions of bot sessions and the
visitors whose every session was a bot's. Rates over time come from journey_metrics_1m
FINAL (which counts no bot), summed over partitions and keys.
The same rules as queries.py: values travel as `{name:Type}` parameters, counts read
FINAL, calls run in threads (`clickstream top` reads these endpoints too).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from stream.api import app as api
from stream.api import params, queries
from stream.api.params import ParamError, TimeRange
from stream.api.queries import (
    STAGES,
    as_records,
    funnel_counts,
    not_bot_session,
    not_bot_visitor,
    time_filters,
    where_clause,
)
from stream.metrics import rates

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "journey"
LAPSED = "lapsed"
BUCKETS = {"minute": "toStartOfMinute", "hour": "toStartOfHour"}
MAX_MINUTE_RANGE = dt.timedelta(days=2)  # at most 2,880 points
AUTO_MINUTE_RANGE = dt.timedelta(hours=6)
UNTRACKED_EVENTS = ("Page Ping",)  # engagement heartbeats, not actions


# --- SQL pieces -----------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


# --- questions ------------------------------------------------------------------------------


def summary(client, database: str, window: TimeRange, source: str | None) -> dict[str, Any]:
    """queries.summary (sessions started in the window, bots left out, bounce rate and
    average duration over closed sessions), and the sessions open now, whenever they
    started."""
    live_conditions, live_parameters = time_filters("started_at", None, source)
    live = client.query(
        f"""
        SELECT count() FROM {database}.sessions FINAL
        {where_clause([*live_conditions, "NOT closed", "NOT is_bot"])}
        """,
        parameters=live_parameters,
    )
    return queries.summary(client, database, window, source) | {
        "active_sessions": live.result_rows[0][0]
    }


def funnel(client, database: str, window: TimeRange, source: str | None) -> dict[str, Any]:
    """Per stage: visitors who reached it in the window (their furthest stage is it or a
    later one), visitors who entered it, step conversion; and where every known visitor
    is now (`current`, lapsed included, not limited to the window)."""
    at_rank, entered = funnel_counts(client, database, window, source)
    now_conditions, now_parameters = time_filters("last_seen", None, source)
    current = client.query(
        f"""
        SELECT stage, count()
        FROM {database}.visitors FINAL
        {where_clause([*now_conditions, not_bot_visitor(database)])}
        GROUP BY stage
        """,
        parameters=now_parameters,
    )
    return shape_funnel(at_rank, entered, dict(current.result_rows)) | {
        "from": window.start,
        "to": window.end,
        "source": source,
    }


def shape_funnel(
    at_rank: Mapping[int, int], entered: Mapping[str, int], current: Mapping[str, int]
) -> dict[str, Any]:
    """The funnel's answer from (1-based rank of the furthest stage -> visitors), (stage ->
    visitors who entered it) and (stage -> visitors in it now)."""
    stages = []
    previous = 0
    for rank, stage in enumerate(STAGES, start=1):
        reached = sum(v for r, v in at_rank.items() if r >= rank)
        stages.append(
            {
                "stage": stage,
                "visitors": reached,
                "entered": entered.get(stage, 0),
                "current": current.get(stage, 0),
                "conversion": None if rank == 1 else _ratio(reached, previous),
            }
        )
        previous = reached
    order = [*STAGES, LAPSED]
    order += sorted(s for s in current if s not in order)
    purchased = stages[STAGES.index("purchase")]["visitors"]
    return {
        "stages": stages,
        "overall_conversion": _ratio(purchased, stages[0]["visitors"]),
        "current": [{"stage": s, "visitors": current.get(s, 0)} for s in order],
        "current_total": sum(current.values()),
    }


def flow(client, database: str, window: TimeRange, source: str | None) -> dict[str, Any]:
    """Stage transitions by (from, to); `from` is "" for a visitor's first stage."""
    conditions, parameters = time_filters("ts", window, source)
    conditions.append(not_bot_session(database))
    result = client.query(
        f"""
        SELECT from_stage, to_stage, count() AS transitions, uniqExact(visitor_id) AS visitors
        FROM {database}.stage_transitions FINAL
        {where_clause(conditions)}
        GROUP BY from_stage, to_stage
        ORDER BY transitions DESC, from_stage, to_stage
        """,
        parameters=parameters,
    )
    rows = as_records(result)
    return {
        "from": window.start,
        "to": window.end,
        "source": source,
        "stages": [*STAGES, LAPSED],
        "transitions": [
            {
                "from": r["from_stage"],
                "to": r["to_stage"],
                "transitions": r["transitions"],
                "visitors": r["visitors"],
            }
            for r in rows
        ],
    }


RATE_FIGURES = ("sessions", "bounces", "orders", "revenue", "carts_created", "carts_abandoned")


def rates_over_time(
    client, database: str, window: TimeRange, source: str | None, bucket: str
) -> dict[str, Any]:
    """Completed one-minute windows (journey_metrics_1m FINAL), summed over partitions and
    keys per bucket, with their rates. Buckets without a row are left out."""
    conditions, parameters = time_filters("window_start", window, source)
    sums = ", ".join(f"sum({name}) AS {name}" for name in RATE_FIGURES)
    result = client.query(
        f"""
        SELECT {BUCKETS[bucket]}(window_start) AS t, {sums}
        FROM {database}.journey_metrics_1m FINAL
        {where_clause(conditions)}
        GROUP BY t
        ORDER BY t
        """,
        parameters=parameters,
    )
    points = []
    for row in as_records(result):
        derived = rates.derive(row)
        points.append(
            {
                **row,
                "conversion_rate": derived["conversion_rate"],
                "bounce_rate": derived["bounce_rate"],
                "cart_abandonment_rate": derived["cart_abandonment_rate"],
                "average_order_value": derived["average_order_value"],
            }
        )
    return {
        "from": window.start,
        "to": window.end,
        "source": source,
        "bucket": bucket,
        "points": points,
    }


def top(client, database: str, window: TimeRange, source: str | None, limit: int) -> dict[str, Any]:
    """The most frequent events (Page Pings aside) and the products most ordered, carted
    and viewed."""
    conditions, parameters = time_filters("ts", window, source)
    conditions.append("NOT is_bot")
    parameters |= {"limit": limit, "untracked": list(UNTRACKED_EVENTS)}
    events = client.query(
        f"""
        SELECT if(type = 'track', event, type) AS label, count() AS n,
               uniqExact(visitor_id) AS n_visitors
        FROM {database}.events FINAL
        {where_clause([*conditions, "NOT has({untracked:Array(String)}, event)"])}
        GROUP BY label
        ORDER BY n DESC, label
        LIMIT {{limit:UInt32}}
        """,
        parameters=parameters,
    )
    where = " AND ".join(conditions)
    products = client.query(
        f"""
        SELECT product_id, anyIf(product_name, product_name != '') AS name,
               countIf(kind = 'view') AS views, countIf(kind = 'cart') AS cart_adds,
               countIf(kind = 'order') AS orders, sum(units) AS units, sum(amount) AS revenue
        FROM
        (
            SELECT if(event = 'Product Viewed', 'view', 'cart') AS kind,
                   JSONExtractString(properties, 'product_id') AS product_id,
                   JSONExtractString(properties, 'name') AS product_name,
                   0.0 AS units, 0.0 AS amount
            FROM {database}.events FINAL
            WHERE {where} AND event IN ('Product Viewed', 'Product Added')
            UNION ALL
            SELECT 'order' AS kind,
                   JSONExtractString(product, 'product_id') AS product_id,
                   JSONExtractString(product, 'name') AS product_name,
                   if(JSONHas(product, 'quantity'), JSONExtractFloat(product, 'quantity'), 1.0)
                       AS units,
                   JSONExtractFloat(product, 'price') * units AS amount
            FROM {database}.events FINAL
            ARRAY JOIN JSONExtractArrayRaw(properties, 'products') AS product
            WHERE {where} AND event = 'Order Completed'
        )
        WHERE product_id != ''
        GROUP BY product_id
        ORDER BY orders DESC, cart_adds DESC, views DESC, product_id
        LIMIT {{limit:UInt32}}
        """,
        parameters=parameters,
    )
    return {
        "from": window.start,
        "to": window.end,
        "source": source,
        "events": [
            {"event": label, "events": n, "visitors": v} for label, n, v in events.result_rows
        ],
        "products": as_records(products),
    }


def recent(
    client, database: str, window: TimeRange, source: str | None, limit: int
) -> dict[str, Any]:
    """The latest stage changes by event time."""
    conditions, parameters = time_filters("ts", window, source)
    conditions.append(not_bot_session(database))
    result = client.query(
        f"""
        SELECT ts, visitor_id, user_id, source, from_stage, to_stage, session_id
        FROM {database}.stage_transitions FINAL
        {where_clause(conditions)}
        ORDER BY ts DESC, idempotency_key
        LIMIT {{limit:UInt32}}
        """,
        parameters={**parameters, "limit": limit},
    )
    return {"source": source, "changes": as_records(result)}


# --- parameters -----------------------------------------------------------------------------


def bucket_of(query: Mapping[str, str], window: TimeRange) -> str:
    """`bucket`: minute, hour, or auto (minutes up to 6 hours, hours beyond)."""
    raw = query.get("bucket") or "auto"
    if raw == "auto":
        return "minute" if window.end - window.start <= AUTO_MINUTE_RANGE else "hour"
    if raw not in BUCKETS:
        raise ParamError("bucket must be minute, hour or auto")
    if raw == "minute" and window.end - window.start > MAX_MINUTE_RANGE:
        raise ParamError("bucket=minute takes a range of 2 days at most")
    return raw


# --- handlers -------------------------------------------------------------------------------


async def _answer(request: web.Request, question: Callable[..., Any], *args: Any) -> web.Response:
    client = request.app[api.CLIENT]
    database = request.app[api.SETTINGS].database
    data = await asyncio.wait_for(
        asyncio.to_thread(question, client, database, *args), api.QUERY_TIMEOUT_S
    )
    return api.json_response(data)


def _window_and_source(request: web.Request) -> tuple[TimeRange, str | None]:
    return params.time_range(request.query), params.source(request.query)


async def summary_handler(request: web.Request) -> web.Response:
    return await _answer(request, summary, *_window_and_source(request))


async def funnel_handler(request: web.Request) -> web.Response:
    return await _answer(request, funnel, *_window_and_source(request))


async def flow_handler(request: web.Request) -> web.Response:
    return await _answer(request, flow, *_window_and_source(request))


async def rates_handler(request: web.Request) -> web.Response:
    window, source = _window_and_source(request)
    return await _answer(request, rates_over_time, window, source, bucket_of(request.query, window))


async def top_handler(request: web.Request) -> web.Response:
    window, source = _window_and_source(request)
    limit = params.integer(request.query, "limit", 10, 1, 100)
    return await _answer(request, top, window, source, limit)


async def recent_handler(request: web.Request) -> web.Response:
    window, source = _window_and_source(request)
    limit = params.integer(request.query, "limit", 20, 1, 200)
    return await _answer(request, recent, window, source, limit)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    """The page at `/`, its assets under /static/journey/, its JSON under /api/v1/page/."""
    app.router.add_get("/", index)
    app.router.add_static("/static/journey/", STATIC_DIR)
    app.router.add_get("/api/v1/page/summary", summary_handler)
    app.router.add_get("/api/v1/page/funnel", funnel_handler)
    app.router.add_get("/api/v1/page/flow", flow_handler)
    app.router.add_get("/api/v1/page/rates", rates_handler)
    app.router.add_get("/api/v1/page/top", top_handler)
    app.router.add_get("/api/v1/page/recent", recent_handler)
