"""Sessionization rules: pure functions of event time, no Kafka, no Faust."""

from stream.sessionize.assign import choose, end_reason, is_late, reach
from stream.sessionize.ids import idempotency_key, session_id
from stream.sessionize.rules import SessionRules

__all__ = [
    "SessionRules",
    "choose",
    "end_reason",
    "idempotency_key",
    "is_late",
    "reach",
    "session_id",
]
