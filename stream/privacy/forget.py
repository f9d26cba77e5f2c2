"""`clickstream forget ID...`: erase through the query API, wait until each erasure is
complete, print the rows removed per table."""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from stream.api.client import call_api

POLL_S = 0.25
PROGRESS_AFTER_S = 1.0


class ForgetError(RuntimeError):
    """The API refused the erasure or could not be reached; the message says why."""


def _call(method: str, url: str, token: str, timeout: float = 60.0) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    return call_api(request, url, timeout, ForgetError)


def forget(url: str, subject_id: str, token: str = "", timeout: float = 300.0, console=None):
    """Request the erasure of one id and wait for its end; the final status."""
    base = url.rstrip("/")
    quoted = urllib.parse.quote(subject_id, safe="")
    started = _call("DELETE", f"{base}/api/v1/visitors/{quoted}", token)
    status_url = base + started["status_url"]
    deadline = time.monotonic() + timeout
    begun = time.monotonic()
    progress = None
    status = started
    try:
        while status["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(POLL_S)
            status = _call("GET", status_url, token)
            if (
                progress is None
                and console is not None
                and time.monotonic() - begun > PROGRESS_AFTER_S
            ):
                progress = console.status("erasing: waiting for the processor and ClickHouse")
                progress.start()
    finally:
        if progress is not None:
            progress.stop()
    return status


def render(subject_id: str, status: dict[str, Any]) -> Table:
    table = Table(title=f"{subject_id}: {status['status']} in {status.get('seconds') or 0:.2f}s")
    table.add_column("table")
    table.add_column("rows removed", justify="right")
    for name, count in sorted((status.get("rows_removed") or {}).items()):
        table.add_row(name, f"{count:,}")
    return table


def run_forget(
    url: str, ids: tuple[str, ...], token: str = "", console: Console | None = None
) -> int:
    """The CLI command: the exit code (0 all complete, 1 otherwise)."""
    console = console or Console()
    errors = Console(stderr=True)
    code = 0
    for subject_id in ids:
        try:
            status = forget(url, subject_id, token, console=console)
        except ForgetError as exc:
            errors.print(f"[red]error:[/] {subject_id!r}: {exc}")
            code = 1
            continue
        console.print(render(subject_id, status))
        console.print(f"erasure {status['erasure_id']}", style="dim")
        if status["status"] != "complete":
            errors.print(f"[red]erasure of {subject_id!r} is {status['status']}[/]")
            code = 1
    return code
