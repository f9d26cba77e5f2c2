"""Session assignment by event time: boundaries of the timeout, max, lateness and close."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from stream.config import Settings
from stream.sessionize import SessionRules, choose, end_reason, is_late, reach, session_id
from stream.sessionize.assign import CAMPAIGN, MAX_DURATION, NO_CAMPAIGN, TIMEOUT
from stream.sessionize.ids import idempotency_key

pytestmark = pytest.mark.unit

MIN = 60_000
RULES = SessionRules()  # 30 min, 24 h, 5 min
NEWS = ("news", "email", "spring", "")


@dataclass
class Span:
    start: int
    end: int
    campaign: tuple = NO_CAMPAIGN


def test_rules_from_settings_are_in_ms() -> None:
    rules = SessionRules.from_settings(
        Settings(session_timeout_s=600, session_max_s=3600, allowed_lateness_s=0, lapse_days=30)
    )
    assert rules == SessionRules(600_000, 3_600_000, 0, 30 * 86_400_000)
    assert SessionRules.from_settings(Settings()) == RULES


def test_a_gap_of_exactly_the_timeout_starts_a_new_session() -> None:
    spans = [Span(0, 10 * MIN)]
    assert choose(spans, 40 * MIN - 1, NO_CAMPAIGN, RULES) == (0, "")
    assert choose(spans, 40 * MIN, NO_CAMPAIGN, RULES) == (None, TIMEOUT)


def test_a_session_never_spans_the_max() -> None:
    spans = [Span(0, 24 * 60 * MIN - 20 * MIN)]
    assert choose(spans, 24 * 60 * MIN - 1, NO_CAMPAIGN, RULES) == (0, "")
    assert choose(spans, 24 * 60 * MIN, NO_CAMPAIGN, RULES) == (None, MAX_DURATION)


def test_a_new_campaign_splits_forward_only() -> None:
    spans = [Span(0, 10 * MIN)]
    assert choose(spans, 11 * MIN, NEWS, RULES) == (None, CAMPAIGN)
    assert choose(spans, 5 * MIN, NEWS, RULES) == (0, "")  # inside: never cut in two
    assert choose([Span(0, 10 * MIN, NEWS)], 11 * MIN, NEWS, RULES) == (0, "")
    assert choose(spans, 11 * MIN, NO_CAMPAIGN, RULES) == (0, "")


def test_an_early_event_extends_the_next_session_backwards() -> None:
    spans = [Span(60 * MIN, 70 * MIN)]
    assert choose(spans, 31 * MIN, NO_CAMPAIGN, RULES) == (0, "")
    assert choose(spans, 30 * MIN, NO_CAMPAIGN, RULES) == (None, "")
    # the campaign of the next session was where it began: an earlier other campaign is not
    assert choose([Span(60 * MIN, 70 * MIN, NEWS)], 59 * MIN, ("g", "", "", "x"), RULES) == (
        None,
        "",
    )


def test_an_event_between_two_sessions_joins_the_earlier_one() -> None:
    spans = [Span(0, 10 * MIN), Span(50 * MIN, 60 * MIN)]
    assert choose(spans, 30 * MIN, NO_CAMPAIGN, RULES) == (0, "")  # no merge of the two
    assert choose(spans, 45 * MIN, NO_CAMPAIGN, RULES) == (1, "")
    assert choose(spans, 55 * MIN, NO_CAMPAIGN, RULES) == (1, "")


def test_lateness_is_measured_from_the_latest_event_and_the_floor() -> None:
    assert not is_late(55 * MIN, 60 * MIN, 0, RULES)
    assert is_late(55 * MIN - 1, 60 * MIN, 0, RULES)
    assert is_late(70 * MIN, 60 * MIN, 70 * MIN + 1, RULES)


def test_reach_and_end_reason() -> None:
    assert reach(Span(0, 10 * MIN), RULES) == 40 * MIN
    assert end_reason(Span(0, 10 * MIN), RULES) == TIMEOUT
    long = Span(0, 23 * 60 * MIN + 50 * MIN)
    assert reach(long, RULES) == 24 * 60 * MIN
    assert end_reason(long, RULES) == MAX_DURATION


def test_ids_derive_from_data_only() -> None:
    assert session_id("v1", 1000) == session_id("v1", 1000)
    assert session_id("v1", 1000) != session_id("v1", 1001) != session_id("v2", 1000)
    assert len(session_id("v1", 1000)) == 20
    assert idempotency_key("a", "bc") != idempotency_key("ab", "c")
    assert len(idempotency_key("x")) == 32
