"""Query-string parameters of the API: parsed and checked here, bound server-side later.

Every function raises `ParamError` (answered as 400 with its message) on a bad value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

SOURCE_RE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
DEFAULT_RANGE = dt.timedelta(days=7)
MAX_ID_LENGTH = 256


class ParamError(ValueError):
    """A request parameter is missing, malformed or out of range."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: dt.datetime  # UTC, inclusive
    end: dt.datetime  # UTC, exclusive


def parse_time(raw: str, name: str) -> dt.datetime:
    """ISO 8601 date or date-time (UTC when no offset is given), or epoch milliseconds."""
    raw = raw.strip()
    try:
        if raw.isdigit():
            return dt.datetime.fromtimestamp(int(raw) / 1000, dt.UTC)
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ParamError(
            f"{name}={raw!r} is not a time: use ISO 8601 (2024-05-01 or 2024-05-01T12:00:00Z)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    if not 1970 <= value.year <= 2200:
        raise ParamError(f"{name}={raw!r} is out of range")
    return value


def time_range(query: Mapping[str, str], now: dt.datetime | None = None) -> TimeRange:
    """`from` and `to`; by default the 7 days up to now."""
    now = now or dt.datetime.now(dt.UTC)
    end = parse_time(query["to"], "to") if query.get("to") else now
    start = parse_time(query["from"], "from") if query.get("from") else end - DEFAULT_RANGE
    if start >= end:
        raise ParamError("from must be earlier than to")
    return TimeRange(start, end)


def source(query: Mapping[str, str]) -> str | None:
    raw = query.get("source")
    if raw is None or raw == "":
        return None
    if not SOURCE_RE.match(raw):
        raise ParamError("source may hold letters, digits, '.', '_', ':' and '-' only (1-100)")
    return raw


def integer(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ParamError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ParamError(f"{name} must be between {lo} and {hi}")
    return value


def identifier(raw: str, name: str) -> str:
    """A visitor id from the path: any printable text up to 256 characters."""
    if not raw or len(raw) > MAX_ID_LENGTH or not raw.isprintable():
        raise ParamError(f"{name} must be 1-{MAX_ID_LENGTH} printable characters")
    return raw


def clickhouse_time(value: dt.datetime) -> str:
    """The text a DateTime64(3, 'UTC') parameter takes."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
