"""An erasure survives a restart of `clickstream run`: the embedded broker forgets its
log, the suppression list comes back from ClickHouse before any worker reads it, and
neither the restored processor state nor a late event brings the person back. An
erasure the restart interrupted (the pipeline killed right after the DELETE) is
resumed at start: its rows are deleted and its audit row completed."""

from __future__ import annotations

import os
import signal
import time
import urllib.parse
import uuid

import pytest

from tests.integration.test_erasure import (
    AUTH,
    ID_TABLES,
    TOKEN,
    erase,
    event,
    rows_naming,
    suppressed_count,
)
from tests.support.pipeline import http, start_pipeline

pytestmark = pytest.mark.integration


def test_an_erasure_survives_a_restart(tmp_path):
    data = tmp_path / "restart"
    env = dict(CLICKSTREAM_ADMIN_TOKEN=TOKEN, CLICKSTREAM_PARTITIONS="2")
    run = uuid.uuid4().hex[:8]
    gone, stays = f"gone-{run}", f"stays-{run}"
    half_user, half_device = f"half-user-{run}", f"half-device-{run}"
    pipeline = start_pipeline(data, **env)
    try:
        pipeline.post(
            "/v1/batch",
            {"batch": [event(gone), event(stays), event(gone), event(half_device, half_user)]},
        )
        pipeline.wait_for(
            "SELECT count() FROM clickstream.visitors FINAL"
            f" WHERE visitor_id IN ('{gone}', '{stays}', '{half_device}')",
            [[3]],
        )
        erase(pipeline, gone)
        # The next erasure is interrupted: killed before the processor can acknowledge.
        quoted = urllib.parse.quote(half_user, safe="")
        status, half = http("DELETE", f"{pipeline.api}/api/v1/visitors/{quoted}", headers=AUTH)
        assert status == 202 and half["status"] == "pending", half
        assert pipeline.sql(
            "SELECT status, length(hashes) FROM clickstream.erasures"
            f" WHERE erasure_id = '{half['erasure_id']}'"
        ) == [["pending", 2]]
        os.killpg(pipeline.process.pid, signal.SIGKILL)
        pipeline.process.wait()
    finally:
        pipeline.stop()
    pipeline = start_pipeline(data, **env)
    try:
        assert "suppression list re-seeded: 3" in pipeline.log_path.read_text(errors="replace")
        # The interrupted erasure is answered across the restart, and completes.
        status, answer = http(
            "GET", f"{pipeline.api}/api/v1/erasures/{half['erasure_id']}", headers=AUTH
        )
        deadline = time.monotonic() + 90  # the restarted processor must start and ack
        while answer["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
            status, answer = http(
                "GET", f"{pipeline.api}/api/v1/erasures/{half['erasure_id']}", headers=AUTH
            )
        assert status == 200 and answer["status"] == "complete", (answer, pipeline.log_tail())
        assert answer["rows_removed"]["events"] >= 1, answer
        assert rows_naming(pipeline, [half_user, half_device]) == dict.fromkeys(ID_TABLES, 0)

        before = suppressed_count(pipeline)
        status, answer = pipeline.post("/v1/batch", {"batch": [event(gone), event(stays)]})
        assert status == 200 and answer["accepted"] == 2
        assert suppressed_count(pipeline) == before + 1
        pipeline.wait_for(
            f"SELECT count() FROM clickstream.events WHERE visitor_id = '{stays}'", [[2]]
        )
        time.sleep(2.0)
        assert rows_naming(pipeline, [gone]) == dict.fromkeys(ID_TABLES, 0)
        # The audit survived too, one final row per erasure, and statuses are answered.
        rows = pipeline.sql(
            "SELECT erasure_id, status FROM clickstream.erasures FINAL ORDER BY requested_at"
        )
        assert [r[1] for r in rows] == ["complete"] * 2, rows
        assert rows[1][0] == half["erasure_id"]
        status, answer = http("GET", f"{pipeline.api}/api/v1/erasures/{rows[0][0]}", headers=AUTH)
        assert status == 200 and answer["status"] == "complete", answer
    finally:
        pipeline.stop()
