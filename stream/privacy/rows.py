"""Which ids a row or a record names: pure functions, for the sink's and the
processor's filters (a row naming a suppressed id is never written)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

import orjson

from stream.journey.state import state_json

ID_COLUMNS = ("visitor_id", "anonymous_id", "user_id", "previous_id")
# Keys under which the SDKs and our records carry a person's ids.
PAYLOAD_ID_KEYS = frozenset(
    {
        "anonymousId",
        "anonymous_id",
        "userId",
        "user_id",
        "visitor_id",
        "previousId",
        "previous_id",
        "duid",  # Snowplow's domain user id
        "uid",
        "nuid",
    }
)
STATE_TABLES = frozenset({"visitors", "people"})  # processor tables keyed by an id


def payload_ids(payload: Any, depth: int = 0) -> Iterator[str]:
    """Every id value in a JSON payload (text or parsed), nested batches included."""
    if isinstance(payload, str | bytes):
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
    if depth > 6:
        return
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key in PAYLOAD_ID_KEYS and isinstance(value, str | int) and value != "":
                yield str(value)
            elif isinstance(value, dict | list):
                yield from payload_ids(value, depth + 1)
    elif isinstance(payload, list):
        for item in payload:
            if isinstance(item, dict | list):
                yield from payload_ids(item, depth + 1)


def state_fields(value: bytes | str) -> tuple[str, str, str]:
    """(visitor id, anonymous id, user id) of an encoded visitor state
    ([FORMAT, visitor, anonymous, user, ...], stream/journey/state.py)."""
    data = orjson.loads(state_json(value))
    return tuple(i if isinstance(i, str) else "" for i in data[1:4])  # type: ignore[return-value]


def state_ids(value: bytes | str | None) -> list[str]:
    """The ids in an encoded visitor state."""
    if not value:
        return []
    return [i for i in state_fields(value) if i]


def person_ids(value: bytes | str | None) -> list[str]:
    """The user id and every device's ids in an encoded person."""
    if not value:
        return []
    data = orjson.loads(value)
    ids = [data[1]]
    for device in data[2]:
        ids += [i for i in device[1:4] if isinstance(i, str) and i]
    return ids


def row_ids_reader(table: str, columns: tuple[str, ...]) -> Callable[[tuple], list[str]]:
    """A function giving the ids a row of `table` names (empty for id-free tables)."""
    if table == "invalid_events":
        at = columns.index("payload")
        return lambda row: list(payload_ids(row[at]))
    if table == "processor_state":
        name, key, value = (columns.index(c) for c in ("table_name", "key", "value"))

        def state_row(row: tuple) -> list[str]:
            if row[name] not in STATE_TABLES:
                return []
            key_text = (
                row[key].decode("utf-8", "replace") if isinstance(row[key], bytes) else row[key]
            )
            try:
                inner = person_ids(row[value]) if row[name] == "people" else state_ids(row[value])
            except (orjson.JSONDecodeError, TypeError, IndexError, KeyError):
                inner = []
            return [key_text, *inner]

        return state_row
    at = [columns.index(c) for c in ID_COLUMNS if c in columns]
    if "visitor_ids" in columns:
        many = columns.index("visitor_ids")
        return lambda row: [*(row[i] for i in at), *(row[many] or ())]
    if not at:
        return lambda row: ()
    if len(at) == 1:
        return lambda row, i=at[0]: (row[i],)
    return itemgetter(*at)


def event_ids(key: bytes | None, value: bytes | None) -> list[str]:
    """An event record's ids, cheaply: its key (the visitor id) and, when present, the
    user id (read without parsing the whole event when it is plain text)."""
    ids = [key.decode("utf-8", "replace")] if key else []
    if value:
        at = value.find(b'"user_id":"')
        if at >= 0:
            start = at + len(b'"user_id":"')
            end = value.find(b'"', start)
            user = value[start:end]
            if b"\\" in user:  # escaped: parse properly
                user_text = orjson.loads(value).get("user_id") or ""
            else:
                user_text = user.decode("utf-8", "replace")
            if user_text:
                ids.append(user_text)
    return ids
