"""The API's questions to ClickHouse: SQL with server-side parameters, answers as plain data.

Every function is synchronous (the client is) and takes the client and the database
name (a validated identifier, the only thing formatted into the text); every value
from a request travels as a `{name:Type}` parameter. Every count reads `FINAL`, so
replayed or re-emitted rows never count twice.

Bots are left out of the funnel and the summary's rates; the other answers (stages,
sessions, one visitor) count what was recorded, bots included.
"""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError

from stream.api.params import TimeRange, clickhouse_time

# Journey stages in funnel order (the sessions_<stage> figures of journey_metrics_1m).
STAGES = ("awareness", "consideration", "decision", "purchase", "retention", "advocacy")

SESSION_COLUMNS = (
    "session_id", "visitor_id", "anonymous_id", "user_id", "source", "started_at", "ended_at",
    "duration_s", "pageviews", "events", "engaged_seconds", "bounce", "landing_page",
    "exit_page", "referrer", "ref_source", "ref_medium", "utm_source", "utm_medium",
    "utm_campaign", "click_id", "device_type", "browser", "os", "is_bot", "stage_reached",
    "cart_value", "cart_items", "orders", "revenue", "refunds", "is_new_visitor", "closed",
    "close_reason", "version",
)  # fmt: skip


def where_clause(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def time_filters(
    time_column: str | None, window: TimeRange | None, source: str | None
) -> tuple[list[str], dict[str, Any]]:
    conditions: list[str] = []
    parameters: dict[str, Any] = {}
    if window is not None and time_column is not None:
        conditions.append(f"{time_column} >= {{start:DateTime64(3, 'UTC')}}")
        conditions.append(f"{time_column} < {{end:DateTime64(3, 'UTC')}}")
        parameters["start"] = clickhouse_time(window.start)
        parameters["end"] = clickhouse_time(window.end)
    if source is not None:
        conditions.append("source = {source:String}")
        parameters["source"] = source
    return conditions, parameters


def as_records(result) -> list[dict[str, Any]]:
    names = result.column_names
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def not_bot_session(database: str) -> str:
    """A condition on stage_transitions: the transition's session was not a bot's."""
    return f"session_id NOT IN (SELECT session_id FROM {database}.sessions FINAL WHERE is_bot)"


def not_bot_visitor(database: str) -> str:
    """A condition on visitors: not every session of the visitor was a bot's."""
    return (
        f"visitor_id NOT IN (SELECT visitor_id FROM {database}.sessions FINAL "
        "GROUP BY visitor_id HAVING countIf(NOT is_bot) = 0)"
    )


def funnel_counts(
    client, database: str, window: TimeRange, source: str | None
) -> tuple[dict[int, int], dict[str, int]]:
    """(1-based rank of each visitor's furthest stage in the window -> visitors) and
    (stage -> visitors who entered it in the window); bots left out."""
    conditions, parameters = time_filters("ts", window, source)
    conditions += ["has({stages:Array(String)}, to_stage)", not_bot_session(database)]
    parameters["stages"] = list(STAGES)
    furthest = client.query(
        f"""
        SELECT furthest, count()
        FROM
        (
            SELECT visitor_id, max(indexOf({{stages:Array(String)}}, to_stage)) AS furthest
            FROM {database}.stage_transitions FINAL
            {where_clause(conditions)}
            GROUP BY visitor_id
        )
        GROUP BY furthest
        """,
        parameters=parameters,
    )
    entered = client.query(
        f"""
        SELECT to_stage, uniqExact(visitor_id)
        FROM {database}.stage_transitions FINAL
        {where_clause(conditions)}
        GROUP BY to_stage
        """,
        parameters=parameters,
    )
    return dict(furthest.result_rows), dict(entered.result_rows)


def funnel(client, database: str, window: TimeRange, source: str | None) -> dict[str, Any]:
    """Per stage: visitors who reached it (their furthest stage in the window is it or a
    later one), visitors who entered it in the window, and step-to-step conversion
    (reached / reached at the step before). Bots are left out."""
    at_rank, entered_by_stage = funnel_counts(client, database, window, source)
    out = []
    previous = 0
    for rank, stage in enumerate(STAGES, start=1):
        reached = sum(v for r, v in at_rank.items() if r >= rank)
        out.append(
            {
                "stage": stage,
                "visitors": reached,
                "entered": entered_by_stage.get(stage, 0),
                "conversion": None if rank == 1 else _ratio(reached, previous),
            }
        )
        previous = reached
    purchased = out[STAGES.index("purchase")]["visitors"]
    return {
        "from": window.start,
        "to": window.end,
        "source": source,
        "stages": out,
        "overall_conversion": _ratio(purchased, out[0]["visitors"]),
    }


def stages(client, database: str, source: str | None) -> dict[str, Any]:
    """How many visitors are in each stage now."""
    conditions, parameters = time_filters(None, None, source)
    result = client.query(
        f"""
        SELECT stage, count() AS visitors
        FROM {database}.visitors FINAL
        {where_clause(conditions)}
        GROUP BY stage
        """,
        parameters=parameters,
    )
    counts = dict(result.result_rows)
    order = [s for s in STAGES if s in counts] + sorted(s for s in counts if s not in STAGES)
    return {
        "source": source,
        "total": sum(counts.values()),
        "stages": [{"stage": s, "visitors": counts[s]} for s in order],
    }


def sessions(client, database: str, source: str | None, limit: int, offset: int) -> dict[str, Any]:
    """Sessions, most recent start first, one page."""
    conditions, parameters = time_filters(None, None, source)
    total = client.query(
        f"SELECT count() FROM {database}.sessions FINAL {where_clause(conditions)}",
        parameters=parameters,
    ).result_rows[0][0]
    result = client.query(
        f"""
        SELECT {", ".join(SESSION_COLUMNS)}
        FROM {database}.sessions FINAL
        {where_clause(conditions)}
        ORDER BY started_at DESC, session_id
        LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}
        """,
        parameters={**parameters, "limit": limit, "offset": offset},
    )
    return {
        "source": source,
        "total": total,
        "limit": limit,
        "offset": offset,
        "sessions": as_records(result),
    }


def visitor(client, database: str, visitor_id: str) -> dict[str, Any] | None:
    """One visitor's journey: its row, its sessions, its stage transitions; None if unknown."""
    parameters = {"visitor_id": visitor_id}
    row = client.query(
        f"SELECT * FROM {database}.visitors FINAL WHERE visitor_id = {{visitor_id:String}}",
        parameters=parameters,
    )
    visits = client.query(
        f"""
        SELECT {", ".join(SESSION_COLUMNS)} FROM {database}.sessions FINAL
        WHERE visitor_id = {{visitor_id:String}} ORDER BY started_at, session_id
        """,
        parameters=parameters,
    )
    transitions = client.query(
        f"""
        SELECT * FROM {database}.stage_transitions FINAL
        WHERE visitor_id = {{visitor_id:String}} ORDER BY ts, idempotency_key
        """,
        parameters=parameters,
    )
    found = as_records(row)
    if not found and not visits.result_rows and not transitions.result_rows:
        return None
    return {
        "visitor_id": visitor_id,
        "visitor": found[0] if found else None,
        "sessions": as_records(visits),
        "transitions": as_records(transitions),
    }


def summary(client, database: str, window: TimeRange, source: str | None) -> dict[str, Any]:
    """Session rates for sessions started in the window, bots left out.

    conversion: sessions with an order / sessions. Bounces and durations are known
    when a session closes, so bounce rate (bounced / closed sessions) and average
    session duration (total duration / closed sessions) are over closed sessions: a
    live session cannot be known to bounce yet. Cart abandonment: closed sessions with
    items left in the cart and no order / closed sessions that ordered or held items
    (an order empties the cart: counting held items alone would make every cart an
    abandoned one; an open session may still convert). AOV: revenue / orders.
    """
    conditions, parameters = time_filters("started_at", window, source)
    conditions.append("NOT is_bot")
    # Aliases differ from column names: ClickHouse would read `orders` in countIf(...)
    # as the alias of sum(orders).
    result = client.query(
        f"""
        SELECT
            count() AS n_sessions,
            uniqExact(visitor_id) AS n_visitors,
            countIf(orders > 0) AS n_converted,
            countIf(closed) AS n_closed,
            countIf(closed AND bounce) AS n_bounces,
            sumIf(duration_s, closed) AS total_duration_s,
            countIf(closed AND (cart_items > 0 OR cart_value > 0 OR orders > 0)) AS n_carts,
            countIf(closed AND (cart_items > 0 OR cart_value > 0) AND orders = 0) AS n_abandoned,
            sum(orders) AS total_orders,
            sum(revenue) AS total_revenue,
            sum(refunds) AS total_refunds,
            sum(pageviews) AS total_pageviews
        FROM {database}.sessions FINAL
        {where_clause(conditions)}
        """,
        parameters=parameters,
    )
    f = as_records(result)[0]
    n = f["n_sessions"]
    return {
        "from": window.start,
        "to": window.end,
        "source": source,
        "sessions": n,
        "visitors": f["n_visitors"],
        "converted_sessions": f["n_converted"],
        "bounces": f["n_bounces"],
        "carts": f["n_carts"],
        "abandoned_carts": f["n_abandoned"],
        "orders": f["total_orders"],
        "revenue": f["total_revenue"],
        "refunds": f["total_refunds"],
        "pageviews": f["total_pageviews"],
        "conversion_rate": _ratio(f["n_converted"], n),
        "bounce_rate": _ratio(f["n_bounces"], f["n_closed"]),
        "avg_session_duration_s": _ratio(f["total_duration_s"], f["n_closed"]),
        "cart_abandonment_rate": _ratio(f["n_abandoned"], f["n_carts"]),
        "average_order_value": _ratio(f["total_revenue"], f["total_orders"]),
    }


def ping(client) -> None:
    client.query("SELECT 1")


def run_sql(readonly_client, sql: str) -> dict[str, Any]:
    """The operator's query, on the read-only client."""
    result = readonly_client.query(sql)
    rows = [list(r) for r in result.result_rows]
    columns = list(result.column_names)
    if not columns and not rows:  # chdb sends no header for an empty result
        columns = _columns_of(readonly_client, sql)
    return {"columns": columns, "rows": rows}


def _columns_of(readonly_client, sql: str) -> list[str]:
    try:
        described = readonly_client.query(f"DESCRIBE ({sql}\n)")
    except DatabaseError:
        return []
    return [row[0] for row in described.result_rows]
