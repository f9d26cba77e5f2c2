"""The engine's two tables as plain dicts, for running it without Faust: benchmarks,
tests, tools. What the batch step does with a BatchResult, minus Kafka."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from stream import partitioning
from stream.metrics import windows
from stream.processor.engine import BatchResult, Engine, Record


@dataclass
class LocalTables:
    partitions: int
    visitors: dict[bytes, bytes] = field(default_factory=dict)
    rows: dict[bytes, bytes] = field(default_factory=dict)

    def run(self, engine: Engine, records: list[Record]) -> BatchResult:
        """One batch through the engine, its state stored."""
        result = engine.run(records, self.visitors.get, self.rows.get, self.scan)
        self.store(result)
        return result

    def store(self, result: BatchResult) -> None:
        for table, writes in ((self.visitors, result.states), (self.rows, result.rows)):
            for key, (_, value) in writes.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value

    def scan(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.visitors.items():
            if partitioning.partition_of(key, self.partitions) == partition:
                yield key, value
        for key, value in self.rows.items():
            if windows.key_partition(key) == partition:
                yield key, value
