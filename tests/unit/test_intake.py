import base64
import gzip

import orjson
import pytest

from stream.collector import intake
from stream.collector.intake import IntakeError

pytestmark = pytest.mark.unit
KEYS = {"key-1234": "web"}


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def test_write_key_from_basic_auth_or_body():
    assert intake.resolve_source(basic("key-1234"), {}, KEYS) == "web"
    assert intake.resolve_source("", {"writeKey": "key-1234"}, KEYS) == "web"


@pytest.mark.parametrize(("header", "body"), [("", {}), (basic("nope"), {}), ("Basic !!", {})])
def test_missing_or_unknown_key_is_401(header, body):
    with pytest.raises(IntakeError) as err:
        intake.resolve_source(header, body, KEYS)
    assert err.value.status == 401


def test_gzip_is_decoded_and_bombs_are_refused():
    body = orjson.dumps({"batch": [{"type": "track"}]})
    assert intake.decode_body(gzip.compress(body), "gzip") == body
    bomb = gzip.compress(b"0" * (intake.MAX_REQUEST_BYTES + 10))
    with pytest.raises(IntakeError) as err:
        intake.decode_body(bomb, "gzip")
    assert err.value.status == 413
    with pytest.raises(IntakeError) as err:
        intake.decode_body(b"not gzip", "gzip")
    assert err.value.status == 400


def test_plain_body_over_limit_is_413():
    with pytest.raises(IntakeError) as err:
        intake.decode_body(b"x" * (intake.MAX_REQUEST_BYTES + 1), "")
    assert err.value.status == 413


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b'{"batch": [', "bad_json"), (b"\xff\xfe{}", "bad_utf8"), (b"  ", "empty")],
)
def test_bad_json_is_400(raw, code):
    with pytest.raises(IntakeError) as err:
        intake.parse_json(raw)
    assert err.value.status == 400
    assert err.value.code == code


def test_split_batch_and_single_calls():
    calls, shared = intake.split_calls({"batch": [{"a": 1}, {"b": 2}], "sentAt": "x"}, "batch")
    assert [c.index for c in calls] == [0, 1]
    assert shared == {"sentAt": "x"}
    calls, _ = intake.split_calls({"event": "X", "writeKey": "k"}, "track")
    assert calls[0].payload == {"event": "X", "type": "track"}
    with pytest.raises(IntakeError):
        intake.split_calls({"batch": []}, "batch")
    with pytest.raises(IntakeError):
        intake.split_calls([1, 2], "batch")
    with pytest.raises(IntakeError):
        intake.split_calls({"type": "page"}, "track")


def test_batch_context_is_inherited():
    call = intake.inherit(
        {"context": {"ip": "1"}}, {"context": {"library": "x", "ip": "2"}, "sentAt": "s"}
    )
    assert call == {"context": {"library": "x", "ip": "1"}, "sentAt": "s"}
