"""Event time, the way Segment computes it, shared by the validator and the normalizer.

A client's clock can be wrong by hours. Each call says when it happened on that
clock (`timestamp`, or the older `originalTimestamp`) and when it was sent
(`sentAt`); the difference is the time the event waited on the device, which the
collector's clock can be trusted with:

    ts = timestamp + (received_at - sentAt)

Without `sentAt` the timestamp is taken as is; without a timestamp the event
happened when it was received (or sent, which the correction makes the same).

A client's time is data, never a clock: an event time later than the collector's
receive time plus `max_skew_ms` (CLICKSTREAM_MAX_CLOCK_SKEW_SECONDS) is clamped to
that bound, the client's value kept in `client_ts`, and the clamp counted per source.
Nothing downstream takes a watermark or a deadline from `ts` (see the processor's
time model in README, "Journeys"); the clamp keeps a broken clock from even
reordering one visitor's journey into the future.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

MAX_FUTURE_MS = 24 * 3600 * 1000  # a later event time is a broken clock, not an event
MAX_SKEW_MS = 180_000  # default clamp: event time <= receive time + this
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


# Each date is parsed twice (validation, then event time) and a batch's `sentAt` once per
# call: the cache turns all but the first into a look-up. A pure function of a short str.
@lru_cache(maxsize=8192)
def parse_iso_ms(value: str) -> int | None:
    """ISO-8601 text -> epoch ms, or None when it is not a date.

    Accepts `Z`, `+hh:mm` offsets and any number of fractional digits (Python
    3.11's parser); a date without an offset is taken as UTC, as Segment does.
    """
    if not 10 <= len(value) <= 64 or not value[:4].isdigit():
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _MS  # exact: float seconds * 1000 can lose a millisecond
    except (ValueError, OverflowError):
        return None


def client_time_fields(call: dict[str, Any]) -> tuple[str | None, str | None]:
    """The (event time, sent time) texts of a call, either None when absent."""
    stamp = call.get("timestamp") or call.get("originalTimestamp")
    sent = call.get("sentAt")
    return (stamp if isinstance(stamp, str) else None, sent if isinstance(sent, str) else None)


def corrected(stamp_ms: int | None, sent_ms: int | None, received_at_ms: int) -> int:
    """The event time from parsed client times (either may be absent)."""
    if stamp_ms is None:
        return received_at_ms
    if sent_ms is None:
        return stamp_ms
    return stamp_ms + (received_at_ms - sent_ms)


def event_time(call: dict[str, Any], received_at_ms: int) -> tuple[int, int | None]:
    """(ts, sent_at) in epoch ms, ts corrected for clock skew; unparsable texts count as absent."""
    stamp_text, sent_text = client_time_fields(call)
    stamp = parse_iso_ms(stamp_text) if stamp_text else None
    sent = parse_iso_ms(sent_text) if sent_text else None
    return corrected(stamp, sent, received_at_ms), sent


def clamp(ts: int, received_at_ms: int, max_skew_ms: int = MAX_SKEW_MS) -> int:
    """The event time the pipeline uses: never later than receive time + max_skew_ms."""
    return min(ts, received_at_ms + max_skew_ms)
