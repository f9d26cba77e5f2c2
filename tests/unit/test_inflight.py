"""A batch still being finished lends its state to the next batch, never an older one."""

from __future__ import annotations

import pytest

from stream.processor.inflight import InFlight

pytestmark = pytest.mark.unit


def test_the_newest_in_flight_value_wins_until_it_is_written() -> None:
    table = {b"a": b"stored"}
    f = InFlight()
    f.put(1, {b"a": (0, b"one"), b"b": (1, None)})
    f.put(2, {b"a": (0, b"two")})
    assert f.get(b"a", table.get) == b"two" and f.get(b"b", table.get) is None
    assert f.get(b"c", table.get) is None and f.get(b"a", {}.get) == b"two"
    f.release(1, [b"a", b"b"])  # batch 1 written: batch 2's value of a stays
    assert f.get(b"a", table.get) == b"two" and f.get(b"b", table.get) is None
    assert len(f) == 1
    table[b"a"] = b"two"
    f.release(2, [b"a"])
    assert f.get(b"a", table.get) == b"two" and len(f) == 0


def test_a_revoked_partition_lends_nothing() -> None:
    f = InFlight()
    f.put(1, {b"a": (0, b"one"), b"b": (1, b"two")})
    f.forget([1])
    assert f.get(b"b", {b"b": b"stored"}.get) == b"stored" and f.get(b"a", {}.get) == b"one"
