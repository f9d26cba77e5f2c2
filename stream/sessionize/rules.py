"""Session rules: how long a visit may pause, last, and arrive late (event time, ms)."""

from __future__ import annotations

from dataclasses import dataclass

from stream.config import Settings

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SessionRules:
    timeout_ms: int = 30 * 60_000  # a gap of at least this much starts a new session
    max_ms: int = DAY_MS  # a session never spans this much or more
    lateness_ms: int = 5 * 60_000  # events older than (latest seen - this) are late
    lapse_ms: int = 90 * DAY_MS  # a buyer silent this long lapses (see journey.process)
    # Arrival-time silence after which a visitor's open sessions close (0: timeout +
    # lateness). Event-time gaps still decide where one session ends and the next begins.
    idle_close_ms: int = 0

    @property
    def idle_ms(self) -> int:
        return self.idle_close_ms or self.timeout_ms + self.lateness_ms

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionRules:
        return cls(
            timeout_ms=settings.session_timeout_s * 1000,
            max_ms=settings.session_max_s * 1000,
            lateness_ms=settings.allowed_lateness_s * 1000,
            lapse_ms=settings.lapse_days * DAY_MS,
            idle_close_ms=settings.idle_close_s * 1000,
        )
