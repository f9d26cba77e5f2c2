"""An erasure survives a restart of `clickstream run`: the embedded broker forgets its
log, the suppression list comes back from ClickHouse before any worker reads it, and
neither the restored processor state nor a late event brings the person back."""

from __future__ import annotations

import time
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
    pipeline = start_pipeline(data, **env)
    try:
        pipeline.post("/v1/batch", {"batch": [event(gone), event(stays), event(gone)]})
        pipeline.wait_for(
            "SELECT count() FROM clickstream.visitors FINAL"
            f" WHERE visitor_id IN ('{gone}', '{stays}')",
            [[2]],
        )
        erase(pipeline, gone)
    finally:
        pipeline.stop()
    pipeline = start_pipeline(data, **env)
    try:
        assert "suppression list re-seeded: 1" in pipeline.log_path.read_text(errors="replace")
        before = suppressed_count(pipeline)
        status, answer = pipeline.post("/v1/batch", {"batch": [event(gone), event(stays)]})
        assert status == 200 and answer["accepted"] == 2
        assert suppressed_count(pipeline) == before + 1
        pipeline.wait_for(
            f"SELECT count() FROM clickstream.events WHERE visitor_id = '{stays}'", [[2]]
        )
        time.sleep(2.0)
        assert rows_naming(pipeline, [gone]) == dict.fromkeys(ID_TABLES, 0)
        # The audit survived too, and the status of the erasure is still answered.
        rows = pipeline.sql("SELECT erasure_id, status FROM clickstream.erasures")
        assert [r[1] for r in rows] == ["complete"]
        status, answer = http("GET", f"{pipeline.api}/api/v1/erasures/{rows[0][0]}", headers=AUTH)
        assert status == 200 and answer["status"] == "complete", answer
    finally:
        pipeline.stop()
