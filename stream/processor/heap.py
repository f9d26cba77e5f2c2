"""Giving the C heap's free pages back to the OS (glibc's malloc_trim).

Each batch's records and outputs leave freed chunks between the visitor states that
stay, and glibc kept those pages mapped: in process, a crowd of 200,000 visitors held
401 MB of RSS, 183 MB after one trim of 16-42 ms (BENCHMARKS.md, sixth session). So a
trim once the batches pause, and every 10 s while they run, if enough ran since the last.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from dataclasses import dataclass

CHECK_SECONDS = 0.5  # how often the worker asks: a pause is trimmed within a second
BUSY_SECONDS = 10.0  # at most this long between trims while batches run
AFTER_RECORDS = 5000  # records processed since the last trim, or it is not worth one
PAUSED_BELOW = 100  # records in a check interval: the batches paused (ticks still come)


@dataclass(slots=True)
class TrimPlan:
    at: float = 0.0  # monotonic time of the last trim
    records: int = 0  # records processed by then
    seen: int = 0  # records processed at the last check

    def due(self, records: int, now: float) -> bool:
        """Whether to trim now, `records` processed so far (asked every CHECK_SECONDS)."""
        paused = records - self.seen < PAUSED_BELOW
        self.seen = records
        if records - self.records < AFTER_RECORDS:
            return False
        if paused or now - self.at >= BUSY_SECONDS:
            self.at, self.records = now, records
            return True
        return False


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim (ctypes releases the GIL while it runs), or None."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
