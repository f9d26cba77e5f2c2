"""One person across devices: the journey states of every visitor (device) linked to a
user id, folded into one customer journey with merge().

Each device's latest state arrives, keyed by user id, whenever its snapshot changes
(stage, sessions, orders, user id). The person keeps the newest state per device (by
its version, so a replayed or reordered record changes nothing) and the customer
record is recomputed from all of them: the earliest first touch wins, counts add up,
the stage is the furthest one (lapsed only when every device is). Recomputing from
the device states, never adding deltas, is what makes a replay safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import orjson

from stream.journey.machine import StageMachine
from stream.journey.merge import merge
from stream.journey.state import VisitorState, encode_state, state_from_data

FORMAT = 1
MAX_DEVICES = 32  # a shared login on a kiosk must not grow one value without bound


@dataclass(slots=True)
class Person:
    user_id: str
    devices: dict[str, VisitorState] = field(default_factory=dict)  # visitor id -> state
    version: int = 0  # changes taken in: only grows (a sum of device versions would
    # fall when the oldest of MAX_DEVICES devices is let go)


def link(
    person: Person | None, device: VisitorState, machine: StageMachine
) -> tuple[Person, dict | None]:
    """Take a device's state into the person; the customer record when it changed."""
    if not device.user_id:
        raise ValueError("a device state without a user id cannot be linked")
    if person is None:
        person = Person(device.user_id)
    known = person.devices.get(device.visitor_id)
    if known is not None and known.version >= device.version:
        return person, None
    # Open sessions and partition offsets are the device's business, not the person's.
    # Only what the customer record reads: a person stays far below the state bound
    # (MAX_DEVICES devices without sessions, cart or history).
    person.devices[device.visitor_id] = replace(
        device,
        sessions=[],
        closed=[],
        counted=[],
        offsets={},
        cart=[],
        history=[],
        last_product=None,
    )
    person.version += 1
    if len(person.devices) > MAX_DEVICES:
        oldest = min(person.devices.values(), key=lambda d: (d.last_seen, d.visitor_id))
        del person.devices[oldest.visitor_id]
    return person, customer_record(person, machine)


def forget(
    person: Person | None, visitor_id: str, machine: StageMachine
) -> tuple[Person | None, dict | None]:
    """A device whose journey state expired leaves its person; a person without devices
    is gone (None). The customer record when one remains and changed."""
    if person is None or visitor_id not in person.devices:
        return person, None
    del person.devices[visitor_id]
    if not person.devices:
        return None, None
    person.version += 1
    return person, customer_record(person, machine)


def gone_record(visitor_id: str) -> bytes:
    """What the identities topic carries when a device's state expired."""
    return orjson.dumps({"gone": visitor_id})


def customer_record(person: Person, machine: StageMachine) -> dict:
    devices = sorted(person.devices.values(), key=lambda d: (d.first_seen, d.visitor_id))
    merged = devices[0]
    for device in devices[1:]:
        merged = merge(merged, device, machine)
    return {
        "user_id": person.user_id,
        "visitor_ids": [d.visitor_id for d in devices],
        "devices": len(devices),
        "first_seen": merged.first_seen,
        "last_seen": merged.last_seen,
        "sessions": merged.session_count,
        "orders": merged.orders,
        "revenue": merged.revenue,
        "lifetime_value": round(merged.revenue - merged.refunded, 2),
        "stage": merged.stage,
        "first_utm_source": merged.first_utm_source,
        "first_utm_medium": merged.first_utm_medium,
        "first_utm_campaign": merged.first_utm_campaign,
        "first_referrer": merged.first_referrer,
        "first_landing_page": merged.first_landing_page,
        # Grows with every device update and only then: the ReplacingMergeTree version.
        "version": person.version,
    }


def encode_person(person: Person) -> bytes:
    devices = [orjson.Fragment(encode_state(d)) for d in person.devices.values()]
    data = [FORMAT, person.user_id, devices, person.version]
    return bytes(memoryview(orjson.dumps(data)))


def decode_person(b: bytes) -> Person:
    data = orjson.loads(b)
    if not isinstance(data, list) or len(data) not in (3, 4) or data[0] != FORMAT:
        raise ValueError(f"not a person of format {FORMAT}")
    devices = [state_from_data(row) for row in data[2]]
    # Written before the counter: start it from the sum the versions used to be.
    version = data[3] if len(data) == 4 else sum(d.version for d in devices)
    return Person(data[1], {d.visitor_id: d for d in devices}, version)
