"""Request intake, pure: write key, body decoding, size limits, splitting a request into
calls. No I/O here, so every rule about what a request may be is unit-testable.

Limits follow Segment's tracking API: 32 KB per event, 500 KB per request.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from functools import lru_cache
from itertools import count
from typing import Any, NamedTuple

import orjson

MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
SINGLE_CALLS = {"track", "page", "identify", "alias", "screen", "group"}
# analytics.js 2.0 posts to the first letter of the call type (`/v1/t`), batches to `/v1/b`.
SHORT_PATHS = {
    "t": "track",
    "p": "page",
    "i": "identify",
    "g": "group",
    "a": "alias",
    "s": "screen",
    "b": "batch",
}


class IntakeError(Exception):
    """The whole request is refused: an HTTP status and a JSON reason."""

    def __init__(self, status: int, reason: str, code: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code  # short label for metrics


def decode_body(raw: bytes, content_encoding: str) -> bytes:
    """Undo gzip/deflate, never inflating past the request limit (a zip bomb stays small)."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > MAX_REQUEST_BYTES:
            raise IntakeError(413, "request body is larger than 500 KB", "too_large")
        return raw
    if encoding not in ("gzip", "deflate", "x-gzip"):
        raise IntakeError(415, f"unsupported Content-Encoding {encoding!r}", "bad_encoding")
    wbits = 16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        body = inflater.decompress(raw, MAX_REQUEST_BYTES + 1)
    except zlib.error:
        raise IntakeError(400, f"body is not valid {encoding} data", "bad_encoding") from None
    if len(body) > MAX_REQUEST_BYTES:
        raise IntakeError(413, "decompressed request body is larger than 500 KB", "too_large")
    return body


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise IntakeError(400, "request body is empty", "empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "utf-8" in reason.lower() or "surrogate" in reason.lower():
            raise IntakeError(400, "request body is not valid UTF-8", "bad_utf8") from None
        raise IntakeError(400, f"request body is not valid JSON: {reason}", "bad_json") from None


# Few distinct headers (one per write key): the decode is cached (a pure function of a str;
# 256 headers of at most 8 KB, aiohttp's limit, bound what a client can fill it with).
@lru_cache(maxsize=256)
def basic_auth_user(header: str) -> str:
    """The user name of an HTTP Basic Authorization header (Segment's write key), or ""."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[0]


def resolve_source(
    header: str, body: Any, write_keys: Mapping[str, str], query_key: str = ""
) -> str:
    """The source name behind the write key: the Basic user name, else body.writeKey,
    else the `writeKey` query parameter (RudderStack's sendBeacon fallback)."""
    key = basic_auth_user(header)
    if not key and isinstance(body, dict):
        candidate = body.get("writeKey")
        key = candidate if isinstance(candidate, str) else ""
    key = key or query_key
    if not key:
        raise IntakeError(
            401,
            "missing write key: send it as the HTTP Basic user name or as writeKey",
            "no_key",
        )
    source = write_keys.get(key)
    if source is None:
        raise IntakeError(401, "unknown write key", "bad_key")
    return source


class Call(NamedTuple):
    """One event of a request: its index, the decoded object, and its size as sent."""

    index: int  # type: ignore[assignment]  # (shadows tuple.index)
    payload: Any
    size: int


def split_calls(body: Any, endpoint: str) -> tuple[list[Call], dict[str, Any]]:
    """The calls of a request, and the batch-level fields (sentAt, context) they inherit."""
    if not isinstance(body, dict):
        raise IntakeError(400, "request body must be a JSON object", "bad_shape")
    if endpoint == "batch":
        batch = body.get("batch")
        if not isinstance(batch, list):
            raise IntakeError(400, "body.batch must be an array of events", "bad_shape")
        if not batch:
            raise IntakeError(400, "body.batch is empty", "empty")
        shared = {k: body[k] for k in ("sentAt", "context", "integrations") if k in body}
        return list(map(Call, count(), batch, _sizes(batch))), shared
    call = dict(body)
    call.setdefault("type", endpoint)
    call.pop("writeKey", None)
    if call.get("type") != endpoint:
        raise IntakeError(400, f"body.type must be {endpoint!r} on /v1/{endpoint}", "bad_shape")
    return [Call(0, call, _size(call))], {}


def size_of(item: Any) -> int:
    """An event's size as JSON (what the 32 KB limit counts)."""
    return _size(item)


def _sizes(items: list[Any]) -> list[int]:
    """`_size` of each item; in C unless an item cannot be encoded."""
    try:
        return list(map(len, map(orjson.dumps, items)))
    except TypeError:
        return list(map(_size, items))


def _size(item: Any) -> int:
    try:
        return len(orjson.dumps(item))
    except TypeError:
        return MAX_EVENT_BYTES + 1


def inherit(call: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Batch-level sentAt/context apply to calls that do not carry their own."""
    if not shared:
        return call
    if "sentAt" in shared and "sentAt" not in call:
        call["sentAt"] = shared["sentAt"]
    if isinstance(shared.get("context"), dict):
        context = call.get("context")
        call["context"] = (
            {**shared["context"], **context} if isinstance(context, dict) else shared["context"]
        )
    return call
