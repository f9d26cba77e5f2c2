"""The processor's batch engine without a broker: ticks reach only the visitors that are
due, idle state expires after the TTL (after any lapse), and recovered visitors are
watched again."""

from __future__ import annotations

import itertools

import orjson
import pytest

from stream import config
from stream.journey import decode_state
from stream.processor.engine import Engine, Record
from tests.golden.script import event

pytestmark = pytest.mark.unit

MIN = 60_000
DAY = 86_400_000
T0 = 1_709_287_200_000


class Shell:
    """What the Faust shell does around the engine: a table, offsets, tick records."""

    def __init__(self, **env: str) -> None:
        self.engine = Engine(config.load(env))
        self.table: dict[str, bytes] = {}
        self.outputs: list[tuple[str, dict]] = []
        self.offsets = itertools.count()
        self.deleted: set[str] = set()

    def feed(self, *records: Record) -> None:
        result = self.engine.run(records, self.table.get)
        self.table.update(result.states)
        for visitor in result.deleted:
            self.table.pop(visitor, None)
        self.deleted |= result.deleted
        self.outputs += [(o.topic, orjson.loads(o.value)) for o in result.outputs]

    def send(self, **fields) -> None:
        e = event(message_id=f"m-{next(self.offsets)}", **fields)
        self.feed(Record("clickstream.events", 0, next(self.offsets), None, orjson.dumps(e)))

    def tick(self, watermark: int) -> None:
        value = orjson.dumps({"type": "tick", "watermark": watermark})
        self.feed(Record("clickstream.control", 0, next(self.offsets), b"tick", value))

    def of(self, topic: str) -> list[dict]:
        return [value for t, value in self.outputs if t == topic]


def test_a_tick_closes_only_the_sessions_that_are_due() -> None:
    shell = Shell()
    shell.send(visitor="early", ts=T0)
    shell.send(visitor="late", ts=T0 + 20 * MIN)
    shell.tick(T0 + 36 * MIN)
    closed = [s["anonymous_id"] for s in shell.of("journey.sessions") if s["closed"]]
    assert closed == ["early"]
    shell.tick(T0 + 56 * MIN)
    closed = [s["anonymous_id"] for s in shell.of("journey.sessions") if s["closed"]]
    assert closed == ["early", "late"]


def test_an_event_after_the_planned_look_postpones_the_close() -> None:
    shell = Shell()
    shell.send(visitor="v", ts=T0)
    shell.send(visitor="v", ts=T0 + 25 * MIN)
    shell.tick(T0 + 36 * MIN)  # the look planned by the first event finds a live session
    assert not [s for s in shell.of("journey.sessions") if s["closed"]]
    shell.tick(T0 + 61 * MIN)
    assert [s["anonymous_id"] for s in shell.of("journey.sessions") if s["closed"]] == ["v"]


def test_idle_state_expires_after_the_ttl_and_a_return_starts_afresh() -> None:
    shell = Shell(CLICKSTREAM_STATE_TTL_DAYS="100", CLICKSTREAM_LAPSE_DAYS="90")
    shell.send(visitor="v", ts=T0)
    shell.tick(T0 + DAY)
    assert "v" in shell.table
    shell.tick(T0 + 99 * DAY)
    assert "v" in shell.table
    shell.tick(T0 + 100 * DAY)
    assert "v" not in shell.table and shell.deleted == {"v"}
    assert not shell.engine.clocks[0].pending
    shell.send(visitor="v", ts=T0 + 101 * DAY)
    state = decode_state(shell.table["v"])
    assert state.first_seen == T0 + 101 * DAY and state.session_count == 1


def test_a_customer_lapses_before_the_state_expires() -> None:
    shell = Shell(CLICKSTREAM_STATE_TTL_DAYS="100", CLICKSTREAM_LAPSE_DAYS="90")
    shell.send(visitor="c", ts=T0)
    shell.send(
        visitor="c",
        ts=T0 + MIN,
        event="Order Completed",
        properties={"order_id": "o1", "revenue": 10.0},
    )
    shell.tick(T0 + DAY)
    shell.tick(T0 + 91 * DAY)
    assert [t["trigger"] for t in shell.of("journey.triggers")][-1] == "lapsed"
    assert decode_state(shell.table["c"]).stage == "lapsed"
    shell.tick(T0 + 101 * DAY)
    assert "c" not in shell.table


def test_expiry_and_a_new_event_in_one_batch_keep_the_new_state() -> None:
    shell = Shell(CLICKSTREAM_STATE_TTL_DAYS="100", CLICKSTREAM_LAPSE_DAYS="90")
    shell.send(visitor="v", ts=T0)
    shell.tick(T0 + DAY)
    tick = orjson.dumps({"type": "tick", "watermark": T0 + 100 * DAY})
    back = orjson.dumps(event(visitor="v", ts=T0 + 100 * DAY + 1, message_id="m-back"))
    shell.feed(
        Record("clickstream.control", 0, 1000, b"tick", tick),
        Record("clickstream.events", 0, 1001, None, back),
    )
    assert "v" in shell.table and "v" not in shell.deleted


def test_recovered_visitors_are_watched_again() -> None:
    first = Shell()
    first.send(visitor="v", ts=T0)
    second = Shell()
    second.table = dict(first.table)
    second.engine.index_visitor(0, "v", second.table["v"])
    second.tick(T0 + 36 * MIN)
    assert [s["anonymous_id"] for s in second.of("journey.sessions") if s["closed"]] == ["v"]


def test_a_state_ttl_shorter_than_the_lapse_wait_is_refused() -> None:
    with pytest.raises(config.SettingsError, match="CLICKSTREAM_STATE_TTL_DAYS"):
        config.load({"CLICKSTREAM_STATE_TTL_DAYS": "30"})
