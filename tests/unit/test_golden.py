"""Golden journeys (tests/golden/*.json): expected sessions, stage changes and triggers.

Every script is also checked for what must hold of any run: each record validates
against its topic schema, a second run gives identical records, a run whose state
goes through encode/decode between steps gives identical records, and session
versions grow strictly.
"""

from __future__ import annotations

from pathlib import Path

import fastjsonschema
import orjson
import pytest

from stream.config import REPO_ROOT
from stream.journey import StageMachine
from stream.journey.records import visitor_snapshot
from stream.sessionize.ids import session_id
from tests.golden.script import TIME_KEYS, Run, load, run, scripts, to_ms

pytestmark = pytest.mark.unit

SCHEMAS = {
    kind: fastjsonschema.compile(
        orjson.loads((REPO_ROOT / "schemas/topics" / f"{kind}.v1.json").read_bytes())
    )
    for kind in ("stage_change", "session", "trigger", "visitor")
}
MACHINE = StageMachine.load()
SCRIPTS = scripts()


def _expected(fields: dict, day: str, visitor_id: str) -> dict:
    """Times as ms; "session_id_from": t as the session id derived from t."""
    out = {}
    for key, value in fields.items():
        if key == "session_id_from":
            out["session_id"] = session_id(visitor_id, to_ms(value, day))
        elif key in TIME_KEYS and isinstance(value, str):
            out[key] = to_ms(value, day)
        else:
            out[key] = value
    return out


def _assert_subset(actual: dict, expected: dict, what: str) -> None:
    got = {k: actual.get(k, "<missing>") for k in expected}
    assert got == expected, f"{what}: {got} != {expected}"


def _check(script: dict, result: Run) -> None:
    day = script.get("day", "2024-03-01")
    expect = script["expect"]

    if "sessions" in expect:
        finals = result.final_sessions()
        assert len(finals) == len(expect["sessions"]), [s["session_id"] for s in finals]
        for i, (got, want) in enumerate(zip(finals, expect["sessions"], strict=True)):
            want = _expected(want, day, want.get("visitor_id", got["visitor_id"]))
            _assert_subset(got, want, f"session {i}")

    if "stage_changes" in expect:
        changes = result.stage_changes
        assert [f"{c['from_stage']}->{c['to_stage']}" for c in changes] == [
            w if isinstance(w, str) else w["change"] for w in expect["stage_changes"]
        ]
        for got, want in zip(changes, expect["stage_changes"], strict=True):
            if isinstance(want, dict):
                fields = {k: v for k, v in want.items() if k != "change"}
                _assert_subset(got, _expected(fields, day, got["visitor_id"]), "stage change")

    if "stage_amends" in expect:
        amends = [r for o in result.outcomes for r in o.stage_amends]
        assert [f"{c['from_stage']}->{c['to_stage']}" for c in amends] == expect["stage_amends"]
        keys = {c["idempotency_key"] for c in result.stage_changes}
        assert all(c["idempotency_key"] in keys for c in amends), "an amend replaces a change"

    if "triggers" in expect:
        triggers = result.triggers
        assert [t["trigger"] for t in triggers] == [w["trigger"] for w in expect["triggers"]]
        for got, want in zip(triggers, expect["triggers"], strict=True):
            _assert_subset(got, _expected(want, day, got["visitor_id"]), want["trigger"])

    if "late" in expect:
        assert sum(o.late for o in result.outcomes) == expect["late"]
    if "noops" in expect:
        noops = [o for step, o in result.log if "tick" not in step and o.state is None]
        assert len(noops) == expect["noops"]
        assert all(not (o.sessions or o.stage_changes or o.triggers or o.visitor) for o in noops)
    if "visitor_records" in expect:
        assert len(result.visitors) == expect["visitor_records"]
    for name, want in expect.get("visitors", {}).items():
        snapshot = visitor_snapshot(result.states[name])
        _assert_subset(snapshot, _expected(want, day, name), f"visitor {name}")
    for at, count in expect.get("closed_by_tick", {}).items():
        tick_ms = to_ms(at, day)
        closed = [
            r
            for step, o in result.log
            if step.get("tick") == tick_ms
            for r in o.sessions
            if r["closed"]
        ]
        assert len(closed) == count, at


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_golden(path: Path) -> None:
    script = load(path)
    result = run(script, MACHINE)
    _check(script, result)

    for kind, record in result.records():
        SCHEMAS[kind](record)  # raises JsonSchemaValueException with the failing path

    assert run(script, MACHINE).records() == result.records(), "a replay differs"
    assert run(script, MACHINE, roundtrip=True).records() == result.records(), "encode/decode"

    versions: dict[str, int] = {}
    for record in result.sessions:
        assert record["version"] > versions.get(record["session_id"], 0), record
        versions[record["session_id"]] = record["version"]
    keys = [c["idempotency_key"] for c in result.stage_changes]
    assert len(keys) == len(set(keys))


def test_the_suite_covers_the_required_edge_cases() -> None:
    names = {p.stem for p in SCRIPTS}
    assert {
        "gap_exactly_30_minutes",
        "out_of_order",
        "campaign_switch",
        "midnight",
        "identify_mid_session",
        "two_devices_merge",
        "refund",
        "bot",
        "marathon_25h",
        "late_event",
        "full_journey",
        "cart_abandoned",
        "lapse_90_days",
    } <= names
