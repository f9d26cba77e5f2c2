"""Every ClickHouse query of the Grafana dashboards runs on the real schema (chdb).

The queries are expanded the way the Grafana ClickHouse plugin does (its backend macros,
pkg/macros/macros.go; template variables by Grafana), run on the tables the migrations
create, and must return the columns the panels are built around. A small seeded data set
checks what the key panels compute: bots and other sources excluded, replays not
counted twice (FINAL / uniqExact).
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from stream import config
from stream.config import REPO_ROOT

pytestmark = pytest.mark.integration

migrate = pytest.importorskip(
    "stream.sink.migrate",
    reason="stream.sink.migrate (the ClickHouse migrator) is not importable yet",
)

DASHBOARDS_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
CLICKHOUSE_UID = "clickhouse"
DATABASE = "dashboards_test"  # the dashboards' `clickstream.` is pointed here

UTC = dt.UTC
FROM = dt.datetime(2024, 6, 1, tzinfo=UTC)
TO = dt.datetime(2024, 6, 2, tzinfo=UTC)
INTERVAL_S = 3600
SOURCES = ("web",)  # the `source` variable: one source selected

# Panel title -> the columns it is built around (time series: time first).
EXPECTED_COLUMNS = {
    "Sessions": ["sessions"],
    "Visitors": ["visitors"],
    "Conversion rate": ["conversion_rate"],
    "Bounce rate": ["bounce_rate"],
    "Revenue": ["revenue"],
    "Average order value": ["aov"],
    "Visitors by current stage": ["stage", "visitors"],
    "Stage flow": ["from_stage", "to_stage", "transitions", "visitors"],
    "Conversion, bounce and cart abandonment": [
        "time",
        "conversion_rate",
        "bounce_rate",
        "cart_abandonment_rate",
    ],
    "Revenue and average order value": ["time", "revenue", "aov"],
    "Sessions by campaign": ["campaign", "sessions", "converted", "conversion_rate", "revenue"],
    "Sessions by device type": ["time", "device_type", "sessions"],
    "New vs returning visitors": ["time", "new_visitor_sessions", "returning_visitor_sessions"],
    "Top products: viewed, added, bought": [
        "product_id",
        "views",
        "cart_adds",
        "orders",
        "view_to_order",
    ],
    "variable source": ["source"],
}


# --- the plugin's expansion ------------------------------------------------------


def expand(raw: str, *, database: str = DATABASE) -> str:
    """Grafana variables, then the plugin's macros, as the plugin would send the query."""

    def seconds(t: dt.datetime) -> int:
        return int(t.timestamp())

    quoted = ",".join("'" + s.replace("'", "\\'") + "'" for s in SOURCES)
    sql = raw.replace("${source:singlequote}", quoted).replace("${source}", quoted)
    sql = re.sub(r"\$source\b", quoted, sql)
    sql = re.sub(
        r"\$__timeFilter\(\s*([^()]+?)\s*\)",
        lambda m: f"{m[1]} >= toDateTime({seconds(FROM)}) AND {m[1]} <= toDateTime({seconds(TO)})",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\(\s*([^()]+?)\s*\)",
        lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {INTERVAL_S} second)",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({seconds(FROM)})")
    sql = sql.replace("$__toTime", f"toDateTime({seconds(TO)})")
    sql = re.sub(r"\bclickstream\.", f"{database}.", sql)
    assert "$" not in sql, f"unexpanded macro or variable in:\n{sql}"
    return sql


def test_expand_matches_the_plugin():
    sql = expand(
        "SELECT $__timeInterval(ts) AS time FROM clickstream.events "
        "WHERE $__timeFilter(ts) AND source IN (${source:singlequote}) AND $__fromTime < $__toTime"
    )
    assert sql == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 3600 second) AS time "
        f"FROM {DATABASE}.events WHERE ts >= toDateTime(1717200000) AND ts <= toDateTime(1717286400)"
        " AND source IN ('web') AND toDateTime(1717200000) < toDateTime(1717286400)"
    )


# --- the queries -------------------------------------------------------------------


def clickhouse_queries() -> list[tuple[str, str, bool]]:
    """(panel title, raw SQL, is time series) of every ClickHouse query, variables included."""
    found = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        for var in board.get("templating", {}).get("list", []):
            if var.get("datasource", {}).get("uid") == CLICKHOUSE_UID:
                found.append((f"variable {var['name']}", var["query"], False))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("uid") == CLICKHOUSE_UID:
                    series = target.get("queryType") == "timeSeries"
                    found.append((panel["title"], target["rawSql"], series))
    return found


