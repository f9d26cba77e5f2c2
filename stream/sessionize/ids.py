"""Ids derived from data only, so a replay of the same partition yields the same ids."""

from __future__ import annotations

from hashlib import blake2b


def session_id(visitor_id: str, start_ms: int) -> str:
    """20 hex chars from the visitor and the first-seen start of the session."""
    return blake2b(f"{visitor_id}:{start_ms}".encode(), digest_size=10).hexdigest()


def idempotency_key(*parts: str) -> str:
    """32 hex chars; the unit separator keeps ("a", "bc") apart from ("ab", "c")."""
    return blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
