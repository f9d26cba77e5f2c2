"""Exactly the next record of each source partition, or a seek back to it.

faust-streaming 0.15.3 can lose fetched records: its `Consumer.getmany` stops handing
out a fetched batch when the generation changes or the flow stops during a rebalance,
while aiokafka's position has already moved past the rest of that batch. Faust then
seeks to the committed offset, but aiokafka's `seek_to_committed` does not move a
partition that has no commit yet, so the dropped records are never read (seen in the
SIGKILL restart test: three partitions jumping 133 offsets at once, 0.3 s after start).

The agent therefore tracks the next offset it expects per partition and, on a jump
that no group commit explains, drops the rest of that partition's batch and seeks the
consumer back. Records below the expected offset are re-reads of what this process
already applied: skipped. The first record of a partition is checked against the
group's committed offset or, when the group has no commit for it, against the log's
first offset (`start`; unchecked only while that is unknown): Faust's own stream
queues can lose the first records fetched after a rebalance (faust_internals, patch
4), and a later record taken as the first would skip them. A record is never skipped:
when a seek does not bring the expected offset back within GIVE_UP_SECONDS, `admit`
raises SkippedRecords and the worker stops with that error rather than move on. Everything per partition is
dropped when the partition is revoked (`forget`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any

from stream.telemetry import OFFSET_GAPS

log = logging.getLogger(__name__)

TP = tuple[str, int]
GIVE_UP_SECONDS = 30.0  # a seek that never brings the expected offset: stop the worker
RESEEK_SECONDS = 1.0  # a seek can be undone by records Faust had already fetched
STALL_SECONDS = 5.0  # records waiting on the broker and none delivered for this long
_OFFSET = attrgetter("offset")


class SkippedRecords(RuntimeError):
    """The consumer does not deliver the next offset of a partition, even after seeks."""


class Positions:
    def __init__(
        self,
        committed: Callable[[Any], int | None] = lambda tp: None,
        start: Callable[[Any], int | None] = lambda tp: None,
    ) -> None:
        self.committed = committed  # tp -> the group's committed offset, as last read
        self.start = start  # tp -> the log's first offset, None while unknown
        self.next: dict[Any, int] = {}
        self.seeking: dict[Any, tuple[int, float]] = {}  # tp -> (offset, since)
        self.sought: dict[Any, float] = {}  # tp -> when the last seek was issued
        self.moved: dict[Any, float] = {}  # tp -> when a record of it was last applied

    def forget(self, tps: Iterable[Any]) -> None:
        """A revoked partition: its next owner (maybe this process again) starts over."""
        for tp in tps:
            for table in (self.next, self.seeking, self.sought, self.moved):
                table.pop(tp, None)

    def admit(
        self,
        events: Iterable[Any],
        now: float | None = None,
        assigned: Any = None,
        at: Callable[[Any], tuple[Any, int]] = None,
    ) -> tuple[list, dict]:
        """The events to apply, in order, and the seeks to issue ({tp: offset}). Events
        of partitions not in `assigned` (when given) are left: no longer ours. `at`
        gives an item's (tp, offset); by default a Faust event's."""
        now = time.monotonic() if now is None else now
        at = at or event_at
        keep: list = []
        seeks: dict[Any, int] = {}
        for event in events:
            tp, offset = at(event)
            if assigned is not None and tp not in assigned:
                continue
            expected = self.next.get(tp)
            if expected is None:
                expected = self.committed(tp)
                if expected is not None and offset < expected:
                    continue  # below the group's commit: applied by an earlier owner
                if expected is None:
                    expected = self.start(tp)  # no commit yet: the log's beginning
            if expected is not None:
                committed = self.committed(tp)
                if committed is not None and committed > expected:
                    expected = committed  # another worker applied up to its commit
                if offset < self.next.get(tp, expected):
                    continue  # re-read of what we applied
                if offset > expected:
                    self._missing(tp, expected, offset, now)
                    if tp not in self.seeking:
                        self.seeking[tp] = (expected, now)
                        self.sought[tp] = now
                        seeks[tp] = expected
                    continue
            self._took(tp, offset + 1, now)
            keep.append(event)
        return keep, seeks

    def admit_runs(
        self,
        runs: Iterable[tuple[Any, Sequence[Any]]],
        now: float | None = None,
        assigned: Any = None,
    ) -> tuple[list, dict]:
        """admit() over (tp, records) runs as a fetch gives them, returning (tp, record)
        pairs: a run of exactly the next offsets, none below a commit, is taken whole
        (one check per run instead of per record); any other goes through admit()."""
        now = time.monotonic() if now is None else now
        keep: list = []
        seeks: dict[Any, int] = {}
        for tp, records in runs:
            if not records or (assigned is not None and tp not in assigned):
                continue
            first, n = records[0].offset, len(records)
            if self.next.get(tp) == first and records[-1].offset == first + n - 1:
                committed = self.committed(tp)
                if (committed is None or committed <= first) and list(
                    map(_OFFSET, records)
                ) == list(range(first, first + n)):
                    self._took(tp, first + n, now)
                    keep.extend(zip(repeat(tp, n), records, strict=True))
                    continue
            kept, more = self.admit([(tp, r) for r in records], now, assigned, pair_at)
            keep += kept
            seeks.update(more)  # as one admit() call: a later seek of a partition wins
        return keep, seeks

    def _took(self, tp: Any, next_offset: int, now: float) -> None:
        """Records of `tp` up to `next_offset` applied: any seek of it is done."""
        self.seeking.pop(tp, None)
        self.sought.pop(tp, None)
        self.moved[tp] = now
        self.next[tp] = next_offset

    def reseeks(self, now: float | None = None) -> dict[Any, int]:
        """Seeks to issue again. Faust's fetcher keeps a read offset per partition and
        silently drops records below it; records it had fetched before our seek raise
        it again, so the re-read records of a seek can all be dropped. Seeking again
        once those stale records are through resets it for good."""
        now = time.monotonic() if now is None else now
        out = {}
        for tp, (offset, _since) in self.seeking.items():
            if now - self.sought.get(tp, 0.0) >= RESEEK_SECONDS:
                self.sought[tp] = now
                out[tp] = offset
        return out

    def stalled(self, ends: dict[Any, int | None], now: float | None = None) -> dict[Any, int]:
        """Partitions with records on the broker (`ends`: the log end per partition, None
        while unknown) of which nothing was applied for STALL_SECONDS, and where to
        seek them. Seen in the SIGKILL restart test: Faust's fetcher read partitions to
        their end while none of their records reached the agent."""
        now = time.monotonic() if now is None else now
        out = {}
        for tp, end in ends.items():
            self.moved.setdefault(tp, now)  # first seen: give it STALL_SECONDS
            if end is None or tp in self.seeking:
                continue
            position = self.next.get(tp)
            if position is None:
                position = self.committed(tp)
            if position is None:
                position = self.start(tp) or 0
            if position < end and now - self.moved[tp] >= STALL_SECONDS:
                self.moved[tp] = now
                OFFSET_GAPS.labels(tp[0]).inc()
                log.warning(
                    "%s[%d]: nothing applied for %.0f s with %d records waiting: seeking to %d",
                    tp[0],
                    tp[1],
                    STALL_SECONDS,
                    end - position,
                    position,
                )
                out[tp] = position
        return out

    def _missing(self, tp: Any, expected: int, offset: int, now: float) -> None:
        """Count and log a jump once; raise once seeking back has failed for too long."""
        seeking = self.seeking.get(tp)
        if seeking is None or seeking[0] != expected or now - seeking[1] < GIVE_UP_SECONDS:
            if seeking is None or seeking[0] != expected:
                OFFSET_GAPS.labels(tp[0]).inc()
                log.warning(
                    "records %s[%d] %d..%d were not delivered: seeking back",
                    tp[0],
                    tp[1],
                    expected,
                    offset - 1,
                )
            return
        raise SkippedRecords(
            f"{tp[0]}[{tp[1]}]: offset {expected} was not delivered within"
            f" {GIVE_UP_SECONDS:.0f} s of seeking back (offset {offset} came instead);"
            " stopping rather than skip records"
        )


def event_at(event: Any) -> tuple[Any, int]:
    return event.message.tp, event.message.offset


def pair_at(pair: tuple[Any, Any]) -> tuple[Any, int]:
    """A (tp, record) pair's position: batch delivery (faust_internals patch 4)."""
    return pair[0], pair[1].offset


def batch_offsets(events: Sequence[Any], at: Callable[[Any], tuple[Any, int]] = None) -> dict:
    """The offset to commit per partition: the next one after the batch's last."""
    at = at or event_at
    return {tp: offset + 1 for tp, offset in map(at, events)}


def pair_offsets(pairs: Sequence[tuple[Any, Any]]) -> dict:
    """batch_offsets of (tp, record) pairs, without a call per pair."""
    return {tp: record.offset + 1 for tp, record in pairs}
