"""Schema migrations: numbered SQL files applied in order, their status in a table.

Files live in `<schemas_dir>/clickhouse/` as `NNNN_name.up.sql` and `NNNN_name.down.sql`.
A file may hold several statements, each ending with `;` at the end of a line (so
never end a comment line with `;`). Two placeholders are filled in:

* `{database}`: Settings.database (validated as a plain identifier);
* `{events_ttl}`: `TTL toDateTime(ts) + INTERVAL N DAY` from events_ttl_days, or
  nothing when it is 0. A later change of the setting is applied by `apply` with
  ALTER TABLE ... MODIFY/REMOVE TTL, so the migration text (and checksum) stays put.

`{database}.schema_migrations` is a log: one row per up (applied = 1) or down
(applied = 0); a version's state is its latest row. Re-running `apply` is a no-op.
Every statement uses IF [NOT] EXISTS, so a migration interrupted half-way is safe to
run again. The same DDL runs on chdb and on a ClickHouse server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.config import Settings

log = logging.getLogger(__name__)

FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STATEMENT_END_RE = re.compile(r";[ \t]*(?:\r?\n|$)")
TTL_RE = re.compile(r"TTL\s+toDateTime\(ts\)\s*\+\s*toIntervalDay\((\d+)\)")

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS {database}.schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(6, 'UTC'),
    checksum   String,
    applied    Bool
)
ENGINE = MergeTree
ORDER BY (version, applied_at)
"""


class MigrationError(RuntimeError):
    """The migration files or the recorded state are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up: str
    down: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    name: str
    applied_at: dt.datetime
    checksum: str
    applied: bool


@dataclass(frozen=True, slots=True)
class Status:
    version: int
    name: str
    applied: bool
    applied_at: dt.datetime | None
    modified: bool  # applied, but the up file changed since


def migrations_dir(settings: Settings) -> Path:
    return settings.schemas_dir / "clickhouse"


def discover(directory: Path) -> list[Migration]:
    """Every migration in `directory`, by version; each needs its up and down file."""
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.up|down.sql")
        version, name, direction = int(match[1]), match[2], match[3]
        entry = found.setdefault(version, {"name": name})
        if entry["name"] != name:
            raise MigrationError(f"version {version} has two names: {entry['name']}, {name}")
        entry[direction] = path.read_text()
    out = []
    for version in sorted(found):
        entry = found[version]
        for direction in ("up", "down"):
            if direction not in entry:
                raise MigrationError(f"{version:04d}_{entry['name']} has no .{direction}.sql")
        out.append(Migration(version, entry["name"], entry["up"], entry["down"]))
    return out


def database_name(settings: Settings) -> str:
    name = settings.database
    if not IDENTIFIER_RE.match(name):
        raise MigrationError(f"database name {name!r} must be a plain identifier")
    return name


def ttl_expression(days: int) -> str:
    return f"toDateTime(ts) + INTERVAL {days} DAY"


def ttl_clause(days: int) -> str:
    return f"TTL {ttl_expression(days)}" if days > 0 else ""


def render(sql: str, settings: Settings) -> list[str]:
    """The statements of one file, placeholders filled in, comment-only chunks dropped."""
    text = sql.replace("{database}", database_name(settings))
    text = text.replace("{events_ttl}", ttl_clause(settings.events_ttl_days))
    statements = []
    for chunk in STATEMENT_END_RE.split(text):
        code = "\n".join(
            line for line in chunk.splitlines() if not line.strip().startswith("--")
        ).strip()
        if code:
            statements.append(code)
    return statements


def _ensure_table(client, settings: Settings) -> None:
    database = database_name(settings)
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(MIGRATIONS_TABLE.replace("{database}", database))


def _state(client, settings: Settings) -> dict[int, Applied]:
    database = database_name(settings)
    result = client.query(
        f"""
        SELECT version, argMax(name, applied_at), max(applied_at),
               argMax(checksum, applied_at), argMax(applied, applied_at)
        FROM {database}.schema_migrations
        GROUP BY version
        """
    )
    return {
        row[0]: Applied(row[0], row[1], _utc(row[2]), row[3], bool(row[4]))
        for row in result.result_rows
    }


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _record(client, settings: Settings, m: Migration, applied: bool, previous: Applied | None):
    now = dt.datetime.now(dt.UTC)
    if previous is not None and now <= previous.applied_at:
        now = previous.applied_at + dt.timedelta(microseconds=1)  # the log stays ordered
    client.insert(
        f"{database_name(settings)}.schema_migrations",
        [[m.version, m.name, now, m.checksum, applied]],
        column_names=["version", "name", "applied_at", "checksum", "applied"],
        settings={"async_insert": 0},
    )


def _run(client, settings: Settings, sql: str) -> None:
    for statement in render(sql, settings):
        client.command(statement)


def apply(client, settings: Settings, to_version: int | None = None) -> list[str]:
    """Apply pending migrations in order (up to `to_version`); return their labels."""
    _ensure_table(client, settings)
    state = _state(client, settings)
    done: list[str] = []
    for m in discover(migrations_dir(settings)):
        if to_version is not None and m.version > to_version:
            break
        previous = state.get(m.version)
        if previous is not None and previous.applied:
            if previous.checksum != m.checksum:
                log.warning("migration %s changed since it was applied", m.label)
            continue
        log.info("applying migration %s", m.label)
        _run(client, settings, m.up)
        _record(client, settings, m, True, previous)
        done.append(m.label)
    sync_ttl(client, settings)
    return done


def rollback(client, settings: Settings, to_version: int) -> list[str]:
    """Run the down files of every applied migration above `to_version`, newest first."""
    _ensure_table(client, settings)
    state = _state(client, settings)
    done: list[str] = []
    for m in reversed(discover(migrations_dir(settings))):
        if m.version <= to_version:
            break
        previous = state.get(m.version)
        if previous is None or not previous.applied:
            continue
        log.info("rolling back migration %s", m.label)
        _run(client, settings, m.down)
        _record(client, settings, m, False, previous)
        done.append(m.label)
    return done


def status(client, settings: Settings) -> list[Status]:
    """Each migration file with whether it is applied, when, and whether it changed since."""
    _ensure_table(client, settings)
    state = _state(client, settings)
    out = []
    for m in discover(migrations_dir(settings)):
        s = state.get(m.version)
        applied = s is not None and s.applied
        out.append(
            Status(
                m.version,
                m.name,
                applied,
                s.applied_at if applied else None,
                applied and s.checksum != m.checksum,
            )
        )
    return out


def sync_ttl(client, settings: Settings) -> bool:
    """Make the events TTL match events_ttl_days; True when it changed anything."""
    database = database_name(settings)
    result = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'events'",
        parameters={"db": database},
    )
    if not result.result_rows:
        return False
    match = TTL_RE.search(result.result_rows[0][0])
    current = int(match[1]) if match else 0
    wanted = settings.events_ttl_days
    if current == wanted:
        return False
    if wanted:
        client.command(f"ALTER TABLE {database}.events MODIFY TTL {ttl_expression(wanted)}")
    else:
        client.command(f"ALTER TABLE {database}.events REMOVE TTL")
    log.info("events TTL changed from %d to %d days (0 = keep forever)", current, wanted)
    return True
