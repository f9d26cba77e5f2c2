"""Validate Segment calls against the versioned JSON Schemas in `schemas/events/`.

Every call must satisfy the envelope; a `track` call whose event is listed in
`index.json` must also satisfy that event's properties schema. Unknown track
events pass on the envelope alone, so custom events need no schema.

Schemas declare draft 2020-12 but keep to the keywords it shares with draft-07,
which fastjsonschema compiles to Python. `format` is an annotation in 2020-12
(and compiled off here): dates are checked by `clock.parse_iso_ms`, the parser
the normalizer uses, so both agree on what a date is.

Most calls are valid, so a Rust validator (jsonschema-rs) of the same schemas answers
first with a plain yes or no, ~10x cheaper than the generated Python. Only its yes is
trusted: on a no (or anything it cannot take) fastjsonschema runs as before and words
every reason, so what is refused and why is unchanged (tests/unit/test_event_schemas.py
checks both agree).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema

try:  # optional: without it every call goes through fastjsonschema alone
    import jsonschema_rs
except ImportError:  # pragma: no cover - installed with the project
    jsonschema_rs = None  # type: ignore[assignment]

from stream.collector.clock import MAX_FUTURE_MS, corrected, parse_iso_ms

# Schemas name each other by this base (a reserved TLD: never fetched); refs load from disk.
SCHEMA_BASE_URI = "https://clickstream.invalid/schemas/events/"
DATE_FIELDS = ("timestamp", "sentAt", "originalTimestamp")

_TYPE_WORDS = {
    "string": "a string",
    "number": "a number",
    "integer": "a whole number",
    "object": "an object",
    "array": "an array",
    "boolean": "true or false",
}

Check = Callable[[Any], Any]
Quick = Callable[[Any], bool]


class Validator:
    """Compiled schemas of one `schemas/` directory (Settings.schemas_dir)."""

    def __init__(self, schemas_dir: Path, *, quick: bool = True) -> None:
        self._dir = Path(schemas_dir) / "events"
        index = json.loads((self._dir / "index.json").read_text())
        self._envelope = self._compile(index["envelope"]["schema"])
        self._events: dict[str, Check] = {
            name: self._compile(entry["schema"]) for name, entry in index["events"].items()
        }
        self._quick_envelope = self._quick(index["envelope"]["schema"]) if quick else None
        self._quick_events: dict[str, Quick] = {
            name: check
            for name, entry in index["events"].items()
            if quick and (check := self._quick(entry["schema"])) is not None
        }
        # Envelope and properties in one call (one conversion of the call to Rust values)
        # for the common case, a track call whose properties are an object.
        envelope_uri = SCHEMA_BASE_URI + index["envelope"]["schema"]
        self._quick_tracks: dict[str, Quick] = {
            name: check
            for name, entry in index["events"].items()
            if quick
            and (check := self._quick(_with_properties(envelope_uri, entry["schema"]))) is not None
        }
        self.versions: dict[str, int] = {n: e["version"] for n, e in index["events"].items()}
        self.plans: dict[str, TrackingPlan] = {
            path.stem: TrackingPlan(path, self._compile_schema)
            for path in sorted((Path(schemas_dir) / "tracking_plans").glob("*.json"))
        }

    @property
    def events(self) -> frozenset[str]:
        """Track event names that have a properties schema."""
        return frozenset(self._events)

    def validate(self, call: Any, *, received_at_ms: int | None = None) -> list[str]:
        """Reasons the call is invalid; empty when valid. Never raises.

        An event time more than 24 hours after `received_at_ms` (default: now),
        after clock-skew correction, is rejected: it comes from a broken clock and
        would sit in the future of every report. Old times are kept as they are
        (offline queues, backfills) unless before 1970.
        """
        if not isinstance(call, dict):
            return ["event must be a JSON object"]
        try:
            event: Any = call.get("event")
            is_track = call.get("type") == "track" and isinstance(event, str)
            check = self._events.get(event) if is_track else None
            properties = call.get("properties")
            if check is None or not (properties is None or isinstance(properties, dict)):
                event = None  # no properties schema applies
            # The common call, a track call with object properties: one Rust call, inline.
            track = (
                self._quick_tracks.get(event)
                if event is not None and isinstance(properties, dict)
                else None
            )
            if track is not None:
                try:
                    valid = track(call)
                except Exception:  # noqa: BLE001 - a value it cannot convert: the full check
                    valid = False
            else:
                valid = self._valid_quickly(call, event, properties or {})
            if valid:
                return _check_dates(call, received_at_ms)
            reasons = _run(self._envelope, call, "")
            reasons += _check_dates(call, received_at_ms)
            if event is not None and check is not None:
                reasons += _run(check, properties or {}, "properties")
        except Exception as exc:  # a validator bug must not take the collector down
            return [f"event could not be validated: {type(exc).__name__}"]
        return list(dict.fromkeys(reasons))

    def _valid_quickly(self, call: dict[str, Any], event: str | None, properties: Any) -> bool:
        """True only when the Rust validator passes the envelope and the properties schema."""
        envelope = self._quick_envelope
        if envelope is None:
            return False
        try:
            if event is not None and isinstance(call.get("properties"), dict):
                track = self._quick_tracks.get(event)
                if track is not None:
                    return track(call)
            if not envelope(call):
                return False
            if event is None:
                return True
            check = self._quick_events.get(event)
            return check is not None and check(properties)
        except Exception:  # noqa: BLE001 - a value it cannot convert: the full check decides
            return False

    def plan_violations(self, call: Any, source: str) -> tuple[TrackingPlan | None, list[str]]:
        """The source's tracking plan, if it has one, and how a valid call breaks it."""
        plan = self.plans.get(source)
        if plan is None or not isinstance(call, dict):
            return plan, []
        try:
            return plan, plan.violations(call)
        except Exception as exc:  # a plan bug must not take the collector down
            return plan, [f"event could not be checked against the plan: {type(exc).__name__}"]

    def _compile(self, relative: str) -> Check:
        return self._compile_schema(json.loads((self._dir / relative).read_text()))

    def _compile_schema(self, schema: Any) -> Check:
        return fastjsonschema.compile(
            schema,
            handlers={"https": self._load, "http": self._load},
            use_formats=False,
            fast_fail=False,
        )

    def _quick(self, schema: str | dict[str, Any]) -> Quick | None:
        """The Rust validator's yes/no for a schema (or schema file); None when it is
        unavailable or cannot compile the schema (fastjsonschema then checks alone)."""
        if jsonschema_rs is None:
            return None
        if isinstance(schema, str):
            schema = json.loads((self._dir / schema).read_text())
        try:
            return jsonschema_rs.validator_for(schema, retriever=self._load).is_valid
        except Exception:  # noqa: BLE001 - fastjsonschema compiled it; it stays the judge
            return None

    def _load(self, uri: str) -> Any:
        """Resolve a `$ref` to a sibling schema file; never the network."""
        if not uri.startswith(SCHEMA_BASE_URI):
            raise fastjsonschema.JsonSchemaDefinitionException(f"external $ref {uri!r}")
        path = (self._dir / uri.removeprefix(SCHEMA_BASE_URI)).resolve()
        if not path.is_relative_to(self._dir.resolve()):
            raise fastjsonschema.JsonSchemaDefinitionException(f"$ref outside schemas: {uri!r}")
        return json.loads(path.read_text())


