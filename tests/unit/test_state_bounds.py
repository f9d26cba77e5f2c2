"""No state record can grow past MAX_STATE_BYTES, whatever a visitor or a crowd sends:
the worst-case visitor state and person are built here and measured."""

from __future__ import annotations

import orjson
import pytest

from stream.journey import StageMachine
from stream.journey.facts import MAX_TEXT
from stream.journey.people import MAX_DEVICES, encode_person, link
from stream.journey.state import (
    MAX_CART_LINES,
    MAX_CLOSED_KEPT,
    MAX_HISTORY,
    MAX_OPEN_SESSIONS,
    MAX_ORDER_IDS,
    SessionState,
    VisitorState,
    encode_state,
)
from stream.metrics.windows import MAX_COUNTED, MAX_DIM, MetricRow, PartitionRecord, row_key
from stream.processor.engine import MAX_STATE_BYTES, Record
from tests.support.engine_shell import Shell

pytestmark = pytest.mark.unit

LONG = "x" * MAX_TEXT
MACHINE = StageMachine.load()


def worst_session(i: int) -> SessionState:
    s = SessionState(id=f"{i:020d}", start=i, end=i)
    for name in ("landing_page", "exit_page", "referrer", "ref_source", "ref_medium", "utm_source",
                 "utm_medium", "utm_campaign", "click_id", "device_type", "browser", "os"):  # fmt: skip
        setattr(s, name, LONG)
    s.dims = (LONG[:MAX_DIM],) * 4
    return s


def worst_state(user: str = LONG) -> VisitorState:
    state = VisitorState(visitor_id=LONG, anonymous_id=LONG, user_id=user, source=LONG)
    state.sessions = [worst_session(i) for i in range(MAX_OPEN_SESSIONS)]
    state.closed = [worst_session(100 + i) for i in range(MAX_CLOSED_KEPT)]
    state.cart = [(LONG, LONG, LONG, 1.0, 1)] * MAX_CART_LINES
    state.order_ids = [LONG] * MAX_ORDER_IDS
    state.history = [("advocacy", 10**13)] * MAX_HISTORY
    state.offsets = {p: 10**12 for p in range(256)}
    state.counted = [(10**13, 2**48)] * MAX_COUNTED
    state.metric_dims = (LONG[:MAX_DIM],) * 4
    state.last_product = (LONG, LONG, LONG)
    for name in ("first_referrer", "first_landing_page", "first_utm_source", "first_utm_medium",
                 "first_utm_campaign", "last_event_id", "currency"):  # fmt: skip
        setattr(state, name, LONG)
    return state


def test_the_worst_visitor_state_fits_the_bound() -> None:
    size = len(encode_state(worst_state()))
    assert size < MAX_STATE_BYTES, size


def test_the_worst_person_fits_the_bound() -> None:
    person = None
    for device in range(MAX_DEVICES + 5):
        state = worst_state("u")
        state.visitor_id = f"{device}{LONG}"[:MAX_TEXT]
        state.version = 1
        person, _ = link(person, state, MACHINE)
    assert len(person.devices) == MAX_DEVICES
    size = len(encode_person(person))
    assert size < MAX_STATE_BYTES, size


def test_metric_and_partition_records_are_small() -> None:
    row = MetricRow()
    row.figures = [10**15] * len(row.figures)
    assert len(row.encode()) + len(row_key(255, 10**13, (LONG[:MAX_DIM],) * 4)) < 2048
    assert len(PartitionRecord(10**13, 10**12, 10**12).encode()) < 100


def test_an_expired_device_leaves_its_person_and_the_last_one_removes_it() -> None:
    shell = Shell(CLICKSTREAM_STATE_TTL_DAYS="100", CLICKSTREAM_LAPSE_DAYS="90")
    t0 = 1_709_287_200_000
    shell.send(visitor="v", ts=t0, user_id="u1")
    shell.send(visitor="w", ts=t0, user_id="u1")
    device_records = [o for o in shell.raw if o.topic == "clickstream.identities"]
    shell.tick(t0 + 101 * 86_400_000)
    assert b"v" not in shell.visitors and b"w" not in shell.visitors
    gone = [o for o in shell.raw if o.topic == "clickstream.identities"][len(device_records) :]
    assert [orjson.loads(o.value) for o in gone] == [{"gone": "v"}, {"gone": "w"}]

    people: dict[str, bytes] = {}

    def feed(outputs) -> list[dict]:
        records = [
            Record("clickstream.identities", 0, i, o.key, o.value) for i, o in enumerate(outputs)
        ]
        result = shell.engine.link(records, people.get)
        for key, (_, value) in result.states.items():
            if value is None:
                people.pop(key.decode(), None)
            else:
                people[key.decode()] = value
        return [orjson.loads(o.value) for o in result.outputs]

    assert feed(device_records)[-1]["devices"] == 2
    assert feed(gone[:1])[-1]["devices"] == 1 and "u1" in people
    assert feed(gone[1:]) == [] and "u1" not in people
