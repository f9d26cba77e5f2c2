"""The migration files themselves: complete, ordered, idempotent DDL, templated database."""

from __future__ import annotations

import re

import pytest

from stream import config
from stream.sink import migrate

pytestmark = pytest.mark.unit

SETTINGS = config.load({"CLICKSTREAM_DATABASE": "analytics"})


def test_every_version_has_up_and_down_in_order():
    found = migrate.discover(migrate.migrations_dir(SETTINGS))
    assert [m.label for m in found] == [
        "0001_events",
        "0002_invalid_events",
        "0003_journey",
        "0004_journey_metrics",
        "0005_customers",
        "0006_processor_state",
        "0007_metric_increments",
        "0008_privacy",
    ]


def test_statements_are_idempotent_and_name_their_database():
    for m in migrate.discover(migrate.migrations_dir(SETTINGS)):
        # A migration that reshapes a table also renames, moves the rows and drops.
        reshape = ("CREATE", "DROP", "RENAME", "INSERT")
        for sql, verbs in ((m.up, ("CREATE", *reshape)), (m.down, ("DROP", *reshape))):
            statements = migrate.render(sql, SETTINGS)
            assert statements, m.label
            for statement in statements:
                lines = [line for line in statement.splitlines() if not line.startswith("--")]
                verb = lines[0].split()[0]
                assert verb in verbs, statement
                if verb == "INSERT":
                    assert "INSERT INTO analytics." in statement, statement
                else:
                    assert re.search(r"\bIF (NOT )?EXISTS analytics\.", statement), statement
                assert "{" not in statement, statement


def test_the_ttl_placeholder():
    up = migrate.discover(migrate.migrations_dir(SETTINGS))[0].up
    assert "TTL" not in migrate.render(up, SETTINGS)[0]
    with_ttl = config.load({"CLICKSTREAM_EVENTS_TTL_DAYS": "90"})
    assert "TTL toDateTime(ts) + INTERVAL 90 DAY" in migrate.render(up, with_ttl)[0]


def test_a_bad_database_name_is_refused():
    unsafe = config.load({"CLICKHOUSE_DSN": "http://u:p@host:8123/x;drop"})
    with pytest.raises(migrate.MigrationError):
        migrate.render("SELECT 1 FROM {database}.t", unsafe)


def test_checksums_follow_the_up_file(tmp_path):
    (tmp_path / "0001_a.up.sql").write_text("CREATE TABLE IF NOT EXISTS {database}.a (x Int8);")
    (tmp_path / "0001_a.down.sql").write_text("DROP TABLE IF EXISTS {database}.a;")
    before = migrate.discover(tmp_path)[0].checksum
    (tmp_path / "0001_a.down.sql").write_text("DROP TABLE IF EXISTS {database}.a SYNC;")
    assert migrate.discover(tmp_path)[0].checksum == before
    (tmp_path / "0001_a.up.sql").write_text("CREATE TABLE IF NOT EXISTS {database}.a (x Int16);")
    assert migrate.discover(tmp_path)[0].checksum != before


def test_a_missing_down_file_is_an_error(tmp_path):
    (tmp_path / "0001_a.up.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="no .down.sql"):
        migrate.discover(tmp_path)
