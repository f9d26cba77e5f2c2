"""Per-table batches and the offsets they hold back: pure bookkeeping, no I/O.

Rows collect per table until a batch holds `max_rows` or its first row is
`max_seconds` old; when the reader has caught up with its topics, once it is the idle
age old, or, for a table in `idle_floors`, that table's floor if it is later (the
processor's small outputs: every insert costs the engine a new part, whatever its size,
so these are written less often than the events). Offsets travel with the rows: a batch
remembers, for each partition, the first offset it holds, and `committable()` gives,
per partition, the highest offset such that every record below it is in ClickHouse:

    committable(p) = min(consumed(p), first offset of p in any unwritten batch)

where consumed(p) is the offset after the last record read from p. A record that
became an invalid_events row is held back the same way by the invalid batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import TopicPartition

from stream.sink.rows import Origin, Table


@dataclass(slots=True)
class Batch:
    table: Table
    started: float  # monotonic time of the first row
    rows: list[tuple] = field(default_factory=list)
    origins: list[Any] = field(default_factory=list)  # parallel to rows: Origin with .value
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


class Batches:
    def __init__(
        self, max_rows: int, max_seconds: float, idle_floors: dict[str, float] | None = None
    ):
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.idle_floors = idle_floors or {}  # table name -> least idle age
        self.open: dict[str, Batch] = {}  # table name -> batch taking rows
        self.writing: list[Batch] = []  # taken, not yet written
        self.consumed: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}

    def add(
        self,
        table: Table,
        row: tuple,
        origin: Origin,
        tp: TopicPartition | None = None,
        now: float | None = None,
    ) -> Batch:
        """Add one row; `tp` is the origin's partition (passed when the caller has it)."""
        batch = self.open.get(table.name)
        if batch is None:
            batch = self.open[table.name] = Batch(table, time.monotonic() if now is None else now)
        batch.rows.append(row)
        batch.origins.append(origin)
        if tp is None:
            tp = TopicPartition(origin.topic, origin.partition)
        first = batch.first_offsets.get(tp)
        if first is None or origin.offset < first:
            batch.first_offsets[tp] = origin.offset
        return batch

    def read_up_to(self, tp: TopicPartition, next_offset: int) -> None:
        """Every record of `tp` below `next_offset` was read (and added)."""
        self.consumed[tp] = next_offset

    def due(self, now: float | None = None, idle_seconds: float | None = None) -> list[Batch]:
        """Batches to write: full, or `max_seconds` old; or, when the reader has caught up
        with its topics (`idle_seconds` given), their idle age old (`_age`). Caught up,
        the tables without a floor come first and, of those with one, only the oldest
        batch that is neither full nor `max_seconds` old: the inserts run one after
        another, and the events must not wait behind all the processor's tables coming
        due in the same second."""
        now = time.monotonic() if now is None else now
        due = [
            b
            for b in self.open.values()
            if len(b) >= self.max_rows or now - b.started >= self._age(b, idle_seconds)
        ]
        if idle_seconds is None or not self.idle_floors:
            return due
        first, later = [], []
        for b in due:
            held = (
                b.table.name in self.idle_floors
                and len(b) < self.max_rows
                and now - b.started < self.max_seconds
            )
            (later if held else first).append(b)
        return first + sorted(later, key=lambda b: b.started)[:1]

    def seconds_to_next_due(
        self, now: float | None = None, idle_seconds: float | None = None
    ) -> float | None:
        if not self.open:
            return None
        now = time.monotonic() if now is None else now
        due_at = min(b.started + self._age(b, idle_seconds) for b in self.open.values())
        return max(0.0, due_at - now)

    def _age(self, batch: Batch, idle_seconds: float | None) -> float:
        """The age at which `batch` is written: max_seconds, or when caught up the idle
        age raised to its table's floor, never beyond max_seconds."""
        if idle_seconds is None:
            return self.max_seconds
        floor = self.idle_floors.get(batch.table.name, 0.0)
        return min(self.max_seconds, max(idle_seconds, floor))

    def take(self, batch: Batch) -> Batch:
        """Detach an open batch for writing; it keeps holding its offsets back."""
        del self.open[batch.table.name]
        self.writing.append(batch)
        return batch

    def take_all(self) -> list[Batch]:
        return [self.take(b) for b in list(self.open.values())]

    def written(self, batch: Batch) -> None:
        self.writing.remove(batch)

    def open_rows(self) -> int:
        return sum(len(b) for b in self.open.values())

    def pending_rows(self) -> int:
        return sum(len(b) for b in self.open.values()) + sum(len(b) for b in self.writing)

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, offsets that may be committed now and advance on the last commit."""
        low = dict(self.consumed)
        for batch in (*self.open.values(), *self.writing):
            for tp, first in batch.first_offsets.items():
                if first < low.get(tp, first + 1):
                    low[tp] = first
        return {tp: o for tp, o in low.items() if o > self.committed.get(tp, -1)}

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    def reset(self) -> None:
        """Forget everything (partitions revoked): uncommitted records will be read again."""
        self.open.clear()
        self.writing.clear()
        self.consumed.clear()
        self.committed.clear()
