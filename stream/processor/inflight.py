"""State of batches still being finished, for the batch after them.

The agent finishes a batch (outputs acknowledged, then state into the changelog and
the store, then offsets) while it already computes the next one: the waits for Kafka's
acknowledgements were a third of its wall time. The next batch must see the previous
batch's state before it reaches the table, so that state is kept here until written.
The store is written only after the changelog acknowledged it (RocksDB keeps it
across a crash, and a state ahead of its changelog would be lost on recovery).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping


class InFlight:
    def __init__(self) -> None:
        # key -> (batch, partition, value)
        self._states: dict[bytes, tuple[int, int, bytes | None]] = {}

    def put(self, batch: int, states: Mapping[bytes, tuple[int, bytes | None]]) -> None:
        """A batch's new values by key: (partition, value; None: deleted), newest last."""
        for key, (partition, value) in states.items():
            self._states[key] = (batch, partition, value)

    def get(self, key: bytes, table: Callable[[bytes], bytes | None]) -> bytes | None:
        hit = self._states.get(key)
        return table(key) if hit is None else hit[2]

    def release(self, batch: int, keys: Iterable[bytes]) -> None:
        """The batch's values are in the table: forget those no later batch replaced."""
        for key in keys:
            hit = self._states.get(key)
            if hit is not None and hit[0] == batch:
                del self._states[key]

    def forget(self, partitions: Iterable[int]) -> None:
        """Revoked partitions: their values are the next owner's business now."""
        gone = set(partitions)
        for key in [k for k, hit in self._states.items() if hit[1] in gone]:
            del self._states[key]

    def __len__(self) -> int:
        return len(self._states)
