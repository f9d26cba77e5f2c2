"""Marketing consent gates triggers: a pure rule over the visitor's state and event.

Triggers feed e-mail and push automations, so a visitor without marketing consent
gets none; their journey and metrics count as usual (a withheld trigger still counts
in the metrics, see metrics/observe.py). A change of consent applies from the next
event on: the visitor's state keeps the consent of its latest event (by event time,
like `is_bot`); triggers an event causes follow that event's consent, triggers the
clock causes (abandoned carts, lapses in tick()) follow the state's.
"""

from __future__ import annotations

from typing import Any

from stream.journey.state import VisitorState


def of_event(event: Any) -> bool:
    """The event's marketing consent; records from before consent existed grant it."""
    return event.get("marketing_consent", True) is not False


def note(state: VisitorState, event: Any, ts: int) -> None:
    """Keep the consent of the visitor's latest event (call before last_seen moves)."""
    if ts >= state.last_seen:
        state.marketing = of_event(event)


def gate(triggers: list[dict], withheld: list[dict], marketing: bool) -> list[dict]:
    """The triggers to publish; without consent they move to `withheld` instead."""
    if marketing or not triggers:
        return triggers
    withheld.extend(triggers)
    return []