class TrackingPlan:
    """A merchant's stricter rules for one source: `schemas/tracking_plans/<source>.json`.

    `events` maps a track event name to a JSON Schema for its properties (on top of
    the default schema, which still applies); `unplanned_events: "refuse"` makes a
    track event the plan does not list a violation. `mode: "refuse"` dead-letters a
    violating event like an invalid one; `mode: "flag"` accepts it and records the
    violations in `context.tracking_plan`.
    """

    MODES = ("refuse", "flag")

    def __init__(self, path: Path, compile_schema: Callable[[Any], Check]) -> None:
        try:
            plan = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"tracking plan {path.name}: not JSON: {exc}") from None
        self.source = path.stem
        self.mode = plan.get("mode", "refuse")
        self.unplanned = plan.get("unplanned_events", "allow")
        events = plan.get("events", {})
        if self.mode not in self.MODES:
            raise ValueError(f"tracking plan {path.name}: mode must be refuse or flag")
        if self.unplanned not in ("allow", "refuse"):
            raise ValueError(f"tracking plan {path.name}: unplanned_events must be allow or refuse")
        if not isinstance(events, dict):
            raise ValueError(f"tracking plan {path.name}: events must map event names to schemas")
        self._events = {name: compile_schema(schema) for name, schema in events.items()}

    @property
    def flags(self) -> bool:
        return self.mode == "flag"

    def violations(self, call: dict[str, Any]) -> list[str]:
        event = call.get("event")
        if call.get("type") != "track" or not isinstance(event, str):
            return []
        check = self._events.get(event)
        if check is None:
            if self.unplanned == "refuse":
                return [f"event: {event!r} is not in the tracking plan of {self.source!r}"]
            return []
        properties = call.get("properties")
        return list(dict.fromkeys(_run(check, properties or {}, "properties")))


