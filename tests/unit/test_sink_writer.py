"""writer.py: error classes, the bisection that isolates refused rows, the fault switch,
and the backoff schedule (a stand-in client here; the real engine is in integration)."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from stream.sink import rows
from stream.sink.consumer import backoff_delay
from stream.sink.writer import (
    CONTENT,
    UNAVAILABLE,
    Fault,
    Unavailable,
    Writer,
    classify,
    error_text,
)

pytestmark = pytest.mark.unit


class Context:
    column_types = ("types",)


class RefusingClient:
    """Refuses any insert holding a row whose first value is 'bad'; records inserts."""

    def __init__(self, down: bool = False):
        self.down = down
        self.inserted: list[list] = []
        self.calls = 0

    def create_insert_context(self, table, column_names):
        return Context()

    def insert(self, table, columns, **kwargs):
        self.calls += 1
        if self.down:
            raise OperationalError("Connection refused")
        if "bad" in columns[0]:
            raise DatabaseError(
                "Code: 321. Value out of range. (VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE)", code=321
            )
        self.inserted.extend(columns[0])


TABLE = rows.Table("t", ("a", "b"), lambda r, o: ())


def test_classify():
    assert classify(DataError("could not encode")) == CONTENT
    assert classify(DatabaseError("x", code=469)) == CONTENT
    assert (
        classify(DatabaseError("Too many partitions for single INSERT block", code=252)) == CONTENT
    )
    assert classify(DatabaseError("Too many parts (300)", code=252)) == UNAVAILABLE
    assert classify(DatabaseError("Memory limit exceeded", code=241)) == UNAVAILABLE
    assert classify(OperationalError("Connection refused")) == UNAVAILABLE
    assert classify(ConnectionResetError()) == UNAVAILABLE


def test_bisection_isolates_the_refused_rows_and_writes_the_rest():
    client = RefusingClient()
    batch = [(f"ok{i}", i) for i in range(10)]
    batch[3] = ("bad", 3)
    batch[8] = ("bad", 8)
    rejected = Writer(client, "db").insert(TABLE, batch)
    assert [r.index for r in rejected] == [3, 8]
    assert "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE" in rejected[0].error
    assert sorted(client.inserted) == sorted(v for v, _ in batch if v != "bad")


def test_an_unavailable_server_raises_without_bisecting():
    client = RefusingClient(down=True)
    with pytest.raises(Unavailable, match="Connection refused"):
        Writer(client, "db").insert(TABLE, [("ok", 1)] * 100)
    assert client.calls == 1


def test_the_fault_switch():
    client = RefusingClient()
    writer = Writer(client, "db")
    writer.fault.set_unavailable(True)
    with pytest.raises(Unavailable, match="fault injected"):
        writer.insert(TABLE, [("ok", 1)])
    writer.fault.set_unavailable(False)
    assert writer.insert(TABLE, [("ok", 1)]) == []
    writer.fault.outage(60)
    with pytest.raises(Unavailable):
        writer.insert(TABLE, [("ok", 1)])


def test_the_fault_from_the_environment():
    assert Fault.from_env({})._on is False
    assert Fault.from_env({"CLICKSTREAM_SINK_FAULT": "unavailable"})._on is True
    armed = Fault.from_env({"CLICKSTREAM_SINK_FAULT": "unavailable:30"})
    with pytest.raises(Unavailable):
        armed.check()  # the outage starts at the first attempt
    with pytest.raises(ValueError):
        Fault.from_env({"CLICKSTREAM_SINK_FAULT": "slow"})


def test_backoff_doubles_from_a_tenth_to_thirty_seconds():
    assert [backoff_delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert backoff_delay(9) == 25.6 and backoff_delay(10) == 30.0 and backoff_delay(50) == 30.0


def test_error_text_is_one_line_without_the_trace():
    exc = DatabaseError("Code: 6. Cannot parse\n  input. Stack trace:\n0. foo\n1. bar", code=6)
    assert error_text(exc) == "Code: 6. Cannot parse input"
