"""Run a scripted journey (tests/golden/*.json) through the journey core.

A script gives only the fields that matter; `event()` fills the rest of an
EventRecord. Times are "HH:MM:SS[.mmm]" on the script's `day`, or full ISO
("2024-03-02T00:10:00"), always UTC.

Steps:
  {"at": t, ...event fields}          apply an event ("event" given: a track call,
                                      else a page view); "visitor" picks the visitor
                                      (default "v1"); "offset" defaults to a counter;
                                      "repeat": {"every_s": n, "count": k} repeats it
  {"tick": t}                         tick every visitor with watermark t
  {"merge": "b", "into": "a"}         state of a := merge(a, b); b is forgotten
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stream.journey import (
    Outcome,
    StageMachine,
    VisitorState,
    apply,
    decode_state,
    encode_state,
    merge,
    tick,
)
from stream.records import EventRecord
from stream.sessionize.rules import DAY_MS, SessionRules

GOLDEN = Path(__file__).parent
TIME_KEYS = {"started_at", "ended_at", "ts", "first_seen", "last_seen", "at"}


def event(**fields: Any) -> EventRecord:
    """A complete EventRecord: a page view of visitor v1 unless told otherwise."""
    visitor = fields.pop("visitor", "v1")
    base: dict[str, Any] = {
        "message_id": "m-1",
        "type": "track" if fields.get("event") else "page",
        "event": "",
        "name": "",
        "visitor_id": visitor,
        "anonymous_id": visitor,
        "user_id": "",
        "previous_id": "",
        "ts": 0,
        "received_at": 0,
        "sent_at": None,
        "source": "web",
        "url": "https://shop.example/",
        "path": "/",
        "referrer": "",
        "title": "",
        "properties": {},
        "traits": {},
        "context": {},
        "ip": "",
        "user_agent": "",
        "browser": "Chrome",
        "os": "Mac OS X",
        "device_type": "desktop",
        "is_bot": False,
        "ref_source": "(direct)",
        "ref_medium": "(none)",
        "search_engine": "",
        "utm_source": "",
        "utm_medium": "",
        "utm_campaign": "",
        "utm_term": "",
        "utm_content": "",
        "click_id": "",
    }
    base.update(fields)
    if "path" not in fields and base["url"].startswith("https://shop.example"):
        base["path"] = base["url"].removeprefix("https://shop.example") or "/"
    base["received_at"] = base["received_at"] or base["ts"]
    return base  # type: ignore[return-value]


def to_ms(value: str, day: str) -> int:
    text = value if "T" in value else f"{day}T{value}"
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def rules_of(script: dict) -> SessionRules:
    r = script.get("rules", {})
    return SessionRules(
        timeout_ms=r.get("timeout_s", 1800) * 1000,
        max_ms=r.get("max_s", 86400) * 1000,
        lateness_ms=r.get("lateness_s", 300) * 1000,
        lapse_ms=r.get("lapse_days", 90) * DAY_MS,
    )


@dataclass
class Run:
    log: list[tuple[dict, Outcome]] = field(default_factory=list)  # (step, its outcome)
    states: dict[str, VisitorState] = field(default_factory=dict)

    @property
    def outcomes(self) -> list[Outcome]:
        return [o for _, o in self.log]

    @property
    def stage_changes(self) -> list[dict]:
        return [r for o in self.outcomes for r in o.stage_changes]

    @property
    def sessions(self) -> list[dict]:
        return [r for o in self.outcomes for r in o.sessions]

    @property
    def triggers(self) -> list[dict]:
        return [r for o in self.outcomes for r in o.triggers]

    @property
    def visitors(self) -> list[dict]:
        return [o.visitor for o in self.outcomes if o.visitor is not None]

    def final_sessions(self) -> list[dict]:
        """The latest summary of each session, in order of first appearance."""
        latest: dict[str, dict] = {}
        for record in self.sessions:
            latest[record["session_id"]] = record
        return list(latest.values())

    def records(self) -> list[tuple[str, dict]]:
        out = []
        for o in self.outcomes:
            out += [("stage_change", r) for r in o.stage_changes]
            out += [("session", r) for r in o.sessions]
            out += [("trigger", r) for r in o.triggers]
            out += [("visitor", o.visitor)] if o.visitor else []
        return out


def expand(script: dict) -> list[dict]:
    """Steps with repeats unrolled and times in ms."""
    day = script.get("day", "2024-03-01")
    steps = []
    for step in script["steps"]:
        step = dict(step)
        for key in ("at", "tick"):
            if isinstance(step.get(key), str):
                step[key] = to_ms(step[key], day)
        repeat = step.pop("repeat", None)
        if repeat is None:
            steps.append(step)
            continue
        for i in range(repeat["count"]):
            steps.append({**step, "at": step["at"] + i * repeat["every_s"] * 1000, "n": i})
    return steps


def run(script: dict, machine: StageMachine, roundtrip: bool = False) -> Run:
    """Apply the script; with `roundtrip`, states go through encode/decode between steps."""
    rules = rules_of(script)
    result = Run()
    offset = 0
    for index, step in enumerate(expand(script)):
        if "tick" in step:
            for name, state in list(result.states.items()):
                _keep(result, step, name, tick(state, step["tick"], rules, machine), roundtrip)
            continue
        if "merge" in step:
            into = step["into"]
            result.states[into] = merge(result.states[into], result.states.pop(step["merge"]))
            continue
        fields = {k: v for k, v in step.items() if k not in ("at", "offset", "n")}
        fields.setdefault("message_id", f"m{index}-{step.get('n', 0)}")
        record = event(ts=step["at"], **fields)
        name = record["visitor_id"]
        offset += 1
        at = step.get("offset", offset)
        outcome = apply(result.states.get(name), record, at, rules, machine)
        _keep(result, step, name, outcome, roundtrip)
    return result


def _keep(result: Run, step: dict, name: str, outcome: Outcome, roundtrip: bool) -> None:
    result.log.append((step, outcome))
    if outcome.state is not None:
        state = outcome.state
        result.states[name] = decode_state(encode_state(state)) if roundtrip else state


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def scripts() -> list[Path]:
    return sorted(GOLDEN.glob("*.json"))
