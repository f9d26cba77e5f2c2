"""The processor's batch engine without a broker: ticks (the partition clock, arrival
time) reach only the visitors that are due, idle state expires after the TTL (after any
lapse), and recovered visitors are watched again."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from stream import compiled, config
from stream.journey import decode_state
from tests.support.engine_shell import Shell

pytestmark = pytest.mark.unit

MIN = 60_000
DAY = 86_400_000
T0 = 1_709_287_200_000


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
    assert b"v" in shell.visitors
    shell.tick(T0 + 99 * DAY)
    assert b"v" in shell.visitors
    shell.tick(T0 + 100 * DAY)
    assert "v" not in shell.visitors and shell.deleted == {"v"}
    assert not len(shell.engine.partitions[0].schedule)
    shell.send(visitor="v", ts=T0 + 101 * DAY)
    state = decode_state(shell.visitors[b"v"])
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
    assert decode_state(shell.visitors[b"c"]).stage == "lapsed"
    shell.tick(T0 + 101 * DAY)
    assert "c" not in shell.visitors


def test_expiry_and_a_new_event_in_one_batch_keep_the_new_state() -> None:
    shell = Shell(CLICKSTREAM_STATE_TTL_DAYS="100", CLICKSTREAM_LAPSE_DAYS="90")
    shell.send(visitor="v", ts=T0)
    shell.tick(T0 + DAY)
    shell.feed(
        shell.tick_record(T0 + 100 * DAY),
        shell.event_record(visitor="v", ts=T0 + 100 * DAY + 1),
    )
    # Expired, then back within the batch: one write, the new journey.
    assert decode_state(shell.visitors[b"v"]).first_seen == T0 + 100 * DAY + 1


def test_recovered_visitors_are_watched_again() -> None:
    first = Shell()
    first.send(visitor="v", ts=T0)
    second = Shell()
    second.visitors, second.rows = dict(first.visitors), dict(first.rows)
    second.tick(T0 + 36 * MIN)  # a new engine indexes the partition when it first sees it
    assert [s["anonymous_id"] for s in second.of("journey.sessions") if s["closed"]] == ["v"]


def test_a_state_ttl_shorter_than_the_lapse_wait_is_refused() -> None:
    with pytest.raises(config.SettingsError, match="CLICKSTREAM_STATE_TTL_DAYS"):
        config.load({"CLICKSTREAM_STATE_TTL_DAYS": "30"})


def test_a_replayed_tick_publishes_nothing_twice() -> None:
    shell = Shell()
    shell.send(visitor="v", ts=T0)
    tick = shell.tick_record(T0 + 1000)
    shell.feed(tick)
    published = len(shell.of("journey.metrics"))
    assert published == 1
    shell.send(visitor="w", ts=T0 + 1)  # a pending row again
    shell.feed(tick)  # the same tick read again after a crash: already applied
    assert len(shell.of("journey.metrics")) == published


@pytest.mark.skipif(
    compiled.STATUS.startswith("compiled"),
    reason="patches effects.record, which compiled callers do not look up (runs when pure)",
)
def test_an_event_that_fails_half_way_leaves_the_state_as_without_it(monkeypatch) -> None:
    """States change in place within a batch: a step that raises after changing some of
    it is undone (the state is rebuilt from the stored one and the batch's good steps),
    and the event is dead-lettered."""
    from stream.journey import effects

    record = effects.record

    def failing(state, session, event, ts):
        if event.get("message_id") == "bad":
            state.events += 1000  # a change already made when the failure comes
            raise ValueError("boom")
        return record(state, session, event, ts)

    def run(with_bad: bool) -> tuple:
        shell = Shell()
        shell.send(visitor="v", ts=T0)
        batch = [shell.event_record(visitor="v", ts=T0 + MIN)]
        if with_bad:
            batch.append(shell.event_record(visitor="v", ts=T0 + 2 * MIN, message_id="bad"))
        batch.append(shell.event_record(visitor="v", ts=T0 + 3 * MIN, message_id="good"))
        shell.feed(*batch)
        state = decode_state(shell.visitors[b"v"])
        state.offsets = {}
        return state, shell.of("clickstream.invalid")

    monkeypatch.setattr(effects, "record", failing)
    clean, _ = run(with_bad=False)
    rebuilt, invalid = run(with_bad=True)
    assert [i["stage"] for i in invalid] == ["processor"]
    assert "boom" in invalid[0]["reasons"][0]
    assert rebuilt == clean


@pytest.mark.parametrize("source", [None, 5, ["web"]])
def test_a_record_that_breaks_the_event_contract_never_fails_the_batch(source) -> None:
    """The collector always writes a str `source`; another writer might not. Its event is
    processed or dead-lettered, and the batch ends (its per-source counts, at the end,
    are outside the per-record guard: compiled code once raised there)."""
    shell = Shell()
    shell.feed(
        shell.event_record(visitor="v", ts=T0, source=source),
        shell.event_record(visitor="w", ts=T0),
    )
    assert b"w" in shell.visitors


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("device_type", 5, "Expected `str`, got `int` - at `$.device_type`"),
        ("ts", 1.5e12, "Expected `int`, got `float` - at `$.ts`"),
        ("ts", True, "Expected `int`, got `bool` - at `$.ts`"),
        ("is_bot", "no", "Expected `bool`, got `str` - at `$.is_bot`"),
        ("properties", [], "Expected `object`, got `array` - at `$.properties`"),
        ("url", None, "Expected `str`, got `null` - at `$.url`"),
    ],
)
def test_an_event_off_the_contract_is_dead_lettered_naming_its_field(field, value, reason):
    """Checked at the door, so the compiled core and the pure one agree (compiled code
    would raise somewhere inside; pure code would keep the wrong type in the state), and
    the visitor's state is untouched; the valid event beside it is processed."""
    shell = Shell()
    bad = shell.event_record(visitor="v", ts=T0)
    event = orjson.loads(bad.value)
    event[field] = value
    shell.feed(replace(bad, value=orjson.dumps(event)), shell.event_record(visitor="w", ts=T0))
    [invalid] = shell.of("clickstream.invalid")
    assert invalid["reasons"] == [f"processor: ValidationError: {reason}"]
    assert orjson.loads(invalid["payload"])[field] == value
    assert b"v" not in shell.visitors and b"w" in shell.visitors


def test_an_event_without_the_later_fields_is_still_processed() -> None:
    """Records older than a field lack it (the consent flags, for one); a field of the
    first contract may not be missing."""
    shell = Shell()
    old = shell.event_record(visitor="v", ts=T0)
    event = orjson.loads(old.value)
    for later in ("analytics_consent", "marketing_consent", "client_ts"):
        event.pop(later, None)
    shell.feed(replace(old, value=orjson.dumps(event)))
    assert shell.of("clickstream.invalid") == [] and b"v" in shell.visitors
    del event["click_id"]
    shell.feed(replace(old, offset=old.offset + 1, value=orjson.dumps(event)))
    [invalid] = shell.of("clickstream.invalid")
    assert invalid["reasons"] == [
        "processor: ValidationError: Object missing required field `click_id`"
    ]


def test_the_schedule_and_the_table_share_each_visitors_key() -> None:
    """One key object per visitor in state (memory per visitor, BENCHMARKS.md sixth
    session): the table's key is the schedule's, also after a tick takes a visitor out
    and plans it again, and after a restart."""
    shell = Shell()
    for n in range(20):
        shell.send(visitor=f"v{n}", ts=T0 + n * MIN)
    shell.send(visitor="v3", ts=T0 + 25 * MIN)

    def shared(s: Shell) -> bool:
        planned = s.engine.partitions[0].schedule.planned
        stored = {k: k for k in s.visitors}
        return len(planned) == len(stored) and all(stored[k] is k for k in planned)

    assert shared(shell)
    shell.tick(T0 + 40 * MIN)  # some closed, some out early and planned again
    assert shared(shell)
    second = Shell()
    second.visitors, second.rows = dict(shell.visitors), dict(shell.rows)
    second.tick(T0 + 41 * MIN)
    assert shared(second)
