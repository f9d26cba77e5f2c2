"""Topic record -> ClickHouse row: pure functions, one row builder per table.

Each topic the sink reads maps to one table (`ROUTES`). `to_row` never raises: a
record that cannot become a row (not JSON, not an object, a required field missing,
a value of the wrong kind, a time outside 1900-2299) becomes an `invalid_events` row
that says why. Other value ranges are not checked here: ClickHouse (and the driver
encoding for the column type) is the judge, and the writer turns a row it rejects
into an `invalid_events` row too (`rejected_row`).

Rows are tuples in the order of `Table.columns`. The same record always gives the
same row (no clocks, no counters), so a replay writes identical rows and
ReplacingMergeTree collapses them.

Times arrive as epoch milliseconds (stream/records.py). Also taken: integral floats
and digit strings (still milliseconds: a number is never read as seconds) and ISO 8601
text (UTC unless it has an offset).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

import orjson

try:  # optional: decodes events 2.5x faster; without it the orjson path does the same
    import msgspec
except ImportError:  # pragma: no cover - depends on the installation
    msgspec = None

from stream import topics
from stream.config import Settings
from stream.journey.state import state_json

INVALID_STAGE = "sink"


class Origin(Protocol):
    """Where a record came from (ms timestamp); an aiokafka ConsumerRecord is one."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...


class Record(NamedTuple):
    """A plain Origin with its value, for tools and tests."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes | None = None


class RowError(ValueError):
    """The record cannot become a row; `reasons` says why, one line per problem."""

    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    build: Callable[[dict[str, Any], Origin], tuple]

    @property
    def source_index(self) -> int | None:
        return self.columns.index("source") if "source" in self.columns else None


# --- value converters: return the column value or raise ValueError/TypeError ----------


def text(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def json_text(value: Any) -> bytes:
    """JSON for a String column holding an object, as UTF-8 bytes (the driver writes
    bytes as they are; every value of such a column must be bytes)."""
    if type(value) is str:
        return value.encode()
    if value is None:
        return b"{}"
    return orjson.dumps(value)


# DateTime64(3) holds 1900-01-01 .. 2299-12-31; outside it ClickHouse would store a
# different time rather than refuse, so the range is checked here.
MIN_MS = -2_208_988_800_000
MAX_MS = 10_413_791_999_999


def millis(value: Any) -> int:
    if type(value) is int:
        ms = value
    elif type(value) is float and value.is_integer():
        ms = int(value)
    elif isinstance(value, str) and value:
        if value.lstrip("-").isdigit():
            ms = int(value)
        else:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            ms = int(parsed.timestamp() * 1000)
    else:
        raise ValueError(f"not a time in epoch milliseconds: {value!r}")
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError(f"time out of range (1900-2299): {value!r}")
    return ms


def millis_or_none(value: Any) -> int | None:
    return None if value is None else millis(value)


def seconds(value: Any) -> int:
    """For DateTime (second precision) columns: ms on the wire -> epoch seconds."""
    return millis(value) // 1000


def integer(value: Any) -> int:
    if type(value) is int:
        return value
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"not a whole number: {value!r}")
        return int(value)
    if isinstance(value, str):
        return int(value)
    raise TypeError(f"not a number: {value!r}")


def number(value: Any) -> float:
    if type(value) is float:
        return value
    if value is None:
        return 0.0
    if isinstance(value, int | str):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


def flag(value: Any) -> bool:
    if type(value) is bool:
        return value
    if value is None:
        return False
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no", ""):
            return False
    raise ValueError(f"not true or false: {value!r}")


def strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text(v) for v in value]
    raise TypeError(f"not a list of strings: {value!r}")


# --- generic builder for the journey tables -------------------------------------------

Converter = Callable[[Any], Any]


def builder(
    fields: tuple[tuple[str, Converter], ...],
    required: tuple[str, ...],
    fallbacks: dict[str, str] | None = None,
) -> Callable[[dict[str, Any], Origin], tuple]:
    """A row builder: `required` fields must be present and non-empty; a field named in
    `fallbacks` takes another field's value when absent."""
    fallbacks = fallbacks or {}

    def build(record: dict[str, Any], origin: Origin) -> tuple:
        missing = [name for name in required if record.get(name) in (None, "")]
        if missing:
            raise RowError([f"{name}: required" for name in missing])
        if fallbacks:
            record = record | {
                name: record.get(other)
                for name, other in fallbacks.items()
                if record.get(name) is None
            }
        get = record.get
        try:
            return tuple([convert(get(name)) for name, convert in fields])
        except (TypeError, ValueError, OverflowError):
            raise RowError(_field_reasons(record, fields)) from None

    return build