QUERIES = clickhouse_queries()


def test_every_clickhouse_panel_has_expected_columns():
    assert QUERIES, "no ClickHouse queries found in deploy/grafana/dashboards"
    assert sorted({title for title, _, _ in QUERIES}) == sorted(EXPECTED_COLUMNS)


# --- the engine: one chdb per process -------------------------------------------------


@pytest.fixture(scope="session")
def own_chdb_client(tmp_path_factory):
    """A chdb engine for this test session, used when no shared `ch_client` fixture exists."""
    import clickhouse_connect

    path = tmp_path_factory.mktemp("dashboards-chdb")
    return clickhouse_connect.get_client(dsn=f"chdb://{path}")


@pytest.fixture(scope="module")
def db(request):
    """The migrated schema in its own database, seeded; the client that holds it."""
    try:
        client = request.getfixturevalue("ch_client")  # a shared engine, if conftest has one
    except pytest.FixtureLookupError:
        client = request.getfixturevalue("own_chdb_client")
    settings = config.load({"CLICKSTREAM_DATABASE": DATABASE})
    client.command(f"DROP DATABASE IF EXISTS {DATABASE}")
    migrate.apply(client, settings)
    seed(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {DATABASE}")


def at(hour: int, minute: int = 0) -> dt.datetime:
    return FROM.replace(hour=hour, minute=minute)


def insert(client, table: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    client.insert(
        f"{DATABASE}.{table}",
        [[row[c] for c in columns] for row in rows],
        column_names=columns,
    )


def session(sid, visitor, start, **extra) -> dict:
    row = {
        "session_id": sid,
        "visitor_id": visitor,
        "source": "web",
        "started_at": start,
        "ended_at": start + dt.timedelta(minutes=5),
        "pageviews": 3,
        "bounce": False,
        "utm_campaign": "",
        "device_type": "desktop",
        "is_bot": False,
        "cart_items": 0,
        "orders": 0,
        "revenue": 0.0,
        "is_new_visitor": True,
        "version": 1,
    }
    return {**row, **extra}


def seed(client) -> None:
    """Web: 3 human sessions (one converts, one abandons a cart, one bounces), one bot
    session, one session of another source; replays of a session, a transition, an event."""
    insert(
        client,
        "sessions",
        [
            session("s1", "v1", at(10), bounce=True, pageviews=1),
            session("s2", "v2", at(10, 5), device_type="mobile", utm_campaign="summer", version=1),
            session(
                "s2",
                "v2",
                at(10, 5),
                device_type="mobile",
                utm_campaign="summer",
                cart_items=2,
                orders=1,
                revenue=50.0,
                version=2,
            ),
            session("s3", "v3", at(11), device_type="mobile", utm_campaign="summer", cart_items=1),
            session("s4", "b1", at(10, 10), is_bot=True, orders=1, revenue=99.0),
            session("s5", "v4", at(10, 20), source="app", orders=1, revenue=30.0),
        ],
    )

    def transition(key, visitor, sid, from_stage, to_stage, minute):
        return {
            "idempotency_key": key,
            "visitor_id": visitor,
            "source": "web",
            "from_stage": from_stage,
            "to_stage": to_stage,
            "ts": at(10, minute),
            "session_id": sid,
        }

    insert(
        client,
        "stage_transitions",
        [
            transition("k1", "v1", "s1", "", "awareness", 0),
            transition("k2", "v2", "s2", "", "awareness", 5),
            transition("k3", "v2", "s2", "awareness", "consideration", 6),
            transition("k4", "v2", "s2", "consideration", "decision", 7),
            transition("k5", "v2", "s2", "decision", "purchase", 8),
            transition("k5", "v2", "s2", "decision", "purchase", 8),  # replayed
            transition("k6", "b1", "s4", "", "awareness", 10),  # bot
        ],
    )

    def visitor(vid, stage, source="web"):
        return {
            "visitor_id": vid,
            "source": source,
            "first_seen": at(10),
            "last_seen": at(11),
            "stage": stage,
            "version": 1,
        }

    insert(
        client,
        "visitors",
        [
            visitor("v1", "awareness"),
            visitor("v2", "purchase"),
            visitor("v3", "consideration"),
            visitor("b1", "awareness"),  # bot
            visitor("v4", "purchase", source="app"),
        ],
    )

    def event(mid, name, visitor, properties, is_bot=False, minute=0):
        return {
            "message_id": mid,
            "type": "track",
            "event": name,
            "visitor_id": visitor,
            "ts": at(10, minute),
            "received_at": at(10, minute),
            "source": "web",
            "properties": json.dumps(properties),
            "is_bot": is_bot,
        }

    insert(
        client,
        "events",
        [
            event("m1", "Product Viewed", "v2", {"product_id": "p1"}),
            event("m1", "Product Viewed", "v2", {"product_id": "p1"}),  # replayed
            event("m2", "Product Viewed", "v3", {"product_id": "p1"}, minute=1),
            event("m3", "Product Viewed", "v2", {"product_id": "p2"}, minute=2),
            event("m4", "Product Added", "v2", {"product_id": "p1"}, minute=3),
            event(
                "m5",
                "Order Completed",
                "v2",
                {"order_id": "o1", "products": [{"product_id": "p1", "quantity": 2}]},
                minute=4,
            ),
            event("m6", "Product Viewed", "b1", {"product_id": "p1"}, is_bot=True),
        ],
    )


def run(client, raw: str):
    return client.query(expand(raw))


# --- every query: runs, and returns the panel's columns ---------------------------


@pytest.mark.parametrize(
    ("title", "raw", "series"), QUERIES, ids=[title for title, _, _ in QUERIES]
)
def test_query_runs_and_returns_the_panel_columns(db, title, raw, series):
    described = db.query(f"DESCRIBE TABLE ({expand(raw)})").result_rows
    names, types = [row[0] for row in described], [row[1] for row in described]
    assert names == EXPECTED_COLUMNS[title]
    if series:  # the plugin needs a DateTime first column to draw a time series
        assert names[0] == "time" and types[0].startswith("DateTime"), types[0]
    result = run(db, raw)
    assert result.result_rows, f"{title}: no rows on the seeded data"
    assert list(result.column_names) == EXPECTED_COLUMNS[title]


# --- what the key panels compute ------------------------------------------------------


def panel_sql(title: str) -> str:
    return next(raw for t, raw, _ in QUERIES if t == title)


def one(db, title: str):
    return run(db, panel_sql(title)).result_rows[0][0]


def test_overview_counts_human_sessions_of_the_selected_source_once(db):
    assert one(db, "Sessions") == 3  # not the bot, not "app", s2 once (FINAL)
    assert one(db, "Visitors") == 3
    assert one(db, "Conversion rate") == pytest.approx(1 / 3)
    assert one(db, "Bounce rate") == pytest.approx(1 / 3)
    assert one(db, "Revenue") == pytest.approx(50.0)
    assert one(db, "Average order value") == pytest.approx(50.0)


def test_cart_abandonment_is_over_sessions_with_a_cart(db):
    rows = run(db, panel_sql("Conversion, bounce and cart abandonment")).result_rows
    by_hour = {row[0].hour: row[1:] for row in rows}
    assert by_hour[10] == pytest.approx((0.5, 0.5, 0.0))  # s1 bounced, s2 bought its cart
    assert by_hour[11] == pytest.approx((0.0, 0.0, 1.0))  # s3 left its cart


def test_funnel_is_in_stage_order_without_bots(db):
    rows = run(db, panel_sql("Visitors by current stage")).result_rows
    assert rows == [("awareness", 1), ("consideration", 1), ("purchase", 1)]


def test_stage_flow_counts_each_transition_once(db):
    rows = run(db, panel_sql("Stage flow")).result_rows
    flows = {(r[0], r[1]): r[2] for r in rows}
    assert flows == {
        ("(new)", "awareness"): 2,
        ("awareness", "consideration"): 1,
        ("consideration", "decision"): 1,
        ("decision", "purchase"): 1,
    }


def test_top_products_count_views_carts_and_orders_once(db):
    rows = run(db, panel_sql("Top products: viewed, added, bought")).result_rows
    assert [r[:4] for r in rows] == [("p1", 2, 1, 1), ("p2", 1, 0, 0)]
    assert rows[0][4] == pytest.approx(0.5)


def test_source_variable_lists_sources(db):
    rows = run(db, panel_sql("variable source")).result_rows
    assert [r[0] for r in rows] == ["app", "web"]
