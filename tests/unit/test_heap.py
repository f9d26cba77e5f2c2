"""When the processor gives its freed C heap back to the OS."""

from __future__ import annotations

import pytest

from stream.processor import heap
from stream.processor.heap import TrimPlan

pytestmark = pytest.mark.unit


def test_a_trim_when_the_batches_pause_after_enough_records() -> None:
    plan = TrimPlan()
    assert not plan.due(3000, 1.0)  # too few since the last trim
    assert not plan.due(6000, 2.0)  # enough, but still running
    assert plan.due(6050, 3.0)  # paused: only ticks
    assert not plan.due(6060, 4.0)  # nothing new to give back
    assert not plan.due(6070, 60.0)


def test_a_trim_every_ten_seconds_while_batches_run() -> None:
    plan = TrimPlan(at=0.0)
    records, trims = 0, []
    for second in range(1, 31):
        records += 3000
        if plan.due(records, float(second)):
            trims.append(second)
    assert trims == [10, 20, 30]


def test_glibc_trim_is_found_here() -> None:
    trim = heap.malloc_trim()
    assert trim is not None and trim(0) in (0, 1)
