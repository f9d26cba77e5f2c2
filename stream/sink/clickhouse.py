"""Opening ClickHouse: a server over HTTP(S), or the embedded chdb engine on the data dir.

chdb hosts one engine per process and the process that opens it owns it: the sink
and the query API run in that process. `connect` gives the process's client (cached
per URL); the SQL endpoint opens its own read-only one (`open_readonly`: readonly=1 is
a session setting on chdb, so it must not be shared). Both kinds are synchronous:
call them through asyncio.to_thread.

Every statement names its database (`{database}.table`), so the main client connects
to `default` and one engine (or server) can hold several databases (tests use one each).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect

from stream.config import Settings
from stream.sink import migrate

log = logging.getLogger(__name__)

# The operator's SQL endpoint: read-only, bounded. readonly comes last: once it is
# set, no setting can change, the query's own SETTINGS clause included.
READONLY_SETTINGS = {
    "max_execution_time": 30,
    "max_result_rows": 10_000,
    "result_overflow_mode": "break",
    "readonly": 1,
}

_clients: dict[str, Any] = {}
_lock = threading.Lock()


def is_chdb(url: str) -> bool:
    return url.startswith("chdb:")


def open_client(url: str, settings: dict[str, Any] | None = None, database: str | None = None):
    """A new client for `url` (not cached), on `database` (default: `default`)."""
    if is_chdb(url):
        path = urlsplit(url).path
        if path and path not in ("memory", ":memory:"):
            Path(path).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=url, database=database, settings=settings or {})
    return clickhouse_connect.get_client(
        dsn=url,
        database=database or "default",
        settings=settings or {},
        connect_timeout=5,
        send_receive_timeout=60,
        autogenerate_session_id=False,  # one client is used from several threads
    )


def connect(settings: Settings):
    """This process's client for settings.clickhouse_url (cached)."""
    key = settings.clickhouse_url
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = open_client(key)
        return client


def open_readonly(settings: Settings):
    """A new read-only client for the operator's SQL: readonly=1, time and row limits,
    Settings.database as its current database (which must exist)."""
    return open_client(settings.clickhouse_url, READONLY_SETTINGS, settings.database)


def close_all() -> None:
    with _lock:
        for client in _clients.values():
            try:
                client.close()
            except Exception:  # closing is best effort
                log.debug("closing a ClickHouse client failed", exc_info=True)
        _clients.clear()


def create_database_and_migrate(settings: Settings) -> list[str]:
    """Create the database and apply pending migrations; return the ones applied."""
    applied = migrate.apply(connect(settings), settings)
    if applied:
        log.info("schema migrations applied", extra={"migrations": applied})
    return applied
