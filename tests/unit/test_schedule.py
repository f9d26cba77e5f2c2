"""The look-up schedule: every visitor comes out at the first look at or after its
planned time, never later; far looks cost no object of their own."""

from __future__ import annotations

import random

import pytest

from stream.processor import schedule as schedule_module
from stream.processor.schedule import SHIFT, Schedule

pytestmark = pytest.mark.unit

T0 = 1_709_287_200_000
BUCKET = 1 << SHIFT


def drive(schedule: Schedule, looks: dict[bytes, int], clock: int) -> set[bytes]:
    """A tick as the engine does it: who comes out and is due is taken (and forgotten
    here); who comes out early is planned again at its look."""
    taken = set()
    for key in schedule.due(clock):
        if looks[key] <= clock:
            taken.add(key)
            del looks[key]
        else:
            schedule.plan(key, looks[key])
    return taken


@pytest.mark.parametrize("slack", [1024, 0])
@pytest.mark.parametrize("seed", range(30))
def test_a_tick_takes_exactly_the_visitors_due(seed: int, slack: int, monkeypatch) -> None:
    """Against the truth (each visitor's look): looks move later and earlier, visitors
    come and go, ticks come at uneven steps; each tick takes exactly those due. (Slack
    0: compacted all the time.)"""
    monkeypatch.setattr(schedule_module, "SLACK", slack)
    rng = random.Random(seed)
    schedule, looks = Schedule(), {}
    clock = T0
    for _ in range(300):
        for _ in range(rng.randrange(0, 40)):
            key = f"v{rng.randrange(200)}".encode()
            if key in looks and rng.random() < 0.1:
                del looks[key]  # the state is gone: the engine plans None
                schedule.plan(key, None)
                continue
            span = rng.choice((1_000, BUCKET, 30 * BUCKET, 3_000 * BUCKET))
            looks[key] = max(clock - 5_000, clock + rng.randrange(-2_000, span))
            schedule.plan(key, looks[key])
        clock += rng.choice((0, 1, 999, 1_000, BUCKET, 5 * BUCKET, 400 * BUCKET))
        expected = {k for k, at in looks.items() if at <= clock}
        assert drive(schedule, looks, clock) == expected
        assert len(schedule) == len(looks)


def test_a_restarted_schedule_takes_the_same_visitors() -> None:
    """Rebuilt from the looks alone (as from the state after a restart)."""
    rng = random.Random(7)
    looks = {f"v{i}".encode(): T0 + rng.randrange(100 * BUCKET) for i in range(2000)}
    running, rebuilt = Schedule(), Schedule()
    for key, at in looks.items():
        running.plan(key, at)
    live = dict(looks)
    clock = T0
    for step in range(1, 300):
        clock += rng.randrange(2 * BUCKET)
        if step == 40:  # the restart
            for key, at in live.items():
                rebuilt.plan(key, at)
            rebuilt_live = dict(live)
        taken = drive(running, live, clock)
        if step >= 40:
            assert drive(rebuilt, rebuilt_live, clock) == taken


def test_a_far_look_comes_out_at_most_a_bucket_early_and_holds_no_int_of_its_own() -> None:
    schedule = Schedule()
    at = T0 + 10 * BUCKET + 123
    for i in range(100):
        schedule.plan(f"v{i}".encode(), at + i)
    assert len({id(v) for v in schedule.planned.values()}) == 1  # the bucket's start
    assert schedule.due(at - BUCKET) == []
    early = schedule.due(at)  # the bucket reached: out, to be checked
    assert len(early) == 100
    for key in early:  # planned again exactly: they come out when due, not before
        schedule.plan(key, at + int(key[1:]))
    assert schedule.due(at + 49) == [f"v{i}".encode() for i in range(50)]
    assert len(schedule) == 50


def test_a_look_planned_earlier_stays_and_none_forgets() -> None:
    schedule = Schedule()
    schedule.plan(b"v", T0 + 5 * BUCKET)
    schedule.plan(b"v", T0 + 9 * BUCKET)  # later: the earlier look stays
    schedule.plan(b"w", T0)
    schedule.plan(b"w", None)
    assert schedule.due(T0 + 5 * BUCKET) == [b"v"]
    assert len(schedule) == 0


def test_stale_entries_are_compacted() -> None:
    schedule = Schedule()
    for n in range(5000, 0, -1):  # each re-plan earlier leaves a stale entry
        schedule.plan(b"v", T0 + n * BUCKET)
        schedule.plan(b"w", T0 + n * 7)
    assert schedule.entries <= 2 * len(schedule) + 1024 + 1
    assert sorted(schedule.due(T0 + BUCKET)) == [b"v", b"w"]
