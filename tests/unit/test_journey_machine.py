"""The stage machine read from schemas/journey/stages.json."""

from __future__ import annotations

import pytest

from stream.journey import StageMachine, StageMachineError
from stream.journey.state import SessionState, VisitorState
from tests.golden.script import event

pytestmark = pytest.mark.unit

MACHINE = StageMachine.load()


def stage_of(
    record: dict, session: SessionState | None = None, visitor: VisitorState | None = None
) -> str:
    return MACHINE.match(record, session or SessionState("s", 0, 0), visitor or VisitorState("v1"))


def test_default_stages_in_order() -> None:
    assert MACHINE.stages == (
        "awareness",
        "consideration",
        "decision",
        "purchase",
        "retention",
        "advocacy",
    )
    assert MACHINE.lapsed == "lapsed"
    assert MACHINE.rank("") == MACHINE.rank("lapsed") == -1
    assert MACHINE.can_lapse("purchase") and not MACHINE.can_lapse("decision")


@pytest.mark.parametrize(
    ("fields", "stage"),
    [
        ({"url": "https://shop.example/"}, "awareness"),
        ({"type": "identify", "user_id": "u1"}, "awareness"),
        ({"event": "Products Searched"}, "consideration"),
        ({"url": "https://shop.example/p/1/reviews"}, "consideration"),
        ({"event": "Product Added"}, "decision"),
        ({"event": "Cart Viewed", "properties": {"products": []}}, "awareness"),
        ({"event": "Cart Viewed", "properties": {"products": [{"product_id": "p"}]}}, "decision"),
        ({"event": "Coupon Applied"}, "decision"),
        ({"event": "Order Completed"}, "purchase"),
        ({"event": "Product Reviewed"}, "advocacy"),
        ({"event": "Feedback Submitted", "properties": {"nps": 8}}, "awareness"),
        ({"event": "Feedback Submitted", "properties": {"nps": "9"}}, "advocacy"),
        ({"event": "Feedback Submitted", "properties": {"nps": 11}}, "awareness"),
        ({"event": "Feedback Submitted", "properties": {"nps": None}}, "awareness"),
        ({"event": "Something Else"}, "awareness"),
    ],
)
def test_event_rules(fields: dict, stage: str) -> None:
    assert stage_of(event(**fields)) == stage


def test_session_and_visitor_conditions() -> None:
    page = event()
    engaged = SessionState("s", 0, 0, pageviews=2, engaged_s=10)
    assert stage_of(page, engaged) == "consideration"
    assert stage_of(page, SessionState("s", 0, 0, pageviews=2, engaged_s=9.5)) == "awareness"
    assert stage_of(page, SessionState("s", 0, 0, after_purchase=True)) == "retention"
    order = event(event="Order Completed")
    assert stage_of(order, visitor=VisitorState("v", orders=2)) == "retention"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected an object"),
        ({"stages": []}, "non-empty list"),
        ({"stages": ["a", "a"]}, "unique"),
        ({"stages": ["a"], "lapse": {"stage": "a"}}, "'lapse'"),
        ({"stages": ["a"], "rules": []}, "no rules"),
        ({"stages": ["a"], "rules": [{"to": "b"}]}, "rule 1: 'to'"),
        ({"stages": ["a"], "rules": [{"to": "a", "event": ["x"]}]}, "unknown keys"),
        (
            {"stages": ["a"], "rules": [{"to": "a", "properties": {"x": {"near": 1}}}]},
            "property test",
        ),
        ({"stages": ["a"], "rules": [{"to": "a", "session": {"pages": 1}}]}, "'session' takes"),
        ({"stages": ["a"], "rules": [{"to": "a", "events": "x"}]}, "list of strings"),
    ],
)
def test_a_malformed_file_names_the_problem(data, message: str) -> None:
    with pytest.raises(StageMachineError, match=message):
        StageMachine.from_dict(data)


def test_a_missing_file_is_a_stage_machine_error(tmp_path) -> None:
    with pytest.raises(StageMachineError):
        StageMachine.load(tmp_path / "nope.json")
