"""Consent of a call, pure: Segment's consent spec mapped to our two purposes, browser
privacy signals, and the cookieless visitor id of a call without analytics consent.

A call states consent as Segment's consent spec does, `context.consent.
categoryPreferences` (category name -> true/false). Category names are the merchant's
(their consent tool's); `ConsentRules` maps them, case-insensitively, to our two
purposes: analytics (a stable visitor id, identities, journeys across visits) and
marketing (triggers that feed e-mail and push automations). See README, "Consent".
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

DAY_MS = 86_400_000
COOKIELESS_PREFIX = "cl-"  # marks a daily id: never a browser's own id
# Calls that exist only to link identities (a person, an old id, a company):
# meaningless, and unwanted, without analytics consent.
IDENTITY_CALLS = frozenset({"identify", "alias", "group"})
# Fields that identify a person or link ids; dropped from a call without analytics consent.
_IDENTITY_FIELDS = ("userId", "previousId", "traits")


@dataclass(frozen=True, slots=True)
class ConsentRules:
    analytics_categories: frozenset[str]  # lower-case category names
    marketing_categories: frozenset[str]
    required: bool = False  # a call without a consent object has no consent at all
    honor_gpc: bool = False  # Sec-GPC: 1 / DNT: 1 withdraw marketing consent


class Consent(NamedTuple):
    analytics: bool
    marketing: bool
    signal: str = ""  # "gpc" or "dnt" when a browser signal withdrew marketing consent


GRANTED = Consent(analytics=True, marketing=True)  # a call from before consent existed


def preferences(call: Mapping[str, Any]) -> dict[str, bool] | None:
    """The call's `context.consent.categoryPreferences`, None when it states none.

    Only true is consent: a value that is not exactly true counts as refused.
    """
    context = call.get("context")
    consent = context.get("consent") if isinstance(context, dict) else None
    prefs = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    if not isinstance(prefs, dict):
        return None
    return {str(k).strip().lower(): v is True for k, v in prefs.items()}


def resolve(
    call: Mapping[str, Any], rules: ConsentRules, gpc: bool = False, dnt: bool = False
) -> Consent:
    """What the call may be used for.

    No consent object: both purposes, as before consent existed, unless `rules.required`.
    With one, a purpose is granted when at least one of its categories is named and
    every one of its categories that is named is true (a purpose it does not mention
    is refused). A browser signal, when the merchant honours it, withdraws marketing.
    """
    prefs = preferences(call)
    if prefs is None:
        if not rules.required and not (rules.honor_gpc and (gpc or dnt)):
            return GRANTED  # the common case, before consent existed: no new object
        analytics = marketing = not rules.required
    else:
        analytics = _granted(prefs, rules.analytics_categories)
        marketing = _granted(prefs, rules.marketing_categories)
    signal = ""
    if rules.honor_gpc and marketing and (gpc or dnt):
        marketing, signal = False, "gpc" if gpc else "dnt"
    return Consent(analytics, marketing, signal)


def _granted(prefs: dict[str, bool], categories: frozenset[str]) -> bool:
    named = [granted for name, granted in prefs.items() if name in categories]
    return bool(named) and all(named)


def header_on(value: str | None) -> bool:
    """Sec-GPC and DNT are on when their value is "1"."""
    return (value or "").strip() == "1"


def without_identity(call: dict[str, Any], visitor_id: str) -> dict[str, Any]:
    """A copy of a call without analytics consent: no user id, traits or client id;
    the cookieless `visitor_id` stands in as its anonymousId."""
    out = {k: v for k, v in call.items() if k not in _IDENTITY_FIELDS}
    out["anonymousId"] = visitor_id
    context = out.get("context")
    if isinstance(context, dict) and "traits" in context:
        out["context"] = {k: v for k, v in context.items() if k != "traits"}
    return out


def cookieless_id(salt: bytes, source: str, ip: str, user_agent: str) -> str:
    """Plausible's method: a keyed hash of (daily salt, source, IP, user agent).

    The same browser on the same network gets the same id all day; with tomorrow's
    salt it gets an unrelated one, and once a day's salt is gone nobody (us included)
    can link that day's ids to anything. The IP goes in whole: it is never stored, and
    a /24 would merge the visitors of a whole office or mobile carrier.
    """
    h = hashlib.blake2b(digest_size=16, key=salt)
    h.update(f"{source}\n{ip}\n{user_agent}".encode("utf-8", "surrogatepass"))
    return COOKIELESS_PREFIX + h.hexdigest()


class DailySalt:
    """A random salt per UTC day, held in memory only and replaced when the day changes.

    Never written anywhere, so a restarted collector starts a new salt: visitors
    without analytics consent seen before the restart get a new id after it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._day = -1
        self._salt = b""

    def for_time(self, ms: int) -> bytes:
        day = ms // DAY_MS
        with self._lock:
            if day != self._day:
                self._day, self._salt = day, secrets.token_bytes(32)
            return self._salt
