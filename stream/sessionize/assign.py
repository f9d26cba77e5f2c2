"""Which session an event belongs to, by event time. Pure functions over open sessions.

The rules, in one place:
- A gap of `timeout` or more starts a new session (a gap of exactly 30 min splits).
- A session never spans `max` or more: the event at start + max opens the next one.
- An event that extends a session forward and carries a non-empty campaign different
  from the session's starts a new session. Events inside a session, or extending it
  backwards, never split it (nothing already emitted is cut in two).
- An out-of-order event between two sessions joins the earlier one when it can, else
  the later one (extending it backwards), else opens its own. Sessions are never merged.
- Late: older than (latest event time seen - lateness), or older than `floor`, the
  point before which closed sessions have settled everything.
- A session is closed for good once the reference time R (latest event time, or the
  partition watermark, minus lateness) reaches `reach(s)`: no event at or after R can
  join it any more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from stream.sessionize.rules import SessionRules

Campaign = tuple[str, str, str, str]  # utm_source, utm_medium, utm_campaign, click_id
NO_CAMPAIGN: Campaign = ("", "", "", "")

# Why a session ended; also the close_reason of its summary.
TIMEOUT = "timeout"
MAX_DURATION = "max_duration"
CAMPAIGN = "campaign"
EVICTED = "evicted"


class Span(Protocol):
    start: int
    end: int

    @property
    def campaign(self) -> Campaign: ...


def is_late(ts: int, last_seen: int, floor: int, rules: SessionRules) -> bool:
    return ts < floor or ts < last_seen - rules.lateness_ms


def reach(span: Span, rules: SessionRules) -> int:
    """The earliest event time that can no longer join `span`."""
    return min(span.end + rules.timeout_ms, span.start + rules.max_ms)


def end_reason(span: Span, rules: SessionRules) -> str:
    """Why a session that nothing else split ended."""
    return MAX_DURATION if span.start + rules.max_ms <= span.end + rules.timeout_ms else TIMEOUT


def choose(
    spans: Sequence[Span], ts: int, campaign: Campaign, rules: SessionRules
) -> tuple[int | None, str]:
    """(index of the session to join, "") or (None, why the preceding session ended).

    `spans` are sorted by start and do not overlap; the reason is "" when there is no
    preceding session.
    """
    prev = nxt = None
    for i, s in enumerate(spans):
        if s.start <= ts <= s.end:
            return i, ""
        if s.end < ts:
            prev = i
        elif nxt is None:
            nxt = i
    reason = ""
    if prev is not None:
        p = spans[prev]
        if ts - p.end >= rules.timeout_ms:
            reason = TIMEOUT
        elif ts - p.start >= rules.max_ms:
            reason = MAX_DURATION
        elif campaign != NO_CAMPAIGN and campaign != p.campaign:
            reason = CAMPAIGN
        else:
            return prev, ""
    if nxt is not None:
        f = spans[nxt]
        fits = f.start - ts < rules.timeout_ms and f.end - ts < rules.max_ms
        clash = campaign != NO_CAMPAIGN and f.campaign not in (NO_CAMPAIGN, campaign)
        if fits and not clash:
            return nxt, ""
    return None, reason
