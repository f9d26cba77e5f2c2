"""Migrations on the real engine: fresh apply, no-op re-run, up -> down -> up, N-1 -> N,
the TTL setting, and the tables matching what the sink writes."""

from __future__ import annotations

import shutil

import pytest

from stream.sink import migrate, rows

pytestmark = pytest.mark.integration

LABELS = [
    "0001_events",
    "0002_invalid_events",
    "0003_journey",
    "0004_journey_metrics",
    "0005_customers",
    "0006_processor_state",
    "0007_metric_increments",
    "0008_privacy",
]
TABLES = {
    "events",
    "invalid_events",
    "sessions",
    "stage_transitions",
    "triggers",
    "visitors",
    "customers",
    "processor_state",
    "suppressions",
    "erasures",
    "journey_metrics_1m",
    "journey_metrics_1h",
    "funnel_daily",
    "schema_migrations",
}


def tables(client, database: str) -> set[str]:
    result = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": database}
    )
    return {r[0] for r in result.result_rows}


def log_rows(client, database: str) -> int:
    return client.query(f"SELECT count() FROM {database}.schema_migrations").result_rows[0][0]


def test_fresh_apply_creates_everything_and_a_rerun_is_a_no_op(isolated_settings, ch_client):
    settings = isolated_settings()
    db = settings.database
    assert migrate.apply(ch_client, settings) == LABELS
    assert tables(ch_client, db) == TABLES
    assert [(s.version, s.applied, s.modified) for s in migrate.status(ch_client, settings)] == [
        (1, True, False),
        (2, True, False),
        (3, True, False),
        (4, True, False),
        (5, True, False),
        (6, True, False),
        (7, True, False),
        (8, True, False),
    ]
    assert log_rows(ch_client, db) == len(LABELS)
    assert migrate.apply(ch_client, settings) == []
    assert log_rows(ch_client, db) == len(LABELS)


def test_up_down_up(isolated_settings, ch_client):
    settings = isolated_settings()
    db = settings.database
    migrate.apply(ch_client, settings)
    assert migrate.rollback(ch_client, settings, 0) == LABELS[::-1]
    assert tables(ch_client, db) == {"schema_migrations"}
    assert not any(s.applied for s in migrate.status(ch_client, settings))
    assert migrate.apply(ch_client, settings) == LABELS
    assert tables(ch_client, db) == TABLES
    assert migrate.rollback(ch_client, settings, 2) == LABELS[:1:-1]
    assert tables(ch_client, db) == {"events", "invalid_events", "schema_migrations"}
    assert migrate.apply(ch_client, settings) == LABELS[2:]


def test_upgrade_from_the_previous_version_keeps_the_data(isolated_settings, ch_client):
    settings = isolated_settings()
    db = settings.database
    assert migrate.apply(ch_client, settings, to_version=3) == LABELS[:3]
    assert "journey_metrics_1m" not in tables(ch_client, db)
    ch_client.insert(
        f"{db}.events",
        [["m1", 1_767_225_600_000, "web"]],
        column_names=["message_id", "ts", "source"],
    )
    assert migrate.apply(ch_client, settings) == LABELS[3:]
    assert tables(ch_client, db) == TABLES
    assert ch_client.query(f"SELECT message_id FROM {db}.events").result_rows == [("m1",)]


def test_metric_rows_carry_over_as_increments(isolated_settings, ch_client):
    settings = isolated_settings()
    db = settings.database
    migrate.apply(ch_client, settings, to_version=6)
    columns = ["window_start", "source", "partition", "pageviews", "bounces", "version"]
    ch_client.insert(
        f"{db}.journey_metrics_1m", [[1_767_225_600, "web", 0, 5, 1, 3]], column_names=columns
    )
    migrate.apply(ch_client, settings)
    # A later increment, negative bounce included (an amended session).
    ch_client.insert(
        f"{db}.journey_metrics_1m", [[1_767_225_600, "web", 0, 2, -1, 1]], column_names=columns
    )
    got = ch_client.query(
        f"SELECT sum(pageviews), sum(bounces) FROM {db}.journey_metrics_1m FINAL"
    ).result_rows
    assert got == [(7, 0)]
    hourly = ch_client.query(f"SELECT pageviews FROM {db}.journey_metrics_1h").result_rows
    assert hourly == [(7,)]


def test_the_events_ttl_follows_the_setting(isolated_settings, ch_client):
    def engine(db):
        return ch_client.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'events'",
            parameters={"db": db},
        ).result_rows[0][0]

    settings = isolated_settings(CLICKSTREAM_EVENTS_TTL_DAYS="30")
    migrate.apply(ch_client, settings)
    assert "TTL toDateTime(ts) + toIntervalDay(30)" in engine(settings.database)
    unchanged = isolated_settings(
        CLICKSTREAM_DATABASE=settings.database, CLICKSTREAM_EVENTS_TTL_DAYS="0"
    )
    assert migrate.sync_ttl(ch_client, unchanged) is True
    assert "TTL" not in engine(settings.database)
    assert migrate.sync_ttl(ch_client, unchanged) is False


def test_a_changed_migration_file_shows_as_modified(isolated_settings, ch_client, tmp_path):
    shutil.copytree(migrate.migrations_dir(isolated_settings()), tmp_path / "clickhouse")
    settings = isolated_settings(CLICKSTREAM_SCHEMAS_DIR=str(tmp_path))
    migrate.apply(ch_client, settings)
    path = tmp_path / "clickhouse" / "0004_journey_metrics.up.sql"
    path.write_text(path.read_text() + "\n-- an edit after it was applied\n")
    modified = [s.modified for s in migrate.status(ch_client, settings)]
    assert modified == [label.startswith("0004") for label in LABELS]
    assert migrate.apply(ch_client, settings) == []


def test_the_tables_have_every_column_the_sink_writes(isolated_settings, ch_client):
    settings = isolated_settings()
    migrate.apply(ch_client, settings)
    for table in rows.TABLES:
        result = ch_client.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
            parameters={"db": settings.database, "t": table.name},
        )
        assert set(table.columns) <= {r[0] for r in result.result_rows}, table.name


def test_replayed_increments_collapse_and_later_ones_add_up(isolated_settings, ch_client):
    settings = isolated_settings()
    db = settings.database
    migrate.apply(ch_client, settings)
    window = {"window_start": 1_767_225_600, "source": "web", "campaign": "", "device_type": ""}
    columns = [*window, "visitor_type", "sessions", "revenue", "version"]
    first = [*window.values(), "new", 10, 5.0, 1]
    later = [*window.values(), "new", 2, 2.0, 2]  # the next increment of the row
    for row in (first, first, later):  # the first one replayed after a restart
        ch_client.insert(f"{db}.journey_metrics_1m", [row], column_names=columns)
    hourly = ch_client.query(f"SELECT sessions, revenue FROM {db}.journey_metrics_1h").result_rows
    assert hourly == [(12, 7.0)]
