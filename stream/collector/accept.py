"""A request's calls, one by one: consent, validation, then the record to publish or the
dead letter and the answer's error. Pure (no I/O, only counters), and compiled with the
rest of the collector's per-event work (stream/compiled.py); server.py is the HTTP shell.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from stream.collector import consent, intake
from stream.collector.consent import GRANTED, ConsentRules, DailySalt
from stream.collector.normalize import derive_message_id, to_record
from stream.collector.validate import Validator
from stream.enrich import Enricher
from stream.records import EventRecord, InvalidRecord
from stream.telemetry import CONSENT_COOKIELESS, CONSENT_DROPPED, CONSENT_SIGNALS

# Children of the per-request metrics, one per label value: `.labels()` locks on every call.
_cookieless = cache(CONSENT_COOKIELESS.labels)


class Sorted:
    """What became of a request's calls: records to publish, dead letters, the answer's
    errors, and the calls dropped for want of consent (answered as accepted)."""

    def __init__(self) -> None:
        self.events: list[EventRecord] = []
        self.invalid: list[InvalidRecord] = []
        self.errors: list[dict[str, Any]] = []
        self.dropped = 0


class Acceptor:
    """The collector's rules for one call, with what they need from the settings."""

    def __init__(
        self,
        validator: Validator,
        enricher: Enricher,
        rules: ConsentRules,
        salt: DailySalt,
        max_skew_ms: int,
    ) -> None:
        self.validator = validator
        self.enricher = enricher
        self.rules = rules
        self.salt = salt
        self.max_skew_ms = max_skew_ms

    def sort(
        self,
        calls: list[intake.Call],
        shared: dict[str, Any],
        source: str,
        received_at: int,
        ip: str,
        user_agent: str,
        gpc: bool,
        dnt: bool,
        originals: list[Any] | None,
        failed: dict[int, list[str]],
    ) -> Sorted:
        """`originals` (by call index) is what a dead letter keeps when the call was
        translated from another protocol; `failed` holds reasons found before validation."""
        out = Sorted()
        events, invalid, errors = out.events, out.invalid, out.errors
        rules = self.rules
        for call in calls:
            payload = call.payload
            if isinstance(payload, dict):
                payload = intake.inherit(payload, shared)
            granted, stripped = GRANTED, False
            if isinstance(payload, dict) and not failed.get(call.index):
                granted = consent.resolve(payload, rules, gpc, dnt)
                if granted.signal:
                    CONSENT_SIGNALS.labels(source, granted.signal).inc()
                if not granted.analytics:
                    kind = payload.get("type")  # may be anything, even unhashable
                    if isinstance(kind, str) and kind in consent.IDENTITY_CALLS:
                        CONSENT_DROPPED.labels(source, kind).inc()
                        out.dropped += 1
                        continue
                    payload = self._cookieless(payload, source, received_at, ip, user_agent)
                    stripped = True
            reasons = failed.get(call.index) or self._check(call, payload, received_at, source)
            if not reasons:
                try:
                    events.append(
                        to_record(
                            payload,
                            source=source,
                            received_at_ms=received_at,
                            ip=ip,
                            header_user_agent=user_agent,
                            enricher=self.enricher,
                            max_skew_ms=self.max_skew_ms,
                            consent=granted,
                        )
                    )
                    continue
                except (ValueError, TypeError, KeyError) as exc:  # never lose the batch for one
                    reasons = [f"could not normalize event: {exc}"]
            if stripped:  # a dead letter must not keep what consent withheld
                original = payload
            else:
                original = originals[call.index] if originals is not None else call.payload
            record = dead_letter(original, reasons, source, received_at)
            invalid.append(record)
            errors.append(
                {"index": call.index, "messageId": record["message_id"], "reasons": reasons}
            )
        return out

    def _cookieless(
        self, call: dict[str, Any], source: str, received_at: int, ip: str, user_agent: str
    ) -> dict[str, Any]:
        """The call without identities, under its daily cookieless visitor id."""
        context = call.get("context")
        context = context if isinstance(context, dict) else {}
        visitor_ip = context.get("ip") if isinstance(context.get("ip"), str) else ""
        agent = context.get("userAgent") if isinstance(context.get("userAgent"), str) else ""
        visitor_id = consent.cookieless_id(
            self.salt.for_time(received_at), source, visitor_ip or ip, agent or user_agent
        )
        _cookieless(source).inc()
        return consent.without_identity(call, visitor_id)

    def _check(self, call: intake.Call, payload: Any, received_at: int, source: str) -> list[str]:
        if call.size > intake.MAX_EVENT_BYTES:
            return [f"event is larger than 32 KB ({call.size} bytes)"]
        validator = self.validator
        reasons = validator.validate(payload, received_at_ms=received_at)
        if reasons or source not in validator.plans:
            return reasons
        plan, violations = validator.plan_violations(payload, source)
        if plan is None or not violations:
            return []
        if not plan.flags:
            return [f"tracking plan: {v}" for v in violations]
        context = payload.get("context")
        payload["context"] = {
            **(context if isinstance(context, dict) else {}),
            "tracking_plan": {"source": plan.source, "violations": violations},
        }
        return []


def dead_letter(payload: Any, reasons: list[str], source: str, received_at: int) -> InvalidRecord:
    try:
        text = orjson.dumps(payload).decode()
    except TypeError:
        text = repr(payload)
    message_id = (  # Snowplow's event id is `eid`
        payload.get("messageId") or payload.get("eid") if isinstance(payload, dict) else None
    )
    if not isinstance(message_id, str) or not message_id:
        message_id = derive_message_id(payload, source)
    return InvalidRecord(
        received_at=received_at,
        source=source,
        reasons=reasons,
        payload=text,
        message_id=message_id,
        stage="collector",
    )
