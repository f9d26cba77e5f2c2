"""The query API on the real engine: exact figures on a known data set (with replayed and
superseded rows that must not count), paging, refusals of injection attempts, and the
SQL endpoint's read-only and loopback rules."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from rich.console import Console

from stream import config
from stream.api import build_app
from stream.api.app import read_only_statement, single_statement, sql_allowed
from stream.api.client import QueryError, query, render
from stream.sink import migrate

pytestmark = pytest.mark.integration

DAY_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FROM, TO = "2026-01-01", "2026-01-02T00:00:00Z"


def at(hour: int, minute: int = 0) -> int:
    return DAY_MS + (hour * 60 + minute) * 60_000


def insert(client, table: str, records: list[dict]) -> None:
    names = list(records[0])
    client.insert(table, [[r[n] for n in names] for r in records], column_names=names)


def session(sid, visitor, hour, source="web", **figures) -> dict:
    return {
        "session_id": sid,
        "visitor_id": visitor,
        "source": source,
        "started_at": at(hour),
        "ended_at": at(hour) + int(figures.get("duration_s", 0) * 1000),
        "duration_s": 0.0,
        "pageviews": 0,
        "bounce": False,
        "is_bot": False,
        "cart_items": 0,
        "cart_value": 0.0,
        "orders": 0,
        "revenue": 0.0,
        "closed": True,
        "version": 1,
        **figures,
    }


def transition(key, visitor, from_stage, to_stage, ts, source="web") -> dict:
    return {
        "idempotency_key": key,
        "visitor_id": visitor,
        "source": source,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "ts": ts,
        "session_id": "s1" if visitor == "v1" else "",
    }


def visitor(vid, stage, version, source="web") -> dict:
    return {
        "visitor_id": vid,
        "source": source,
        "first_seen": DAY_MS,
        "stage": stage,
        "version": version,
    }


def seed(client, db: str) -> None:
    s1_first = session("s1", "v1", 10, duration_s=120.0, cart_items=2, pageviews=3)
    insert(
        client,
        f"{db}.sessions",
        [
            s1_first,
            s1_first,  # replayed
            {**s1_first, "orders": 1, "revenue": 50.0, "version": 2},
            session("s2", "v2", 11, duration_s=30.0, bounce=True, cart_items=1, pageviews=1),
            # open: its bounce flag is provisional (one pageview so far)
            session("s3", "v3", 12, bounce=True, closed=False, pageviews=1),
            session(
                "s4", "v1", 13, duration_s=300.0, cart_items=3, orders=2, revenue=70.0, pageviews=5
            ),
            session("s5", "v4", 14, source="app", orders=5, revenue=999.0),
            # bots (source app, so the web figures of the other tests stay as they are)
            session(
                "s6",
                "b1",
                15,
                source="app",
                is_bot=True,
                bounce=True,
                duration_s=60.0,
                cart_items=1,
                orders=1,
                revenue=1.0,
                pageviews=1,
            ),
            session("s7", "b2", 16, source="app", is_bot=True, bounce=True, closed=False),
        ],
    )
    insert(
        client,
        f"{db}.stage_transitions",
        [
            transition("k1", "v1", "", "awareness", at(10)),
            transition("k2", "v1", "awareness", "consideration", at(10, 5)),
            transition("k2", "v1", "awareness", "consideration", at(10, 5)),  # replayed
            transition("k3", "v1", "consideration", "decision", at(10, 7)),
            transition("k4", "v1", "decision", "purchase", at(10, 9)),
            transition("k5", "v2", "", "awareness", at(11)),
            transition("k6", "v2", "awareness", "consideration", at(11, 1)),
            transition("k7", "v3", "", "awareness", at(12)),
            transition("k8", "v4", "", "awareness", at(14), source="app"),
            transition("k9", "v5", "", "awareness", DAY_MS - 86_400_000),  # before the window
        ],
    )
    insert(
        client,
        f"{db}.visitors",
        [
            visitor("v1", "consideration", 1),
            visitor("v1", "purchase", 3),
            visitor("v1", "decision", 2),  # an older version arriving late
            visitor("v2", "consideration", 1),
            visitor("v3", "awareness", 1),
            visitor("v4", "awareness", 1, source="app"),
        ],
    )


@pytest.fixture(scope="module")
def dataset(ch_client, chdb_url):
    settings = config.load(
        {
            "CLICKHOUSE_DSN": chdb_url,
            "CLICKSTREAM_DATABASE": "api_dataset",
            "CLICKSTREAM_ADMIN_TOKEN": "s3cret-token",
        }
    )
    ch_client.command("DROP DATABASE IF EXISTS api_dataset")
    migrate.apply(ch_client, settings)
    seed(ch_client, settings.database)
    return settings


@pytest.fixture
async def api(dataset, ch_client):
    async with TestClient(TestServer(build_app(dataset, ch_client))) as client:
        yield client


async def get(api, path: str, status: int = 200, **query):
    response = await api.get(path, params=query)
    body = await response.json()
    assert response.status == status, body
    return body


async def test_funnel_counts_each_visitor_once_at_the_furthest_stage(api):
    body = await get(api, "/api/v1/funnel", **{"from": FROM, "to": TO, "source": "web"})
    figures = {s["stage"]: (s["visitors"], s["entered"], s["conversion"]) for s in body["stages"]}
    assert figures == {
        "awareness": (3, 3, None),
        "consideration": (2, 2, pytest.approx(2 / 3)),
        "decision": (1, 1, 0.5),
        "purchase": (1, 1, 1.0),
        "retention": (0, 0, 0.0),
        "advocacy": (0, 0, None),
    }
    assert body["overall_conversion"] == pytest.approx(1 / 3)
    assert body["from"] == "2026-01-01T00:00:00Z"
    everyone = await get(api, "/api/v1/funnel", **{"from": FROM, "to": TO})
    assert everyone["stages"][0]["visitors"] == 4


async def test_stages_read_the_latest_visitor_version(api):
    body = await get(api, "/api/v1/stages", source="web")
    assert body["stages"] == [
        {"stage": "awareness", "visitors": 1},
        {"stage": "consideration", "visitors": 1},
        {"stage": "purchase", "visitors": 1},
    ]
    assert (await get(api, "/api/v1/stages"))["total"] == 4


async def test_sessions_are_paged_newest_first(api):
    first = await get(api, "/api/v1/sessions", source="web", limit="2")
    second = await get(api, "/api/v1/sessions", source="web", limit="2", offset="2")
    assert first["total"] == 4
    assert [s["session_id"] for s in first["sessions"]] == ["s4", "s3"]
    assert [s["session_id"] for s in second["sessions"]] == ["s2", "s1"]
    s1 = second["sessions"][1]
    assert (s1["orders"], s1["revenue"], s1["version"]) == (1, 50.0, 2)
    assert s1["started_at"] == "2026-01-01T10:00:00Z"


async def test_one_visitor_journey(api):
    body = await get(api, "/api/v1/visitors/v1")
    assert body["visitor"]["stage"] == "purchase"
    assert [s["session_id"] for s in body["sessions"]] == ["s1", "s4"]
    assert [t["idempotency_key"] for t in body["transitions"]] == ["k1", "k2", "k3", "k4"]
    await get(api, "/api/v1/visitors/nobody", status=404)


async def test_summary_rates_are_exact(api):
    # web, bots none: s1 (closed, 120 s, cart, 1 order, 50.0), s2 (closed, 30 s, bounce,
    # cart left), s3 (open, provisional bounce), s4 (closed, 300 s, cart, 2 orders, 70.0).
    body = await get(api, "/api/v1/metrics/summary", **{"from": FROM, "to": TO, "source": "web"})
    assert (body["sessions"], body["visitors"], body["converted_sessions"]) == (4, 3, 2)
    assert body["conversion_rate"] == 0.5  # s1, s4 of the 4 sessions
    # bounce and duration over the closed sessions s1, s2, s4: s3 may not bounce yet
    assert body["bounces"] == 1
    assert body["bounce_rate"] == pytest.approx(1 / 3)
    assert body["avg_session_duration_s"] == 150.0  # (120 + 30 + 300) / 3
    assert (body["carts"], body["abandoned_carts"]) == (3, 1)  # s1, s2, s4; s2 left
    assert body["cart_abandonment_rate"] == pytest.approx(1 / 3)
    assert (body["orders"], body["revenue"], body["average_order_value"]) == (3, 120.0, 40.0)
    assert (body["refunds"], body["pageviews"]) == (0.0, 10)  # 3 + 1 + 1 + 5
    empty = await get(api, "/api/v1/metrics/summary", **{"from": "2020-01-01", "to": "2020-01-02"})
    assert empty["sessions"] == 0 and empty["conversion_rate"] is None
    assert empty["bounce_rate"] is None and empty["avg_session_duration_s"] is None


async def test_summary_leaves_bots_out(api):
    # all sources: the web sessions above and s5 (app, closed, 0 s, 5 orders, 999.0);
    # the bots s6 (closed, bounce, 60 s, cart, 1 order) and s7 (open) do not count.
    body = await get(api, "/api/v1/metrics/summary", **{"from": FROM, "to": TO})
    assert (body["sessions"], body["visitors"], body["converted_sessions"]) == (5, 4, 3)
    assert body["conversion_rate"] == pytest.approx(3 / 5)
    assert body["bounce_rate"] == pytest.approx(1 / 4)  # s2 of s1, s2, s4, s5
    assert body["avg_session_duration_s"] == 112.5  # (120 + 30 + 300 + 0) / 4
    assert (body["carts"], body["abandoned_carts"]) == (4, 1)  # s1, s2, s4, s5; s2 left
    assert (body["orders"], body["revenue"]) == (8, 1119.0)  # 1 + 2 + 5, 50 + 70 + 999
    assert body["average_order_value"] == pytest.approx(1119.0 / 8)


async def test_the_page_summary_is_the_api_summary_and_open_sessions(api):
    for window in ({"from": FROM, "to": TO, "source": "web"}, {"from": FROM, "to": TO}):
        figures = await get(api, "/api/v1/metrics/summary", **window)
        page = await get(api, "/api/v1/page/summary", **window)
        assert page.pop("active_sessions") == 1  # s3; s7 is a bot's
        assert page == figures


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/sessions", {"source": "x' OR 1=1"}),
        ("/api/v1/stages", {"source": "'; DROP TABLE visitors; --"}),
        ("/api/v1/funnel", {"from": "2026-01-01'; DROP TABLE stage_transitions; --"}),
        ("/api/v1/metrics/summary", {"to": "yesterday"}),
        ("/api/v1/funnel", {"from": "2026-01-02", "to": "2026-01-01"}),
        ("/api/v1/sessions", {"limit": "0"}),
        ("/api/v1/sessions", {"limit": "1001"}),
        ("/api/v1/sessions", {"limit": "10; DROP TABLE sessions"}),
        ("/api/v1/sessions", {"offset": "-1"}),
    ],
)
async def test_bad_parameters_are_refused(api, path, query):
    body = await get(api, path, status=400, **query)
    assert set(body) == {"error"} and body["error"]


async def test_a_quote_in_a_visitor_id_is_just_text(api):
    await get(api, "/api/v1/visitors/" + quote("x' OR '1'='1", safe=""), status=404)


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE visitors",
        "/* hi */ DROP TABLE visitors",
        "INSERT INTO visitors (visitor_id) VALUES ('x')",
        "SET readonly = 0",
        "ALTER TABLE sessions DELETE WHERE 1",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT 1; DROP TABLE visitors",
        "CREATE TABLE x (a Int8) ENGINE = Memory",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    ],
)
async def test_the_sql_endpoint_refuses_anything_but_reading(api, ch_client, dataset, statement):
    response = await api.post("/api/v1/sql", data=statement)
    body = await response.json()
    assert response.status in (400, 403), body
    assert set(body) == {"error"}
    count = ch_client.query(f"SELECT count() FROM {dataset.database}.visitors FINAL").result_rows
    assert count == [(4,)]


async def test_the_sql_endpoint_answers_columns_and_rows(api):
    query = "SELECT stage, count() AS n FROM visitors FINAL GROUP BY stage ORDER BY stage"
    by_get = await get(api, "/api/v1/sql", query=query)
    response = await api.post("/api/v1/sql", data=query + ";")
    assert response.status == 200
    assert by_get == await response.json()
    assert by_get == {
        "columns": ["stage", "n"],
        "rows": [["awareness", 2], ["consideration", 1], ["purchase", 1]],
    }
    answer = await get(api, "/api/v1/sql", query="SELECT started_at FROM sessions WHERE 0")
    assert answer == {"columns": ["started_at"], "rows": []}
    bad = await get(api, "/api/v1/sql", status=400, query="SELECT nope FROM visitors")
    assert "nope" in bad["error"] and "Stack trace" not in bad["error"]
    await get(api, "/api/v1/sql", status=400)


def test_the_sql_endpoint_takes_loopback_or_the_admin_token():
    assert sql_allowed("127.0.0.1", None, "")
    assert sql_allowed("::1", None, "")
    assert not sql_allowed("203.0.113.9", None, "")
    assert not sql_allowed("203.0.113.9", "Bearer anything", "")  # no token configured
    assert not sql_allowed("203.0.113.9", "Bearer wrong", "s3cret-token")
    assert not sql_allowed("203.0.113.9", "Basic s3cret-token", "s3cret-token")
    assert sql_allowed("203.0.113.9", "Bearer s3cret-token", "s3cret-token")
    assert not sql_allowed(None, None, "s3cret-token")
    assert not sql_allowed("127.0.0.1", None, "", forwarded=True)  # behind a local proxy
    assert sql_allowed("127.0.0.1", "Bearer s3cret-token", "s3cret-token", forwarded=True)


async def test_a_proxied_request_needs_the_token(api):
    headers = {"X-Forwarded-For": "203.0.113.9"}
    response = await api.get("/api/v1/sql", params={"query": "SELECT 1"}, headers=headers)
    assert response.status == 403
    headers["Authorization"] = "Bearer s3cret-token"
    response = await api.get("/api/v1/sql", params={"query": "SELECT 1"}, headers=headers)
    assert response.status == 200


def test_one_statement_per_request():
    assert single_statement("SELECT ';' AS semicolon")
    assert single_statement("SELECT 1 -- no; more\n")
    assert single_statement("SELECT `a;b` FROM t /* ; */")
    assert not single_statement("SELECT 1; SELECT 2")
    assert not single_statement("SELECT 'it\\'s'; DROP TABLE t")
    assert not single_statement('SELECT "x"; DROP TABLE t')


def test_the_first_gate_reads_the_first_keyword():
    assert read_only_statement("-- note\n  select 1")
    assert read_only_statement("/* a */ WITH x AS (SELECT 1) SELECT * FROM x")
    assert not read_only_statement("/* SELECT */ DROP TABLE t")
    assert not read_only_statement("")


async def test_health_metrics_and_errors_are_json(api):
    assert await get(api, "/healthz") == {"status": "ok"}
    response = await api.get("/metrics")
    assert response.status == 200
    assert "clickstream_api_requests_total" in await response.text()
    assert set(await get(api, "/api/v1/nothing-here", status=404)) == {"error"}
    response = await api.delete("/api/v1/funnel")
    assert response.status == 405 and set(await response.json()) == {"error"}


async def test_concurrent_requests(api):
    paths = ["/api/v1/stages", "/api/v1/sessions", "/api/v1/sql?query=SELECT%201"] * 10
    responses = await asyncio.gather(*(api.get(p) for p in paths))
    assert [r.status for r in responses] == [200] * len(paths)


async def test_the_cli_client_prints_a_table(api):
    base = str(api.make_url("")).rstrip("/")
    answer = await asyncio.to_thread(query, base, "SELECT stage FROM visitors FINAL ORDER BY 1")
    assert answer["rows"] == [["awareness"], ["awareness"], ["consideration"], ["purchase"]]
    console = Console(record=True, width=60)
    console.print(render(answer))
    assert "consideration" in console.export_text()
    with pytest.raises(QueryError, match="403"):
        await asyncio.to_thread(query, base, "DROP TABLE visitors")
