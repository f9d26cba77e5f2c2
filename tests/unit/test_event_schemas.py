"""The event contract: every schema has fixtures that pass and fail as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.collector.validate import Validator
from stream.config import REPO_ROOT
from tests.support.examples import examples

pytestmark = pytest.mark.unit

SCHEMAS = REPO_ROOT / "schemas"
EVENTS = SCHEMAS / "events"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
INDEX = json.loads((EVENTS / "index.json").read_text())
RECEIVED = 1_714_557_600_000  # 2024-05-01T10:00:00Z, when the fixtures "arrive"


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(SCHEMAS)


def _schema_stem(relative: str) -> str:
    return Path(relative).name.split(".")[0]  # ecommerce/order_completed.v1.json -> order_completed


def _fixtures(kind: str) -> list[Path]:
    return sorted((FIXTURES / kind).glob("*.json"))


@pytest.mark.parametrize("path", _fixtures("valid"), ids=lambda p: p.stem)
def test_valid_fixture_passes(validator: Validator, path: Path) -> None:
    assert validator.validate(json.loads(path.read_text()), received_at_ms=RECEIVED) == []


@pytest.mark.parametrize("path", _fixtures("invalid"), ids=lambda p: p.stem)
def test_invalid_fixture_fails_with_its_reason(validator: Validator, path: Path) -> None:
    call = json.loads(path.read_text())
    expect = call.pop("_expect")
    reasons = validator.validate(call, received_at_ms=RECEIVED)
    assert any(expect in reason for reason in reasons), reasons


def test_every_schema_has_valid_and_invalid_fixtures() -> None:
    stems = {_schema_stem(INDEX["envelope"]["schema"])}
    stems |= {_schema_stem(entry["schema"]) for entry in INDEX["events"].values()}
    for kind in ("valid", "invalid"):
        covered = {path.name.split(".")[0] for path in _fixtures(kind)}
        assert stems - covered == set(), f"{kind} fixtures missing"
        assert covered - stems == set(), f"{kind} fixtures name no schema"


def test_index_names_every_schema_file_with_its_version() -> None:
    entries = [INDEX["envelope"], *INDEX["events"].values()]
    for entry in entries:
        assert (EVENTS / entry["schema"]).is_file()
        assert entry["schema"].endswith(f".v{entry['version']}.json")
    listed = {entry["schema"] for entry in entries}
    on_disk = {p.relative_to(EVENTS).as_posix() for p in EVENTS.rglob("*.v*.json")}
    assert on_disk - listed == {"common.v1.json"}  # shared $defs, not an event


def test_schemas_declare_2020_12(validator: Validator) -> None:
    for path in EVENTS.rglob("*.v*.json"):
        assert json.loads(path.read_text())["$schema"].endswith("/draft/2020-12/schema"), path


def test_events_lists_the_index(validator: Validator) -> None:
    assert validator.events == set(INDEX["events"])
    assert validator.versions["Order Completed"] == 1


def test_non_objects_are_reasons_not_errors(validator: Validator) -> None:
    for value in (None, 1, "track", [], [{"type": "track"}], True):
        assert validator.validate(value) == ["event must be a JSON object"]


def test_every_problem_is_reported(validator: Validator) -> None:
    call = {
        "type": "track",
        "event": "Order Completed",
        "anonymousId": "a1",
        "properties": {"currency": "dollars", "products": [{"price": "1"}]},
    }
    assert validator.validate(call, received_at_ms=RECEIVED) == [
        "properties.currency: must be a 3-letter currency code",
        "properties.products[0].price: must be a number",
    ]


def test_spec_valid_ecommerce_events_need_no_property(validator: Validator) -> None:
    """Segment's e-commerce spec requires no property: the default schemas neither."""
    spec_events = set(INDEX["events"]) - {"Page Ping", "Feedback Submitted"}  # ours
    for event in sorted(spec_events):
        for properties in ({}, {"products": [{"name": "no id"}]}):
            call = {"type": "track", "event": event, "anonymousId": "a1", "properties": properties}
            assert validator.validate(call, received_at_ms=RECEIVED) == [], event


def test_odd_types_are_reasons(validator: Validator) -> None:
    call = {"type": "track", "event": ["Order Completed"], "anonymousId": "a1", "properties": 5}
    assert validator.validate(call, received_at_ms=RECEIVED) == [
        "event: must be a string",
        "properties: must be an object",
    ]


def test_properties_schema_applies_to_track_only(validator: Validator) -> None:
    page = {"type": "page", "event": "Order Completed", "anonymousId": "a1", "properties": {}}
    assert validator.validate(page, received_at_ms=RECEIVED) == []


def test_event_names_are_case_sensitive_like_segment(validator: Validator) -> None:
    custom = {"type": "track", "event": "order completed", "anonymousId": "a1", "properties": {}}
    assert validator.validate(custom, received_at_ms=RECEIVED) == []


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ({"timestamp": "2024-05-01T10:00:00Z"}, True),
        ({"timestamp": "2024-05-01T12:00:00.123456789+02:00"}, True),
        ({"timestamp": "2024-05-01 10:00:00"}, True),  # no offset: UTC, as Segment reads it
        ({"timestamp": "2024-05-02T09:59:00Z"}, True),  # just under 24 h ahead
        ({"timestamp": "2024-05-02T10:01:00Z"}, False),
        # The client's clock is a year ahead, but sentAt shows it: corrected, accepted.
        ({"timestamp": "2025-05-01T10:00:00Z", "sentAt": "2025-05-01T10:00:01Z"}, True),
        ({"originalTimestamp": "2024-05-03T10:00:00Z"}, False),
        ({"timestamp": "1969-12-31T23:59:59Z"}, False),
        ({"timestamp": "2024-02-30T00:00:00Z"}, False),
        ({"timestamp": ""}, False),
        ({"timestamp": 1714557600000}, False),  # epoch numbers are not Segment's format
    ],
)
def test_dates(validator: Validator, fields: dict, ok: bool) -> None:
    call = {"type": "page", "anonymousId": "a1", **fields}
    assert (validator.validate(call, received_at_ms=RECEIVED) == []) is ok


def test_external_refs_are_never_fetched(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    (events / "index.json").write_text(
        json.dumps({"envelope": {"schema": "envelope.v1.json", "version": 1}, "events": {}})
    )
    (events / "envelope.v1.json").write_text(json.dumps({"$ref": "https://example.com/s.json"}))
    with pytest.raises(Exception, match="external"):
        Validator(tmp_path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
segment_keys = st.sampled_from(
    ["type", "event", "anonymousId", "userId", "properties", "context", "timestamp", "sentAt",
     "originalTimestamp", "previousId", "messageId", "name", "traits"]
)  # fmt: skip
segment_values = st.one_of(
    json_values,
    st.sampled_from(["track", "page", "alias", "Order Completed", "Product Added", "Page Ping"]),
    st.sampled_from(
        ["2024-05-01T10:00:00Z", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"]
    ),
)


@settings(max_examples=examples(300), deadline=None)
@given(json_values)
def test_validate_never_raises_on_any_json(validator: Validator, value: object) -> None:
    reasons = validator.validate(value)
    assert isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)


@settings(max_examples=examples(500), deadline=None)
@given(st.dictionaries(segment_keys, segment_values, max_size=8))
def test_validate_never_raises_on_segment_like_json(validator: Validator, call: dict) -> None:
    if isinstance(call.get("properties"), dict) or "properties" not in call:
        call.setdefault(
            "properties", {"order_id": call.get("messageId"), "price": call.get("name")}
        )
    reasons = validator.validate(call)
    assert isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)
