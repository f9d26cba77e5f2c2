"""The ClickHouse writer: one batch of rows into one table, column-oriented.

An insert either succeeds, or fails in one of two ways (`classify`):

* content: ClickHouse (or the driver, encoding a value for its column type) refuses
  the data itself. The batch is split in halves until the rows at fault are alone;
  the rest is written and the rejected rows are returned with ClickHouse's message,
  for the caller to write to invalid_events. Rows written twice on the way (a half
  that went in before its sibling failed) collapse in ReplacingMergeTree.
* unavailable: anything else (connection refused, timeouts, engine errors not about
  the data). `Unavailable` is raised and the caller backs off and retries the batch.

The client is synchronous (chdb's backend is), so `write` runs it in a thread.
`Fault` lets tests, and operators rehearsing an outage, make ClickHouse look down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.exceptions import DatabaseError, DataError

from stream import telemetry
from stream.sink.rows import Table

log = logging.getLogger(__name__)

FAULT_ENV = "CLICKSTREAM_SINK_FAULT"
INSERT_SETTINGS = {"async_insert": 0}

# ClickHouse error codes that are about the data, not about the server.
CONTENT_ERRORS = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        128,  # TOO_LARGE_ARRAY_SIZE
        131,  # TOO_LARGE_STRING_SIZE
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        248,  # INVALID_PARTITION_VALUE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        346,  # CANNOT_CONVERT_CHARSET
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        376,  # CANNOT_PARSE_UUID
        407,  # DECIMAL_OVERFLOW
        441,  # CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING
        467,  # CANNOT_PARSE_BOOL
        469,  # VIOLATED_CONSTRAINT
        565,  # TOO_MANY_PARTITIONS
        632,  # UNEXPECTED_DATA_AFTER_PARSED_VALUE
        675,  # CANNOT_PARSE_IPV4
        676,  # CANNOT_PARSE_IPV6
    }
)
TOO_MANY_PARTS = 252  # content only for "Too many partitions for single INSERT block"

CONTENT = "content"
UNAVAILABLE = "unavailable"


class Unavailable(Exception):
    """ClickHouse cannot take the insert now; retry the same batch later."""


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int  # position in the batch
    error: str  # ClickHouse's (or the driver's) message


def classify(exc: BaseException) -> str:
    """CONTENT when the data is at fault, else UNAVAILABLE."""
    if isinstance(exc, DataError | TypeError | ValueError | OverflowError | struct.error):
        return CONTENT  # the driver could not encode a value for its column type
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        if code in CONTENT_ERRORS:
            return CONTENT
        if code == TOO_MANY_PARTS and "single INSERT block" in str(exc):
            return CONTENT
    return UNAVAILABLE


def error_text(exc: BaseException, limit: int = 1000) -> str:
    """One line of the error, without the driver's stack trace."""
    message = " ".join(str(exc).split())
    cut = message.find("Stack trace")
    if cut > 0:
        message = message[:cut].rstrip(" .:")
    return message[:limit] or type(exc).__name__


class Fault:
    """Outage switch: while on, every insert fails as if ClickHouse were down.

    From the environment: CLICKSTREAM_SINK_FAULT=unavailable (always) or
    unavailable:SECONDS (for SECONDS from the first insert attempt).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._on = False
        self._until = 0.0
        self._armed_seconds: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Fault:
        fault = cls()
        raw = (os.environ if environ is None else environ).get(FAULT_ENV, "").strip()
        if not raw:
            return fault
        kind, _, seconds = raw.partition(":")
        if kind != "unavailable":
            raise ValueError(f"{FAULT_ENV}={raw!r}: use unavailable or unavailable:SECONDS")
        if seconds:
            fault._armed_seconds = float(seconds)
        else:
            fault._on = True
        return fault

    def set_unavailable(self, on: bool) -> None:
        with self._lock:
            self._on = on
            if not on:
                self._until = 0.0
                self._armed_seconds = None

    def outage(self, seconds: float) -> None:
        """Unavailable for `seconds` from now."""
        with self._lock:
            self._until = time.monotonic() + seconds

    def check(self) -> None:
        with self._lock:
            if self._armed_seconds is not None:
                self._until = time.monotonic() + self._armed_seconds
                self._armed_seconds = None
            if self._on or time.monotonic() < self._until:
                raise Unavailable("fault injected: ClickHouse unavailable")


class Writer:
    """Writes batches to `<database>.<table>`; safe to call from one thread at a time."""

    def __init__(self, client, database: str, fault: Fault | None = None):
        self.client = client
        self.database = database
        self.fault = fault or Fault()
        self._types: dict[str, Sequence] = {}

    async def write(self, table: Table, rows: list[tuple]) -> list[Rejected]:
        return await asyncio.to_thread(self.insert, table, rows)

    def insert(self, table: Table, rows: list[tuple]) -> list[Rejected]:
        """Insert `rows`; return the rows refused for their content; raise Unavailable."""
        if not rows:
            return []
        try:
            self._insert(table, rows)
            return []
        except Unavailable:
            telemetry.SINK_FAILURES.labels(table.name, UNAVAILABLE).inc()
            raise
        except Exception as exc:
            kind = classify(exc)
            telemetry.SINK_FAILURES.labels(table.name, kind).inc()
            if kind == UNAVAILABLE:
                raise Unavailable(error_text(exc)) from exc
            if len(rows) == 1:
                telemetry.SINK_REJECTED_ROWS.labels(table.name).inc()
                return [Rejected(0, error_text(exc))]
        middle = len(rows) // 2
        left = self.insert(table, rows[:middle])
        right = self.insert(table, rows[middle:])
        return left + [Rejected(r.index + middle, r.error) for r in right]

    def _insert(self, table: Table, rows: list[tuple]) -> None:
        self.fault.check()
        name = f"{self.database}.{table.name}"
        types = self._types.get(table.name)
        if types is None:
            context = self.client.create_insert_context(name, column_names=list(table.columns))
            types = self._types[table.name] = context.column_types
        columns = list(zip(*rows, strict=True))
        started = time.perf_counter()
        self.client.insert(
            name,
            columns,
            column_names=table.columns,
            column_types=types,
            column_oriented=True,
            settings=INSERT_SETTINGS,
        )
        telemetry.SINK_INSERT_LATENCY.labels(table.name).observe(time.perf_counter() - started)
        telemetry.SINK_BATCH_ROWS.labels(table.name).observe(len(rows))
        telemetry.SINK_ROWS.labels(table.name).inc(len(rows))
