"""`clickstream query "SELECT ..."`: send SQL to the query API, print the answer as a table."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


class QueryError(RuntimeError):
    """The API refused the query or could not be reached; the message says why."""


def query(url: str, sql: str, admin_token: str = "", timeout: float = 60.0) -> dict[str, Any]:
    """POST `sql` to `<url>/api/v1/sql`; return {"columns": [...], "rows": [[...]]}."""
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if admin_token:
        headers["Authorization"] = f"Bearer {admin_token}"
    request = urllib.request.Request(
        url.rstrip("/") + "/api/v1/sql", data=sql.encode(), headers=headers, method="POST"
    )
    return call_api(request, url, timeout, QueryError)


def call_api(
    request: urllib.request.Request, url: str, timeout: float, error: type[Exception]
) -> dict[str, Any]:
    """The API's JSON answer; `error` with the API's reason (or why it is unreachable)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read()).get("error", exc.reason)
        except (orjson.JSONDecodeError, AttributeError):
            message = exc.reason
        raise error(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise error(f"cannot reach the query API at {url}: {exc}") from None


def render(answer: dict[str, Any]) -> Table:
    table = Table(show_lines=False)
    for name in answer["columns"]:
        table.add_column(str(name))
    for row in answer["rows"]:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    return table


def run_query(url: str, sql: str, admin_token: str = "", console: Console | None = None) -> None:
    """The CLI command: print the table, or the error and exit with status 1."""
    console = console or Console()
    try:
        answer = query(url, sql, admin_token)
    except QueryError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        raise SystemExit(1) from None
    console.print(render(answer))
    console.print(f"{len(answer['rows'])} row(s)", style="dim")
