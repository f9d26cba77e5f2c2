"""The batch step checks a partition's first record against the log's first offset when
the group has no commit for it, and seeks back to it (positions.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from stream.processor.step import Step

pytestmark = pytest.mark.unit

TP0 = TopicPartition("clickstream.identities", 0)
TP1 = TopicPartition("clickstream.identities", 1)


class FakeConsumer:
    def __init__(self, starts=None, committed=None, fail=False):
        self.starts = starts or {}
        self._committed_offset = committed or {}
        self._read_offset = {}
        self.fail = fail
        self.asked: list[tuple] = []
        self.sought: list[dict] = []

    def assignment(self):
        return {TP0, TP1}

    async def earliest_offsets(self, *tps):
        self.asked.append(tps)
        if self.fail:
            raise OSError("no answer")
        return {tp: self.starts[tp] for tp in tps}

    async def seek_wait(self, seeks):
        self.sought.append(dict(seeks))


def step(consumer) -> Step:
    return Step(SimpleNamespace(consumer=consumer), "clickstream.identities", {}, None)


def pairs(*items):
    """(tp, records) runs of one record each, as Step.admit takes them."""
    return [(tp, [SimpleNamespace(offset=offset)]) for tp, offset in items]


def test_a_first_record_after_the_logs_start_is_sought_back_not_taken() -> None:
    consumer = FakeConsumer(starts={TP0: 0, TP1: 0})
    s = step(consumer)
    # Offset 0 of TP0 (a tombstone, at the restart) never reached the step.
    admitted = asyncio.run(s.admit(pairs((TP0, 1), (TP1, 0))))
    assert [(tp.partition, r.offset) for tp, r in admitted] == [(1, 0)]
    assert consumer.sought == [{TP0: 0}]
    admitted = asyncio.run(s.admit(pairs((TP0, 0), (TP0, 1))))
    assert [(tp.partition, r.offset) for tp, r in admitted] == [(0, 0), (0, 1)]
    # Asked once per partition, and again for the partition sought back only.
    assert sorted(tp.partition for tps in consumer.asked for tp in tps) == [0, 0, 1]


def test_a_committed_partition_needs_no_start() -> None:
    consumer = FakeConsumer(committed={TP0: 4, TP1: 0})
    admitted = asyncio.run(step(consumer).admit(pairs((TP0, 4))))
    assert len(admitted) == 1 and consumer.asked == [] and consumer.sought == []


def test_without_an_answer_the_first_record_is_taken_as_before() -> None:
    consumer = FakeConsumer(fail=True)
    admitted = asyncio.run(step(consumer).admit(pairs((TP0, 3))))
    assert len(admitted) == 1 and consumer.sought == []
