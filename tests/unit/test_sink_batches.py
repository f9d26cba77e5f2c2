"""batches.py: when batches are due, and which offsets may be committed."""

from __future__ import annotations

import pytest
from aiokafka.structs import TopicPartition

from stream.sink import rows
from stream.sink.batches import Batches
from stream.sink.rows import Record

pytestmark = pytest.mark.unit

EVENTS_TP = TopicPartition("clickstream.events", 0)
SESSIONS_TP = TopicPartition("journey.sessions", 1)


def read(batches: Batches, table: rows.Table, tp: TopicPartition, offsets, now=0.0):
    for offset in offsets:
        batches.add(table, ("row",), Record(tp.topic, tp.partition, offset, 0), now=now)
    batches.read_up_to(tp, offsets[-1] + 1)


def test_a_batch_is_due_when_full_or_old():
    batches = Batches(max_rows=3, max_seconds=1.0)
    read(batches, rows.EVENTS, EVENTS_TP, [0, 1], now=10.0)
    assert batches.due(now=10.5) == []
    assert batches.seconds_to_next_due(now=10.5) == pytest.approx(0.5)
    assert [b.table for b in batches.due(now=11.0)] == [rows.EVENTS]
    read(batches, rows.EVENTS, EVENTS_TP, [2], now=10.6)
    assert len(batches.due(now=10.6)[0]) == 3


def test_caught_up_a_batch_is_due_at_the_idle_age():
    batches = Batches(max_rows=1000, max_seconds=1.0)
    read(batches, rows.EVENTS, EVENTS_TP, [0, 1], now=10.0)
    assert batches.due(now=10.2, idle_seconds=0.25) == []
    assert batches.seconds_to_next_due(now=10.2, idle_seconds=0.25) == pytest.approx(0.05)
    assert [b.table for b in batches.due(now=10.25, idle_seconds=0.25)] == [rows.EVENTS]
    assert batches.due(now=10.25) == []  # not caught up: the batch time rules


def test_nothing_is_committable_before_it_is_written():
    batches = Batches(max_rows=10, max_seconds=1.0)
    read(batches, rows.EVENTS, EVENTS_TP, [5, 6, 7])
    assert batches.committable() == {EVENTS_TP: 5}  # where the group already is
    batch = batches.take(batches.open["events"])
    read(batches, rows.EVENTS, EVENTS_TP, [8, 9])  # a new batch while the first is written
    assert batches.committable() == {EVENTS_TP: 5}
    batches.written(batch)
    assert batches.committable() == {EVENTS_TP: 8}
    batches.mark_committed({EVENTS_TP: 8})
    assert batches.committable() == {}
    batches.written(batches.take(batches.open["events"]))
    assert batches.committable() == {EVENTS_TP: 10}


def test_an_invalid_row_holds_back_its_partition_until_written():
    batches = Batches(max_rows=10, max_seconds=1.0)
    read(batches, rows.EVENTS, EVENTS_TP, [0, 1])
    batches.add(rows.INVALID_EVENTS, ("bad",), Record(EVENTS_TP.topic, 0, 2, 0))
    read(batches, rows.EVENTS, EVENTS_TP, [3])
    batches.written(batches.take(batches.open["events"]))
    assert batches.committable() == {EVENTS_TP: 2}
    # a row ClickHouse refused, from an earlier offset, joins the open invalid batch
    batches.add(rows.INVALID_EVENTS, ("refused",), Record(EVENTS_TP.topic, 0, 1, 0))
    assert batches.committable() == {EVENTS_TP: 1}
    batches.written(batches.take(batches.open["invalid_events"]))
    assert batches.committable() == {EVENTS_TP: 4}


def test_partitions_are_independent():
    batches = Batches(max_rows=10, max_seconds=1.0)
    read(batches, rows.EVENTS, EVENTS_TP, [0, 1])
    read(batches, rows.SESSIONS, SESSIONS_TP, [40])
    batches.written(batches.take(batches.open["sessions"]))
    assert batches.committable() == {EVENTS_TP: 0, SESSIONS_TP: 41}


def test_reset_forgets_everything():
    batches = Batches(max_rows=10, max_seconds=1.0)
    read(batches, rows.EVENTS, EVENTS_TP, [0, 1])
    batches.take_all()
    batches.reset()
    assert batches.pending_rows() == 0 and batches.committable() == {}


