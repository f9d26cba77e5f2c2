"""The agent applies exactly the next record of each partition, or seeks back to it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from stream.processor.positions import GIVE_UP_SECONDS, Positions, SkippedRecords, batch_offsets

pytestmark = pytest.mark.unit

TP0 = ("clickstream.events", 0)
TP1 = ("clickstream.events", 1)


def ev(tp, offset):
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))


def offsets(events):
    return [(e.message.tp[1], e.message.offset) for e in events]


def test_contiguous_records_pass_and_the_first_is_taken_as_is() -> None:
    p = Positions()
    keep, seeks = p.admit([ev(TP0, 7), ev(TP0, 8), ev(TP1, 0)])
    assert offsets(keep) == [(0, 7), (0, 8), (1, 0)] and seeks == {}
    assert batch_offsets(keep) == {TP0: 9, TP1: 1}


def test_a_jump_drops_the_rest_of_the_partition_and_seeks_back_once() -> None:
    p = Positions()
    p.admit([ev(TP0, 0), ev(TP0, 1)], now=0)
    keep, seeks = p.admit([ev(TP0, 150), ev(TP1, 0), ev(TP0, 151)], now=1)
    assert offsets(keep) == [(1, 0)] and seeks == {TP0: 2}
    keep, seeks = p.admit([ev(TP0, 152)], now=2)  # still buffered before the seek
    assert keep == [] and seeks == {}
    keep, seeks = p.admit([ev(TP0, 2), ev(TP0, 3)], now=3)
    assert offsets(keep) == [(0, 2), (0, 3)] and seeks == {}


def test_re_reads_are_skipped() -> None:
    p = Positions()
    p.admit([ev(TP0, 0), ev(TP0, 1), ev(TP0, 2)])
    keep, _ = p.admit([ev(TP0, 1), ev(TP0, 2), ev(TP0, 3)])
    assert offsets(keep) == [(0, 3)]


def test_a_jump_to_the_group_commit_is_no_gap() -> None:
    committed = {TP0: 500}
    p = Positions(committed.get)
    p.admit([ev(TP0, 0)])
    keep, seeks = p.admit([ev(TP0, 500)])  # another worker applied 1..499 and committed
    assert offsets(keep) == [(0, 500)] and seeks == {}


def test_a_seek_that_never_brings_the_offset_back_stops_the_worker() -> None:
    p = Positions()
    p.admit([ev(TP0, 0)], now=0)
    assert p.admit([ev(TP0, 10)], now=1)[1] == {TP0: 1}
    assert p.admit([ev(TP0, 10)], now=2) == ([], {})
    with pytest.raises(SkippedRecords, match="stopping rather than skip"):
        p.admit([ev(TP0, 10)], now=2 + GIVE_UP_SECONDS)


def test_the_first_record_is_checked_against_the_groups_commit() -> None:
    p = Positions(committed=lambda tp: 5)
    keep, seeks = p.admit([ev(TP0, 3), ev(TP0, 7)], now=0)
    assert keep == [] and seeks == {TP0: 5}  # 3: applied before; 7: 5 and 6 missing


def test_a_revoked_partition_is_forgotten_and_others_are_left() -> None:
    p = Positions()
    p.admit([ev(TP0, 0)], now=0)
    p.forget([TP0])
    assert TP0 not in p.next
    keep, _ = p.admit([ev(TP0, 1)], now=1, assigned=set())
    assert keep == []


def test_a_seek_is_issued_again_until_its_records_come() -> None:
    p = Positions()
    p.admit([ev(TP0, 0)], now=0)
    assert p.admit([ev(TP0, 10)], now=1)[1] == {TP0: 1}
    assert p.reseeks(now=1.5) == {}
    assert p.reseeks(now=2.0) == {TP0: 1}
    assert p.reseeks(now=2.5) == {}
    p.admit([ev(TP0, 1)], now=3)
    assert p.reseeks(now=10) == {}


def test_a_partition_with_records_waiting_and_none_applied_is_sought() -> None:
    committed = {TP1: 40}
    p = Positions(committed.get)
    p.admit([ev(TP0, 0)], now=0)
    ends = {TP0: 100, TP1: 90}
    assert p.stalled(ends, now=1) == {}  # first seen: it gets its time
    p.admit([ev(TP0, 1)], now=4)
    assert p.stalled(ends, now=6.5) == {TP1: 40}  # nothing of TP1 ever came
    assert p.stalled(ends, now=7) == {}
    assert p.stalled(ends, now=9.5) == {TP0: 2}  # TP0 stopped at 2 of 100
    assert p.stalled({TP0: 2}, now=30) == {}  # caught up is not stalled


def test_with_no_commit_the_first_record_must_be_the_logs_first() -> None:
    # Faust's stream queues can lose the first records fetched after a rebalance: a
    # later record taken as the first would skip them for good (an erasure's tombstone
    # was lost so at a restart). With the log's start known, they are sought back.
    p = Positions(start={TP0: 0}.get)
    keep, seeks = p.admit([ev(TP0, 1), ev(TP1, 5)], now=0)
    assert offsets(keep) == [(1, 5)] and seeks == {TP0: 0}  # TP1's start unknown: as is
    keep, seeks = p.admit([ev(TP0, 0), ev(TP0, 1)], now=1)
    assert offsets(keep) == [(0, 0), (0, 1)] and seeks == {}


def test_the_groups_commit_comes_before_the_logs_start() -> None:
    p = Positions(committed={TP0: 7}.get, start={TP0: 0}.get)
    keep, seeks = p.admit([ev(TP0, 7)], now=0)
    assert offsets(keep) == [(0, 7)] and seeks == {}


def test_a_stalled_partition_without_commit_is_sought_to_the_logs_start() -> None:
    p = Positions(start={TP0: 30}.get)
    assert p.stalled({TP0: 40}, now=0) == {}
    assert p.stalled({TP0: 40}, now=6) == {TP0: 30}


@pytest.mark.parametrize("seed", range(30))
def test_runs_are_admitted_as_record_by_record(seed) -> None:
    """admit_runs over a fetch's (tp, records) runs (in order, with re-reads, jumps and
    commits among them): the same pairs, seeks and positions as admit over the records."""
    import random

    rng = random.Random(seed)
    commits: dict = {}
    starts = {TP0: 0, TP1: None}
    runs_p = Positions(commits.get, starts.get)
    flat_p = Positions(commits.get, starts.get)
    heads = {TP0: 0, TP1: 0}
    for step in range(40):
        runs = []
        for _ in range(rng.randint(0, 6)):
            tp, records = rng.choice([TP0, TP1]), []
            for _ in range(rng.randint(0, 8)):
                r = rng.random()
                if r < 0.85:
                    heads[tp] += 1
                elif r < 0.92:
                    heads[tp] = max(0, heads[tp] - rng.randint(1, 5))
                else:
                    heads[tp] += rng.randint(2, 9)
                records.append(SimpleNamespace(offset=heads[tp]))
            runs.append((tp, records))
        if rng.random() < 0.2:
            tp = rng.choice([TP0, TP1])
            commits[tp] = heads[tp] + rng.randint(-3, 3)
        assigned = {TP0, TP1} if rng.random() < 0.8 else {TP0}
        now = step * 0.5
        got = runs_p.admit_runs(runs, now=now, assigned=assigned)
        flat = [(tp, r) for tp, records in runs for r in records]
        want = flat_p.admit(flat, now=now, assigned=assigned, at=lambda p: (p[0], p[1].offset))
        assert got[0] == want[0] and got[1] == want[1]
        assert (runs_p.next, runs_p.seeking, runs_p.sought, runs_p.moved) == (
            flat_p.next,
            flat_p.seeking,
            flat_p.sought,
            flat_p.moved,
        )
