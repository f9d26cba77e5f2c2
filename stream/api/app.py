"""The query API (aiohttp), served by the sink's process, which owns the embedded engine.

    GET  /api/v1/funnel?from=&to=&source=      visitors per stage, step conversion
    GET  /api/v1/stages?source=                current stage distribution
    GET  /api/v1/sessions?limit=&offset=&source=
    GET  /api/v1/visitors/{id}                 one visitor's journey
    DELETE /api/v1/visitors/{id}               erase a visitor or person (erasure.py)
    GET  /api/v1/erasures/{id}                 an erasure's progress (erasure.py)
    GET  /api/v1/metrics/summary?from=&to=&source=
    GET|POST /api/v1/sql                       read-only SQL (?query= or the body)
    GET  /healthz                              200 when ClickHouse answers SELECT 1
    GET  /metrics                              Prometheus

Every answer is JSON; every failure is `{"error": "..."}` with a status (400 bad
parameter, 401/403 refused, 404, 503 ClickHouse unavailable, 500), never a traceback.
ClickHouse calls run in threads (the client is synchronous).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import hmac
import ipaddress
import logging
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from stream import telemetry
from stream.api import params, queries
from stream.api.params import ParamError
from stream.config import Settings
from stream.sink.clickhouse import open_readonly

log = logging.getLogger(__name__)


class ReadonlyClient:
    """The SQL endpoint's client, opened on first use unless given; `reset` drops it (after
    an unexpected failure its connection state is not trusted)."""

    def __init__(self, settings: Settings, client=None):
        self.settings = settings
        self.client = client
        self._owned = client is None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self.client is None:
                self.client = open_readonly(self.settings)
                self._owned = True
            return self.client

    def reset(self) -> None:
        with self._lock:
            client, self.client = self.client, None
        if client is not None and self._owned:
            with contextlib.suppress(Exception):
                client.close()


CLIENT = web.AppKey("client", object)
READONLY_CLIENT = web.AppKey("readonly_client", ReadonlyClient)
SETTINGS = web.AppKey("settings", Settings)

MAX_SQL_BYTES = 100_000
QUERY_TIMEOUT_S = 60.0
READ_ONLY_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
REFUSED_CODES = frozenset({164, 497})  # READONLY, ACCESS_DENIED
LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)


# --- JSON -------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(data: Any) -> bytes:
    """JSON for a response: naive datetimes (ClickHouse's UTC) get their Z."""
    return orjson.dumps(
        data,
        default=_default,
        option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS,
    )


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


# --- access to the SQL endpoint ------------------------------------------------------------


def sql_allowed(
    remote: str | None, authorization: str | None, admin_token: str, forwarded: bool = False
) -> bool:
    """Loopback callers may use the SQL endpoint; others need `Bearer <admin token>`, and
    only when a token is configured. A request that came through a proxy (Forwarded /
    X-Forwarded-For) is not a loopback caller, whatever its socket says."""
    if remote and not forwarded:
        try:
            if ipaddress.ip_address(remote.split("%")[0]).is_loopback:
                return True
        except ValueError:
            pass
    if not admin_token or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), admin_token.encode()
    )