def _with_properties(envelope_uri: str, relative: str) -> dict[str, Any]:
    """A schema for a call with an object in `properties`: the envelope and, on those
    properties, the event's schema."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [
            {"$ref": envelope_uri},
            {"properties": {"properties": {"$ref": SCHEMA_BASE_URI + relative}}},
        ],
    }


def _run(check: Check, data: Any, root: str) -> list[str]:
    try:
        check(data)
    except fastjsonschema.JsonSchemaValuesException as exc:
        return [r for error in exc.errors for r in _describe(error, root)]
    except fastjsonschema.JsonSchemaValueException as exc:
        return _describe(exc, root)
    return []


def _check_dates(call: dict[str, Any], received_at_ms: int | None) -> list[str]:
    # Straight-line, no dicts or lists on a valid call: this runs for every call (each date
    # is parsed once, then cached). Any unparsable date: `_date_reasons` words them all.
    stamp = call.get("timestamp")
    if isinstance(stamp, str):
        if (stamp_ms := parse_iso_ms(stamp)) is None:
            return _date_reasons(call)
    else:
        stamp_ms = None
    sent = call.get("sentAt")
    if isinstance(sent, str):
        if (sent_ms := parse_iso_ms(sent)) is None:
            return _date_reasons(call)
    else:
        sent_ms = None
    original = call.get("originalTimestamp")
    if isinstance(original, str):
        if (original_ms := parse_iso_ms(original)) is None:
            return _date_reasons(call)
    elif stamp_ms is None and sent_ms is None:
        return []  # no date at all
    else:
        original_ms = None
    received = time.time_ns() // 1_000_000 if received_at_ms is None else received_at_ms
    ts = corrected(original_ms if stamp_ms is None else stamp_ms, sent_ms, received)
    if ts > received + MAX_FUTURE_MS:
        return ["timestamp: more than 24 hours in the future (after clock-skew correction)"]
    if ts < 0:
        return ["timestamp: before 1970 (after clock-skew correction)"]
    return []


def _date_reasons(call: dict[str, Any]) -> list[str]:
    """One reason per date field that is text but not a date, in DATE_FIELDS' order."""
    return [
        f"{name}: must be an ISO-8601 date"
        for name in DATE_FIELDS
        if isinstance(text := call.get(name), str) and parse_iso_ms(text) is None
    ]


def _describe(error: fastjsonschema.JsonSchemaValueException, root: str) -> list[str]:
    """One fastjsonschema error -> reasons like 'properties.price: must be a number'."""
    path = _path(error.name or "data", root)
    rule = error.rule or ""
    definition = error.definition if isinstance(error.definition, dict) else {}
    worded = definition.get("errorMessage", {}).get(rule)
    if worded:
        return [f"{path}: {worded}" if path else worded]
    if rule == "required":
        present = error.value if isinstance(error.value, dict) else {}
        missing = [key for key in definition.get("required", ()) if key not in present]
        return [f"{_join(path, key)} is required" for key in missing]
    return [f"{path or 'event'}: {_problem(rule, definition, error)}"]


def _problem(rule: str, definition: dict[str, Any], error: Exception) -> str:
    limit: Any = definition.get(rule)
    if rule == "type":
        types: list[Any] = limit if isinstance(limit, list) else [limit]
        return "must be " + " or ".join(_TYPE_WORDS.get(t, t) for t in types if t != "null")
    if rule == "minimum":
        return f"must be at least {limit}"
    if rule == "maximum":
        return f"must be at most {limit}"
    if rule == "minLength":
        return "must not be empty" if limit == 1 else f"must be at least {limit} characters"
    if rule == "maxLength":
        return f"must be at most {limit} characters"
    if rule == "enum":
        return "must be one of " + ", ".join(map(str, limit))
    message = str(error)  # fastjsonschema's own wording: "data.x must ..."
    return message.split(" ", 1)[1] if message.startswith("data") else message


def _path(name: str, root: str) -> str:
    inner = name.removeprefix("data").lstrip(".")
    if not root:
        return inner
    return f"{root}{'' if inner.startswith('[') or not inner else '.'}{inner}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
