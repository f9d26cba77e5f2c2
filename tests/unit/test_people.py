"""One person across devices: device states linked by user id, merged into a customer
record; replays, reordering and repeated updates never count anything twice."""

from __future__ import annotations

import itertools

import fastjsonschema
import orjson
import pytest

from stream import config
from stream.config import REPO_ROOT
from stream.journey import StageMachine, apply, encode_state
from stream.journey.people import decode_person, encode_person, link
from stream.processor.engine import Engine, Record
from stream.sessionize.rules import DAY_MS, SessionRules
from tests.golden.script import event

pytestmark = pytest.mark.unit

MACHINE = StageMachine.load()
RULES = SessionRules()
MIN = 60_000
T0 = 1_709_287_200_000
CUSTOMER = fastjsonschema.compile(
    orjson.loads((REPO_ROOT / "schemas/topics/customer.v1.json").read_bytes())
)


def device(visitor: str, start: int, orders: int, **fields):
    """A visitor who identifies as u1 and places `orders` orders of 10."""
    state = None
    events = [event(ts=start, visitor=visitor, user_id="u1", **fields)]
    for n in range(orders):
        events.append(
            event(
                ts=start + (n + 1) * MIN,
                visitor=visitor,
                user_id="u1",
                event="Order Completed",
                properties={"order_id": f"o-{visitor}-{n}", "revenue": 10.0},
            )
        )
    for offset, e in enumerate(events):
        state = apply(state, e, offset, RULES, MACHINE).state or state
    return state


def test_two_devices_merge_earliest_first_touch_and_added_counts() -> None:
    phone = device("phone", T0 + DAY_MS, 1, utm_source="mail")
    laptop = device("laptop", T0, 2, utm_source="google")
    person, first = link(None, phone, MACHINE)
    person, both = link(person, laptop, MACHINE)
    CUSTOMER(both)
    assert first["devices"] == 1 and first["orders"] == 1
    assert both["visitor_ids"] == ["laptop", "phone"]
    assert both["first_seen"] == T0 and both["first_utm_source"] == "google"
    assert (both["orders"], both["revenue"], both["sessions"]) == (3, 30.0, 2)
    assert both["stage"] == "retention"  # the laptop's repeat order
    assert both["version"] > first["version"]


def test_replays_and_older_states_change_nothing() -> None:
    phone = device("phone", T0, 1)
    person, _ = link(None, phone, MACHINE)
    person, again = link(person, phone, MACHINE)
    assert again is None
    older = device("phone", T0, 0)
    person, stale = link(person, older, MACHINE)
    assert stale is None and person.devices["phone"].orders == 1


def test_any_arrival_order_gives_the_same_customer() -> None:
    states = [device("a", T0, 1), device("b", T0 + MIN, 0), device("c", T0 - DAY_MS, 2)]
    records = set()
    for order in itertools.permutations(states):
        person = None
        for s in order:
            person, record = link(person, s, MACHINE)
        records.add(orjson.dumps(record))
    assert len(records) == 1


def test_a_person_survives_its_encoding() -> None:
    person, record = link(None, device("a", T0, 1), MACHINE)
    person, record = link(person, device("b", T0 + MIN, 1), MACHINE)
    again = decode_person(encode_person(person))
    assert again.user_id == "u1" and set(again.devices) == {"a", "b"}
    assert link(again, device("b", T0 + MIN, 1), MACHINE)[1] is None


def test_the_engine_links_devices_from_the_identities_topic() -> None:
    engine = Engine(config.load({}))
    table: dict[str, bytes] = {}
    outputs = []
    for offset, state in enumerate([device("phone", T0, 1), device("laptop", T0 + MIN, 1)]):
        record = Record("clickstream.identities", 0, offset, b"u1", encode_state(state))
        result = engine.link([record], table.get)
        table.update({k.decode(): v for k, (_, v) in result.states.items()})
        outputs += [orjson.loads(o.value) for o in result.outputs]
    assert [o["devices"] for o in outputs] == [1, 2] and outputs[-1]["orders"] == 2
    bad = engine.link([Record("clickstream.identities", 0, 9, b"u1", b"{")], table.get)
    assert [o.topic for o in bad.outputs] == ["clickstream.invalid"] and not bad.states


def test_identified_visitors_are_sent_to_their_person() -> None:
    engine = Engine(config.load({}))
    e = event(ts=T0, visitor="v", user_id="u9", message_id="m1")
    record = Record("clickstream.events", 0, 0, b"v", orjson.dumps(e))
    result = engine.run([record], lambda v: None, lambda k: None, lambda p: ())
    sent = [o for o in result.outputs if o.topic == "clickstream.identities"]
    assert [o.key for o in sent] == [b"u9"]