def single_statement(sql: str) -> bool:
    """No `;` outside quotes and comments. Conservative: where this lexer and ClickHouse's
    could disagree, it sees more code, so it refuses rather than lets a second statement by."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            i = j + 1  # a doubled quote reads as two strings: the same for this purpose
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == ";":
            return False
        else:
            i += 1
    return True


def read_only_statement(sql: str) -> bool:
    """A cheap first gate (ClickHouse's readonly=1 is the real one): the statement starts
    with a reading keyword."""
    body = LEADING_COMMENTS.sub("", sql, count=1)
    keyword = re.match(r"[A-Za-z]+", body)
    return bool(keyword) and keyword[0].upper() in READ_ONLY_KEYWORDS


# --- plumbing ---------------------------------------------------------------------------------


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), QUERY_TIMEOUT_S)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _clickhouse_message(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    for marker in ("Stack trace", "(version "):
        cut = message.find(marker)
        if cut > 0:
            message = message[:cut]
    return message.strip(" .:")[:1000]


@web.middleware
async def errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ParamError as exc:
        response = error(400, str(exc))
    except web.HTTPException as exc:
        response = error(exc.status, exc.reason)
    except (OperationalError, OSError) as exc:  # OSError: refused, reset, timed out
        log.warning("ClickHouse unavailable for %s: %s", request.path, exc)
        response = error(503, "ClickHouse is unavailable")
    except DatabaseError as exc:
        log.error("query failed for %s: %s", request.path, _clickhouse_message(exc))
        response = error(500, "query failed")
    except Exception:
        log.exception("unhandled error for %s", request.path)
        response = error(500, "internal error")
    telemetry.API_REQUESTS.labels(_route_name(request), str(response.status)).inc()
    return response


def _database(request: web.Request) -> str:
    return request.app[SETTINGS].database


# --- handlers ---------------------------------------------------------------------------------


async def funnel(request: web.Request) -> web.Response:
    window = params.time_range(request.query)
    source = params.source(request.query)
    data = await _call(queries.funnel, request.app[CLIENT], _database(request), window, source)
    return json_response(data)


async def stages(request: web.Request) -> web.Response:
    source = params.source(request.query)
    data = await _call(queries.stages, request.app[CLIENT], _database(request), source)
    return json_response(data)


async def sessions(request: web.Request) -> web.Response:
    source = params.source(request.query)
    limit = params.integer(request.query, "limit", 50, 1, 1000)
    offset = params.integer(request.query, "offset", 0, 0, 1_000_000)
    data = await _call(
        queries.sessions, request.app[CLIENT], _database(request), source, limit, offset
    )
    return json_response(data)


async def visitor(request: web.Request) -> web.Response:
    visitor_id = params.identifier(request.match_info["id"], "visitor id")
    data = await _call(queries.visitor, request.app[CLIENT], _database(request), visitor_id)
    if data is None:
        return error(404, "no such visitor")
    return json_response(data)


async def summary(request: web.Request) -> web.Response:
    window = params.time_range(request.query)
    source = params.source(request.query)
    data = await _call(queries.summary, request.app[CLIENT], _database(request), window, source)
    return json_response(data)


async def sql(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    headers = request.headers
    forwarded = "Forwarded" in headers or "X-Forwarded-For" in headers
    if not sql_allowed(
        request.remote, headers.get("Authorization"), settings.admin_token, forwarded
    ):
        return error(403, "the SQL endpoint takes loopback callers or an admin bearer token")
    if request.method == "POST":
        if (request.content_length or 0) > MAX_SQL_BYTES:
            return error(413, f"the query is longer than {MAX_SQL_BYTES} bytes")
        text = (await request.read())[: MAX_SQL_BYTES + 1].decode("utf-8", "replace")
    else:
        text = request.query.get("query", "")
    text = text.strip().rstrip(";").strip()
    if not text:
        return error(400, "no query: pass ?query= or the SQL as the request body")
    if len(text) > MAX_SQL_BYTES:
        return error(413, f"the query is longer than {MAX_SQL_BYTES} bytes")
    if not single_statement(text):
        return error(400, "one statement per request")
    if not read_only_statement(text):
        return error(403, "read-only queries only (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS)")
    readonly = request.app[READONLY_CLIENT]
    try:
        client = await asyncio.to_thread(readonly.get)
        data = await _call(queries.run_sql, client, text)
    except OperationalError:
        raise
    except DatabaseError as exc:
        status = 403 if getattr(exc, "code", None) in REFUSED_CODES else 400
        return error(status, _clickhouse_message(exc))
    except Exception:
        readonly.reset()
        raise
    return json_response(data)


async def healthz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(asyncio.to_thread(queries.ping, request.app[CLIENT]), 5.0)
    except Exception as exc:
        return json_response(
            {"status": "unavailable", "error": _clickhouse_message(exc) or type(exc).__name__},
            status=503,
        )
    return json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = telemetry.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def build_app(settings: Settings, client, readonly_client=None, erasures=None) -> web.Application:
    """The API on `client`; the SQL endpoint uses `readonly_client` (by default this
    process's read-only client, opened on first use); `erasures` serves erasure
    (stream/privacy/erase.py; without it the erasure endpoints answer 503)."""
    app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_SQL_BYTES * 2)
    app[SETTINGS] = settings
    app[CLIENT] = client
    app[READONLY_CLIENT] = ReadonlyClient(settings, readonly_client)
    app.router.add_get("/api/v1/funnel", funnel)
    app.router.add_get("/api/v1/stages", stages)
    app.router.add_get("/api/v1/sessions", sessions)
    app.router.add_get("/api/v1/visitors/{id}", visitor)
    app.router.add_get("/api/v1/metrics/summary", summary)
    app.router.add_route("GET", "/api/v1/sql", sql)
    app.router.add_route("POST", "/api/v1/sql", sql)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    from stream.api import erasure, page  # imported here: both read this module's helpers

    page.add_routes(app)
    erasure.add_routes(app, erasures)
    return app