def test_caught_up_a_table_with_a_floor_waits_for_it():
    """The processor's small outputs are written at their floor, the events at the idle age."""
    batches = Batches(max_rows=1000, max_seconds=1.0, idle_floors={"sessions": 0.8})
    read(batches, rows.EVENTS, EVENTS_TP, [0, 1], now=10.0)
    read(batches, rows.SESSIONS, SESSIONS_TP, [40], now=10.0)
    assert [b.table for b in batches.due(now=10.25, idle_seconds=0.25)] == [rows.EVENTS]
    batches.take(batches.open["events"])
    assert batches.seconds_to_next_due(now=10.25, idle_seconds=0.25) == pytest.approx(0.55)
    assert batches.due(now=10.7, idle_seconds=0.25) == []
    assert [b.table for b in batches.due(now=10.8, idle_seconds=0.25)] == [rows.SESSIONS]


def test_a_floor_never_holds_a_batch_past_the_batch_time_or_when_full():
    batches = Batches(max_rows=3, max_seconds=1.0, idle_floors={"sessions": 5.0})
    read(batches, rows.SESSIONS, SESSIONS_TP, [40], now=10.0)
    assert batches.seconds_to_next_due(now=10.0, idle_seconds=0.25) == pytest.approx(1.0)
    assert [b.table for b in batches.due(now=11.0, idle_seconds=0.25)] == [rows.SESSIONS]
    assert batches.due(now=10.5) == []  # not caught up: the batch time, as for any table
    read(batches, rows.SESSIONS, SESSIONS_TP, [41, 42], now=10.5)
    assert [b.table for b in batches.due(now=10.5, idle_seconds=0.25)] == [rows.SESSIONS]


def test_a_floor_below_the_idle_age_changes_nothing():
    batches = Batches(max_rows=1000, max_seconds=1.0, idle_floors={"sessions": 0.1})
    read(batches, rows.SESSIONS, SESSIONS_TP, [40], now=10.0)
    assert batches.due(now=10.2, idle_seconds=0.25) == []
    assert [b.table for b in batches.due(now=10.25, idle_seconds=0.25)] == [rows.SESSIONS]


def test_the_processor_outputs_get_the_journey_floor_and_the_events_none():
    from stream.config import Settings
    from stream.sink.consumer import idle_floors

    settings = Settings(sink_journey_flush_seconds=0.7)
    floors = idle_floors(rows.routes(settings), settings)
    assert "events" not in floors and "invalid_events" not in floors
    assert floors["sessions"] == floors["stage_transitions"] == floors["journey_metrics_1m"] == 0.7


def test_caught_up_the_events_go_first_and_one_floored_batch_at_a_time():
    floors = {"sessions": 0.5, "visitors": 0.5}
    batches = Batches(max_rows=3, max_seconds=1.0, idle_floors=floors)
    visitors_tp = TopicPartition("journey.visitors", 0)
    read(batches, rows.SESSIONS, SESSIONS_TP, [40], now=10.0)
    read(batches, rows.VISITORS, visitors_tp, [7], now=9.9)
    read(batches, rows.EVENTS, EVENTS_TP, [0], now=10.2)
    due = batches.due(now=10.6, idle_seconds=0.25)
    assert [b.table for b in due] == [rows.EVENTS, rows.VISITORS]  # the oldest floored one
    batches.take(due[0]), batches.take(due[1])
    assert [b.table for b in batches.due(now=10.6, idle_seconds=0.25)] == [rows.SESSIONS]
    # full, or max_seconds old: no holding back
    read(batches, rows.VISITORS, visitors_tp, [8, 9, 10], now=10.6)  # full
    assert [b.table for b in batches.due(now=10.6, idle_seconds=0.25)] == [
        rows.VISITORS,
        rows.SESSIONS,  # the one floored batch of this write
    ]
    batches.idle_floors["triggers"] = 0.5
    read(batches, rows.TRIGGERS, TopicPartition("journey.triggers", 0), [1], now=10.6)
    # sessions is 1 s old: no longer held back; triggers is the one floored batch
    assert [b.table for b in batches.due(now=11.15, idle_seconds=0.25)] == [
        rows.SESSIONS,
        rows.VISITORS,
        rows.TRIGGERS,
    ]
    assert (
        len(batches.due(now=11.15)) == 2
    )  # not caught up: the batch time (triggers is 0.55 s old)
