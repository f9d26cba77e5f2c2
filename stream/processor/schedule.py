"""When each visitor of a partition needs a look again, by partition clock.

The time of the look is a function of the visitor's state alone (its next idle close,
lapse or expiry, on the arrival clock), so the schedule rebuilt from the state after
a restart is the one that was lost: ticks find the same visitors due.

Memory is per visitor in state (a million of them, BENCHMARKS.md sixth session), so a
look costs no object of its own until it is near: a far look is the visitor's key in
the list of its bucket (2**16 ms of clock), planned at the bucket's start (one int per
bucket, shared). When the clock reaches the bucket, its visitors come out up to one
bucket early; the caller finds those not due yet and plans them again, now exactly,
on a heap of (time, key) that only ever holds the looks of the buckets reached. A
look never comes out later than planned. The keys are the table's own bytes keys,
so the schedule holds no copy of them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

SHIFT = 16  # bucket of a far look: clock >> SHIFT (65.5 s)
SLACK = 1024  # stale entries allowed beyond one per planned look, before a compaction


@dataclass(slots=True)
class Schedule:
    planned: dict[bytes, int] = field(default_factory=dict)  # visitor -> its one live look
    # bucket number -> [its start (the planned time of its visitors), key, key, ...]:
    # may hold stale keys (planned earlier since), dropped when the bucket comes out
    buckets: dict[int, list] = field(default_factory=dict)
    numbers: list[int] = field(default_factory=list)  # heap of the buckets' numbers
    near: list[tuple[int, bytes]] = field(default_factory=list)  # heap; may hold stale ones
    reached: int = -1  # the last bucket the clock reached: later looks go on `near`
    entries: int = 0  # keys in buckets and near, stale ones included

    def plan(self, visitor: bytes, at: int | None) -> None:
        """The visitor's next look is at `at` or earlier (None: never). A look planned
        earlier stays (most changes move the look later): when it comes, the caller
        finds the visitor not due yet and plans again. Keeps the schedule to an entry
        per look instead of one per event."""
        if at is None:
            self.planned.pop(visitor, None)
            return
        planned = self.planned.get(visitor)
        if planned is not None and planned <= at:
            return
        self._file(visitor, at)
        self.entries += 1
        if self.entries > 2 * len(self.planned) + SLACK:
            self._compact()

    def due(self, clock: int) -> list[bytes]:
        """Take out the visitors whose look is planned at or before `clock`, and those of
        a far bucket the clock has just reached (up to one bucket early). The caller
        checks whether each is really due, and plans again those that are not."""
        out = []
        planned = self.planned
        reached = clock >> SHIFT
        numbers, buckets = self.numbers, self.buckets
        while numbers and numbers[0] <= reached:
            bucket = buckets.pop(heapq.heappop(numbers))
            start = bucket[0]
            self.entries -= len(bucket) - 1
            for visitor in bucket[1:]:
                if planned.get(visitor) == start:
                    del planned[visitor]
                    out.append(visitor)
        self.reached = max(self.reached, reached)
        near = self.near
        while near and near[0][0] <= clock:
            at, visitor = heapq.heappop(near)
            self.entries -= 1
            if planned.get(visitor) == at:
                del planned[visitor]
                out.append(visitor)
        return out

    def __len__(self) -> int:
        return len(self.planned)

    def _file(self, visitor: bytes, at: int) -> None:
        """Put a look where it belongs: exactly on the near heap once the clock has reached
        its bucket; else in its bucket, planned at the bucket's start (one shared int)."""
        number = at >> SHIFT
        if number <= self.reached:
            self.planned[visitor] = at
            heapq.heappush(self.near, (at, visitor))
            return
        bucket = self.buckets.get(number)
        if bucket is None:
            bucket = self.buckets[number] = [number << SHIFT]
            heapq.heappush(self.numbers, number)
        self.planned[visitor] = bucket[0]
        bucket.append(visitor)

    def _compact(self) -> None:
        """Drop stale entries (one per re-plan) so the schedule stays the size of the plan."""
        self.near, self.numbers, self.buckets = [], [], {}
        for visitor, at in self.planned.items():  # values replaced, no key added
            self._file(visitor, at)
        self.entries = len(self.planned)
