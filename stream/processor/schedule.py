"""When each visitor of a partition needs a look again: a heap keyed by partition clock.

The time of the look is a function of the visitor's state alone (its next idle close,
lapse or expiry, on the arrival clock), so the schedule rebuilt from the state after
a restart is the one that was lost: ticks find the same visitors due.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(slots=True)
class Schedule:
    planned: dict[str, int] = field(default_factory=dict)  # visitor -> its one live look
    heap: list[tuple[int, str]] = field(default_factory=list)  # may hold stale entries

    def plan(self, visitor: str, at: int | None) -> None:
        """The visitor's next look is at `at` or earlier (None: never). A look planned
        earlier stays (most changes move the look later): when it comes, the caller
        finds the visitor not due yet and plans again. Keeps the heap to a push per
        look instead of a push per event."""
        if at is None:
            self.planned.pop(visitor, None)
            return
        planned = self.planned.get(visitor)
        if planned is not None and planned <= at:
            return
        self.planned[visitor] = at
        heapq.heappush(self.heap, (at, visitor))
        if len(self.heap) > 2 * len(self.planned) + 1024:
            self._compact()

    def due(self, clock: int) -> list[str]:
        """Pop the visitors whose look is planned at or before `clock`, earliest first
        (the caller checks whether each is really due)."""
        out = []
        heap, planned = self.heap, self.planned
        while heap and heap[0][0] <= clock:
            at, visitor = heapq.heappop(heap)
            if planned.get(visitor) == at:
                del planned[visitor]
                out.append(visitor)
        return out

    def __len__(self) -> int:
        return len(self.planned)

    def _compact(self) -> None:
        """Drop stale entries (one per re-plan) so the heap stays the size of the plan."""
        self.heap = [(at, visitor) for visitor, at in self.planned.items()]
        heapq.heapify(self.heap)