def _field_reasons(record: dict[str, Any], fields) -> list[str]:
    reasons = []
    for name, convert in fields:
        try:
            convert(record.get(name))
        except (TypeError, ValueError, OverflowError) as exc:
            reasons.append(f"{name}: {exc}")
    return reasons or ["unreadable record"]


# --- events: the hot path, written out --------------------------------------------------

# Column order of an events row (inserts name their columns; the table's order differs).
EVENT_TEXT = (
    "type", "event", "name", "visitor_id", "anonymous_id", "user_id", "previous_id",
    "source", "url", "path", "referrer", "title", "ip", "user_agent", "browser", "os",
    "device_type", "ref_source", "ref_medium", "search_engine", "utm_source", "utm_medium",
    "utm_campaign", "utm_term", "utm_content", "click_id",
)  # fmt: skip
EVENT_COLUMNS = (
    "message_id", *EVENT_TEXT, "session_id", "properties", "traits", "context",
    "ts", "received_at", "sent_at", "is_bot", "_topic", "_partition", "_offset",
)  # fmt: skip
_event_text = itemgetter("message_id", *EVENT_TEXT)
_VISITOR = 1 + EVENT_TEXT.index("visitor_id")


def event_row(r: dict[str, Any], o: Origin) -> tuple:
    """An EventRecord as the collector writes it takes the fast path; anything else
    (missing fields, numbers as text, ISO times) the careful one."""
    try:
        row = _exact_event_row(r, o)
    except (KeyError, TypeError, ValueError, OverflowError):
        row = None
    return row if row is not None else _careful_event_row(r, o)


def _exact_event_row(r: dict[str, Any], o: Origin) -> tuple | None:
    texts = _event_text(r)  # message_id first
    session_id = r.get("session_id", "")
    ts, received_at, sent_at, is_bot = r["ts"], r["received_at"], r["sent_at"], r["is_bot"]
    if (
        set(map(type, texts)) != {str}
        or not texts[0]
        or not texts[_VISITOR]
        or type(session_id) is not str
        or type(ts) is not int
        or type(received_at) is not int
        or not (MIN_MS <= ts <= MAX_MS and MIN_MS <= received_at <= MAX_MS)
        or (sent_at is not None and (type(sent_at) is not int or not MIN_MS <= sent_at <= MAX_MS))
        or type(is_bot) is not bool
    ):
        return None
    return (
        *texts,
        session_id,
        json_text(r["properties"]),
        json_text(r["traits"]),
        json_text(r["context"]),
        ts,
        received_at,
        sent_at,
        is_bot,
        o.topic,
        o.partition,
        o.offset,
    )


def _careful_event_row(r: dict[str, Any], o: Origin) -> tuple:
    message_id = r.get("message_id")
    if type(message_id) is not str or not message_id:
        raise RowError(["message_id: required"])
    try:
        values = {name: text(r.get(name)) for name in EVENT_TEXT}
        values["visitor_id"] = values["visitor_id"] or values["anonymous_id"] or values["user_id"]
        received_at = r.get("received_at")
        return (
            message_id,
            *values.values(),
            text(r.get("session_id")),
            json_text(r.get("properties")),
            json_text(r.get("traits")),
            json_text(r.get("context")),
            millis(r.get("ts")),
            o.timestamp if received_at is None else millis(received_at),
            millis_or_none(r.get("sent_at")),
            flag(r.get("is_bot")),
            o.topic,
            o.partition,
            o.offset,
        )
    except (TypeError, ValueError, OverflowError):
        raise RowError(_field_reasons(r, EVENT_CHECKS)) from None


# The fields of an event that can fail to convert, to name them in the reasons.
EVENT_CHECKS = (
    ("ts", millis),
    ("received_at", millis_or_none),
    ("sent_at", millis_or_none),
    ("is_bot", flag),
    ("properties", json_text),
    ("traits", json_text),
    ("context", json_text),
)


EVENTS = Table("events", EVENT_COLUMNS, event_row)


# --- events, faster: decoded straight from bytes when msgspec is installed ---------------
# The same row as event_row for a record the collector wrote (the JSON columns keep the
# record's own spelling of the object); None sends anything else down the path above.
# About 2.5x faster than orjson.loads + event_row (benchmarks/sink_throughput.py).

