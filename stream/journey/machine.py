"""The stage machine: which events and conditions move a visitor to which stage.

Declared in data (schemas/journey/stages.json) and loaded once. An event matches
every rule whose conditions all hold; the furthest stage among them is the event's
stage. Whether that moves the session or the visitor is process.py's business.

A rule: {"to": stage, and any of
    "events": [track event names],            # none: any event type
    "types": ["page", "screen", ...],          # event types
    "path_contains": ["/reviews"],             # url or path contains one of them
    "properties": {name: {op: value}},         # ops: eq in gt gte lt lte non_empty
    "session": {pageviews_gte, engaged_seconds_gte, events_gte, after_purchase},
    "visitor": {orders_gte}}                   # counted after the event is applied
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stream.config import REPO_ROOT
from stream.journey.facts import num, props
from stream.journey.state import SessionState, VisitorState
from stream.records import EventRecord

STAGES_PATH = REPO_ROOT / "schemas" / "journey" / "stages.json"


class StageMachineError(ValueError):
    """stages.json is malformed; the message names the rule and the problem."""


def _non_empty(value: Any, wanted: Any) -> bool:
    return bool(value) == bool(wanted)


def _in(value: Any, wanted: Any) -> bool:
    return value in wanted


_PROPERTY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda v, w: v == w,
    "in": _in,
    "gt": lambda v, w: num(v, float("nan")) > w,
    "gte": lambda v, w: num(v, float("nan")) >= w,
    "lt": lambda v, w: num(v, float("nan")) < w,
    "lte": lambda v, w: num(v, float("nan")) <= w,
    "non_empty": _non_empty,
}
_SESSION_TESTS: dict[str, Callable[[SessionState, Any], bool]] = {
    "pageviews_gte": lambda s, w: s.pageviews >= w,
    "engaged_seconds_gte": lambda s, w: s.engaged_s >= w,
    "events_gte": lambda s, w: s.events >= w,
    "after_purchase": lambda s, w: s.after_purchase == w,
}
_VISITOR_TESTS: dict[str, Callable[[VisitorState, Any], bool]] = {
    "orders_gte": lambda v, w: v.orders >= w,
}
_RULE_KEYS = {"to", "why", "events", "types", "path_contains", "properties", "session", "visitor"}


@dataclass(frozen=True, slots=True)
class Rule:
    to: str
    rank: int
    events: frozenset[str]
    types: frozenset[str]
    path_contains: tuple[str, ...]
    properties: tuple[tuple[str, Callable[[Any, Any], bool], Any], ...]
    session: tuple[tuple[Callable[[SessionState, Any], bool], Any], ...]
    visitor: tuple[tuple[Callable[[VisitorState, Any], bool], Any], ...]

    def matches(self, event: EventRecord, session: SessionState, visitor: VisitorState) -> bool:
        if self.types and event.get("type") not in self.types:
            return False
        if self.path_contains:
            where = f"{event.get('url') or ''} {event.get('path') or ''}"
            if not any(part in where for part in self.path_contains):
                return False
        if self.properties:
            p = props(event)
            for name, test, wanted in self.properties:
                if not test(p.get(name), wanted):
                    return False
        for test, wanted in self.session:  # loops, not all(): a generator per rule per
            if not test(session, wanted):  # event was a tenth of the engine's time
                return False
        for test, wanted in self.visitor:  # noqa: SIM110 - see above
            if not test(visitor, wanted):
                return False
        return True


class StageMachine:
    """Ordered stages, the lapsed stage, and the rules between them."""

    __slots__ = (
        "stages",
        "lapsed",
        "lapse_from",
        "stage_triggers",
        "rules",
        "_rank",
        "_by_event",
        "_any",
    )

    def __init__(
        self,
        stages: tuple[str, ...],
        lapsed: str,
        lapse_from: str,
        rules: tuple[Rule, ...],
        stage_triggers: Mapping[str, str],
    ) -> None:
        self.stages = stages
        self.lapsed = lapsed
        self.lapse_from = lapse_from
        self.stage_triggers = dict(stage_triggers)  # stage -> trigger, fired once per visitor
        self.rules = rules
        self._rank = {name: i for i, name in enumerate(stages)}
        ordered = sorted(rules, key=lambda r: -r.rank)  # furthest first: first match wins
        self._any = tuple(r for r in ordered if not r.events)
        by_event: dict[str, list[Rule]] = {}
        for rule in ordered:
            for name in rule.events:
                by_event.setdefault(name, []).append(rule)
        self._by_event = {
            k: tuple(sorted(v + list(self._any), key=lambda r: -r.rank))
            for k, v in by_event.items()
        }

    @classmethod
    def load(cls, path: Path = STAGES_PATH) -> StageMachine:
        try:
            data = orjson.loads(Path(path).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StageMachineError(f"{path}: {exc}") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "stages") -> StageMachine:
        if not isinstance(data, dict):
            raise StageMachineError(f"{where}: expected an object")
        stages = data.get("stages")
        if not (
            isinstance(stages, list) and stages and all(isinstance(s, str) and s for s in stages)
        ):
            raise StageMachineError(f"{where}: 'stages' must be a non-empty list of names")
        if len(set(stages)) != len(stages):
            raise StageMachineError(f"{where}: stage names must be unique")
        rank = {name: i for i, name in enumerate(stages)}
        lapse = data.get("lapse") or {}
        lapsed, lapse_from = lapse.get("stage", "lapsed"), lapse.get("from", stages[0])
        if not (isinstance(lapsed, str) and isinstance(lapse_from, str)) or (
            lapsed in rank or lapse_from not in rank
        ):
            raise StageMachineError(f"{where}: 'lapse' needs a new stage name and a known 'from'")
        triggers = data.get("stage_triggers") or {}
        if not all(s in rank and isinstance(t, str) for s, t in triggers.items()):
            raise StageMachineError(f"{where}: 'stage_triggers' maps known stages to names")
        rules = tuple(
            _rule(r, rank, f"{where}: rule {i + 1}") for i, r in enumerate(data.get("rules") or [])
        )
        if not rules:
            raise StageMachineError(f"{where}: no rules")
        return cls(tuple(stages), lapsed, lapse_from, rules, triggers)

    def rank(self, stage: str) -> int:
        """Position in the order; -1 for no stage yet and for lapsed (anything moves on)."""
        return self._rank.get(stage, -1)

    def can_lapse(self, stage: str) -> bool:
        return self.rank(stage) >= self._rank[self.lapse_from]

    def match(self, event: EventRecord, session: SessionState, visitor: VisitorState) -> str:
        """The furthest stage whose rule the event meets, or ""."""
        rules = self._any
        if event.get("type") == "track":
            rules = self._by_event.get(event.get("event") or "", self._any)
        for rule in rules:
            if rule.matches(event, session, visitor):
                return rule.to
        return ""


def _rule(raw: Any, rank: dict[str, int], where: str) -> Rule:
    if not isinstance(raw, dict):
        raise StageMachineError(f"{where}: expected an object")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise StageMachineError(f"{where}: unknown keys {sorted(unknown)}")
    to = raw.get("to")
    if to not in rank:
        raise StageMachineError(f"{where}: 'to' must be one of {list(rank)}")
    properties = []
    for name, spec in (raw.get("properties") or {}).items():
        if not isinstance(spec, dict):
            spec = {"eq": spec}
        for op, wanted in spec.items():
            if op not in _PROPERTY_OPS:
                raise StageMachineError(f"{where}: unknown property test {op!r}")
            properties.append((name, _PROPERTY_OPS[op], wanted))
    return Rule(
        to=to,
        rank=rank[to],
        events=frozenset(_names(raw, "events", where)),
        types=frozenset(_names(raw, "types", where)),
        path_contains=tuple(_names(raw, "path_contains", where)),
        properties=tuple(properties),
        session=_tests(raw, "session", _SESSION_TESTS, where),
        visitor=_tests(raw, "visitor", _VISITOR_TESTS, where),
    )


def _names(raw: dict, key: str, where: str) -> list[str]:
    value = raw.get(key) or []
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise StageMachineError(f"{where}: '{key}' must be a list of strings")
    return value


def _tests(raw: dict, key: str, known: dict[str, Callable], where: str) -> tuple:
    spec = raw.get(key) or {}
    if not isinstance(spec, dict) or set(spec) - set(known):
        raise StageMachineError(f"{where}: '{key}' takes {sorted(known)}")
    return tuple((known[name], wanted) for name, wanted in spec.items())
