"""State of batches still being finished, for the batch after them.

The agent finishes a batch (outputs acknowledged, then state into the changelog and
the store, then offsets) while it already computes the next one: the waits for Kafka's
acknowledgements were a third of its wall time. The next batch must see the previous
batch's state before it reaches the table, so that state is kept here until written.
The store is written only after the outputs are acknowledged (RocksDB keeps it across
a crash, and a state ahead of its outputs would skip them on replay).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping


class InFlight:
    def __init__(self) -> None:
        self._states: dict[bytes, tuple[int, bytes | None]] = {}  # key -> (batch, value)

    def put(self, batch: int, states: Mapping[bytes, bytes | None]) -> None:
        """A batch's new values (None: deleted), newest batch last."""
        for key, value in states.items():
            self._states[key] = (batch, value)

    def get(self, key: bytes, table: Callable[[bytes], bytes | None]) -> bytes | None:
        hit = self._states.get(key)
        return table(key) if hit is None else hit[1]

    def release(self, batch: int, keys: Iterable[bytes]) -> None:
        """The batch's values are in the table: forget those no later batch replaced."""
        for key in keys:
            hit = self._states.get(key)
            if hit is not None and hit[0] == batch:
                del self._states[key]

    def __len__(self) -> int:
        return len(self._states)