if msgspec is not None:
    _RAW_EMPTY = msgspec.Raw(b"{}")
    _WireEvent = msgspec.defstruct(
        "WireEvent",
        [
            ("message_id", str),
            *((name, str, "") for name in EVENT_TEXT),
            ("session_id", str, ""),
            ("properties", msgspec.Raw, _RAW_EMPTY),
            ("traits", msgspec.Raw, _RAW_EMPTY),
            ("context", msgspec.Raw, _RAW_EMPTY),
            ("ts", int),
            ("received_at", int),
            ("sent_at", int | None, None),
            ("is_bot", bool, False),
        ],
        kw_only=True,
    )
    _decode_event = msgspec.json.Decoder(_WireEvent).decode
    _astuple = msgspec.structs.astuple
    _JSON_COLUMNS = slice(len(EVENT_TEXT) + 2, len(EVENT_TEXT) + 5)
    _TIMES = slice(len(EVENT_TEXT) + 5, len(EVENT_TEXT) + 8)
    _OPENERS = (b"{", b"[")


def wire_event_row(value: bytes, o: Origin) -> tuple | None:
    if msgspec is None:
        return None
    try:
        values = _astuple(_decode_event(value))
    except msgspec.MsgspecError:
        return None
    # Written out (no comprehensions, no star-unpacking): this runs for every event.
    raw_properties, raw_traits, raw_context = values[_JSON_COLUMNS]
    properties, traits, context = bytes(raw_properties), bytes(raw_traits), bytes(raw_context)
    ts, received_at, sent_at = values[_TIMES]
    if (
        not values[0]
        or not values[_VISITOR]
        # null, "text": the slow path
        or properties[:1] not in _OPENERS
        or traits[:1] not in _OPENERS
        or context[:1] not in _OPENERS
        or not MIN_MS <= ts <= MAX_MS
        or not MIN_MS <= received_at <= MAX_MS
        or (sent_at is not None and not MIN_MS <= sent_at <= MAX_MS)
    ):
        return None
    return (
        values[: _JSON_COLUMNS.start]
        + (properties, traits, context)
        + values[_JSON_COLUMNS.stop :]
        + (o.topic, o.partition, o.offset)
    )


# --- invalid events -------------------------------------------------------------------

INVALID_COLUMNS = (
    "received_at", "source", "reasons", "payload", "message_id", "stage", "error",
    "_topic", "_partition", "_offset",
)  # fmt: skip


def _payload_id(topic: str, payload: bytes) -> str:
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=16).hexdigest()


def invalid_record_row(r: dict[str, Any], o: Origin) -> tuple:
    """An InvalidRecord from the collector or the processor (clickstream.invalid)."""
    try:
        payload = text(r.get("payload"))
        received_at = r.get("received_at")
        return (
            o.timestamp if received_at is None else millis(received_at),
            text(r.get("source")),
            strings(r.get("reasons")),
            payload,
            text(r.get("message_id")) or _payload_id(o.topic, payload.encode()),
            text(r.get("stage")),
            text(r.get("error")),
            o.topic,
            o.partition,
            o.offset,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise RowError([f"unreadable invalid record: {exc}"]) from None


INVALID_EVENTS = Table("invalid_events", INVALID_COLUMNS, invalid_record_row)


def invalid_row(
    origin: Origin,
    value: bytes | None,
    reasons: list[str],
    error: str = "",
    source: str = "",
    message_id: str = "",
) -> tuple:
    """A row for invalid_events written by the sink itself (stage 'sink')."""
    payload = value or b""
    return (
        origin.timestamp,
        source,
        reasons,
        payload.decode("utf-8", "replace"),
        message_id or _payload_id(origin.topic, payload),
        INVALID_STAGE,
        error,
        origin.topic,
        origin.partition,
        origin.offset,
    )


def rejected_row(table: Table, row: tuple, origin: Origin, value: bytes | None, error: str):
    """invalid_events row for a row ClickHouse refused for its content."""
    index = table.source_index
    source = row[index] if index is not None and isinstance(row[index], str) else ""
    message_id = row[0] if table is EVENTS else ""
    return invalid_row(
        origin,
        value,
        [f"{table.name}: rejected by ClickHouse"],
        error=error,
        source=source,
        message_id=message_id,
    )


# --- journey tables -------------------------------------------------------------------


def journey_table(
    name: str,
    fields: tuple[tuple[str, Converter], ...],
    required: tuple[str, ...],
    fallbacks: dict[str, str] | None = None,
) -> Table:
    return Table(name, tuple(f for f, _ in fields), builder(fields, required, fallbacks))


SESSIONS = journey_table(
    "sessions",
    (
        ("session_id", text),
        ("visitor_id", text),
        ("anonymous_id", text),
        ("user_id", text),
        ("source", text),
        ("started_at", millis),
        ("ended_at", millis),
        ("duration_s", number),
        ("pageviews", integer),
        ("events", integer),
        ("engaged_seconds", number),
        ("bounce", flag),
        ("landing_page", text),
        ("exit_page", text),
        ("referrer", text),
        ("ref_source", text),
        ("ref_medium", text),
        ("utm_source", text),
        ("utm_medium", text),
        ("utm_campaign", text),
        ("click_id", text),
        ("device_type", text),
        ("browser", text),
        ("os", text),
        ("is_bot", flag),
        ("stage_reached", text),
        ("cart_value", number),
        ("cart_items", integer),
        ("orders", integer),
        ("revenue", number),
        ("refunds", number),
        ("is_new_visitor", flag),
        ("closed", flag),
        ("close_reason", text),
        ("version", integer),
    ),
    required=("session_id", "started_at"),
    fallbacks={"ended_at": "started_at"},
)

STAGE_TRANSITIONS = journey_table(
    "stage_transitions",
    (
        ("idempotency_key", text),
        ("visitor_id", text),
        ("anonymous_id", text),
        ("user_id", text),
        ("source", text),
        ("from_stage", text),
        ("to_stage", text),
        ("ts", millis),
        ("session_id", text),
        ("event_id", text),
    ),
    required=("idempotency_key", "to_stage", "ts"),
)

TRIGGERS = journey_table(
    "triggers",
    (
        ("idempotency_key", text),
        ("trigger", text),
        ("visitor_id", text),
        ("anonymous_id", text),
        ("user_id", text),
        ("source", text),
        ("ts", millis),
        ("session_id", text),
        ("cart_items", json_text),
        ("cart_value", number),
        ("currency", text),
        ("last_product_viewed", json_text),
        ("order_id", text),
        ("revenue", number),
    ),
    required=("idempotency_key", "trigger", "ts"),
)

VISITORS = journey_table(
    "visitors",
    (
        ("visitor_id", text),
        ("anonymous_id", text),
        ("user_id", text),
        ("source", text),
        ("first_seen", millis),
        ("last_seen", millis),
        ("sessions", integer),
        ("orders", integer),
        ("revenue", number),
        ("lifetime_value", number),
        ("stage", text),
        ("first_utm_source", text),
        ("first_utm_medium", text),
        ("first_utm_campaign", text),
        ("first_referrer", text),
        ("first_landing_page", text),
        ("version", integer),
    ),
    required=("visitor_id", "first_seen"),
    fallbacks={"last_seen": "first_seen"},
)

CUSTOMERS = journey_table(
    "customers",
    (
        ("user_id", text),
        ("visitor_ids", strings),
        ("devices", integer),
        ("first_seen", millis),
        ("last_seen", millis),
        ("sessions", integer),
        ("orders", integer),
        ("revenue", number),
        ("lifetime_value", number),
        ("stage", text),
        ("first_utm_source", text),
        ("first_utm_medium", text),
        ("first_utm_campaign", text),
        ("first_referrer", text),
        ("first_landing_page", text),
        ("version", integer),
    ),
    required=("user_id", "first_seen"),
    fallbacks={"last_seen": "first_seen"},
)

METRIC_FIGURES = (
    "visitors", "new_visitors", "returning_visitors", "sessions", "bounces", "pageviews",
    "engaged_seconds", "sessions_awareness", "sessions_consideration", "sessions_decision",
    "sessions_purchase", "sessions_retention", "sessions_advocacy", "stage_transitions",
    "carts_created", "carts_abandoned", "checkouts", "orders", "revenue", "refunds",
    "ratings_count", "ratings_sum", "nps_count", "nps_promoters", "nps_detractors",
)  # fmt: skip
FLOAT_FIGURES = frozenset({"engaged_seconds", "revenue", "refunds", "ratings_sum"})

JOURNEY_METRICS_1M = journey_table(
    "journey_metrics_1m",
    (
        ("window_start", seconds),
        ("source", text),
        ("campaign", text),
        ("device_type", text),
        ("visitor_type", text),
        ("partition", integer),
        *((name, number if name in FLOAT_FIGURES else integer) for name in METRIC_FIGURES),
        ("version", integer),
    ),
    required=("window_start",),
)

TABLES = (
    EVENTS,
    INVALID_EVENTS,
    SESSIONS,
    STAGE_TRANSITIONS,
    TRIGGERS,
    VISITORS,
    CUSTOMERS,
    JOURNEY_METRICS_1M,
)

# Topic (without the configured prefix) -> table.
ROUTES: dict[str, Table] = {
    topics.EVENTS: EVENTS,
    topics.INVALID: INVALID_EVENTS,
    topics.SESSIONS: SESSIONS,
    topics.STAGE_CHANGES: STAGE_TRANSITIONS,
    topics.TRIGGERS: TRIGGERS,
    topics.VISITORS: VISITORS,
    topics.CUSTOMERS: CUSTOMERS,
    topics.METRICS: JOURNEY_METRICS_1M,
}


def routes(settings: Settings) -> dict[str, Table]:
    """Topic as named on the broker (prefix included) -> table; with the processor's
    state archived (Settings.archives_state), its changelog topics -> processor_state."""
    out = {settings.topic(name): table for name, table in ROUTES.items()}
    if settings.archives_state:
        out.update(dict.fromkeys(topics.changelog_topics(settings), PROCESSOR_STATE))
    return out


def to_row(table: Table, value: bytes | None, origin: Origin) -> tuple[Table, tuple]:
    """The row for one record, or an invalid_events row saying why there is none."""
    if table is EVENTS and value is not None:
        row = wire_event_row(value, origin)
        if row is not None:
            return table, row
    try:
        record = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError as exc:
        return INVALID_EVENTS, invalid_row(origin, value, [f"{table.name}: not JSON ({exc})"])
    if not isinstance(record, dict):
        return INVALID_EVENTS, invalid_row(origin, value, [f"{table.name}: not a JSON object"])
    try:
        return table, table.build(record, origin)
    except RowError as exc:
        source = record.get("source")
        message_id = record.get("message_id")
        return INVALID_EVENTS, invalid_row(
            origin,
            value,
            [f"{table.name}: {reason}" for reason in exc.reasons],
            source=source if isinstance(source, str) else "",
            message_id=message_id if isinstance(message_id, str) else "",
        )


# --- processor state (the Faust tables' changelog records) ----------------------------
#
# Archived so that a fresh embedded broker can be re-seeded (stream/restore.py). Key and
# value are raw bytes, stored as they are; a tombstone (value None) is a deleted row.
#
# The version must make the newest record of a key win, but changelog offsets start at
# 0 again on every fresh embedded broker. So: version = (epoch << 40) | offset, where
# each sink instance takes epoch = (max version in the table >> 40) + 1 when it starts
# (`epoch_after`). Why the newest record of a key K always wins:
# * a key lives in one partition, whose offsets grow within one broker life;
# * a sink starts after every row already there was written and is the only writer
#   while it runs (one sink, as `clickstream run` has), so its epoch beats every row
#   from earlier broker lives and earlier sink instances;
# * a sink restarted within the same broker life (crash, rebalance, supervisor restart)
#   gets a higher epoch and reads again from its group's last commit c. If K's last
#   record is at o >= c, it is read again and written with the higher epoch: it wins,
#   and every other row of K with that epoch has a lower offset. If o < c, it was
#   written (commits follow inserts) by an earlier instance, with that instance's
#   epoch, and no record of K comes after it: no row can beat it. Rows written twice
#   (replayed) hold the same value, so which copy wins does not matter.
# 40 bits hold 1.1e12 offsets per partition; 24 bits, 16.7 million sink starts.

OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
MAX_EPOCH = (1 << (64 - OFFSET_BITS)) - 1


def epoch_after(max_version: int | None) -> int:
    """The epoch of a sink starting now, given the largest version archived so far."""
    epoch = ((max_version or 0) >> OFFSET_BITS) + 1
    if epoch > MAX_EPOCH:
        raise ValueError("processor_state: epoch space exhausted")
    return epoch


def state_version(epoch: int, offset: int) -> int:
    return (epoch << OFFSET_BITS) | (offset & OFFSET_MASK)


def _not_built_from_json(record: dict[str, Any], origin: Origin) -> tuple:
    raise RowError(["processor_state rows are built by state_row"])


PROCESSOR_STATE = Table(
    "processor_state",
    ("table_name", "partition", "key", "value", "deleted", "version", "archived_at"),
    _not_built_from_json,
)


def state_row(
    table_name: str, key: bytes | None, value: bytes | None, origin: Origin, epoch: int
) -> tuple:
    """The processor_state row of one changelog record (never raises). A visitor state
    is archived as its JSON (the table value is LZ4-compressed: ClickHouse compresses
    the column better across rows, and the archive stays readable)."""
    if value is not None and table_name == "visitors":
        with contextlib.suppress(Exception):  # else archived as it came
            value = state_json(value)
    return (
        table_name,
        origin.partition,
        key or b"",
        b"" if value is None else value,
        1 if value is None else 0,
        state_version(epoch, origin.offset),
        max(0, origin.timestamp or 0),
    )
