"""Official server-side SDKs, unmodified, pointed at the collector: Segment's
analytics-python (segment-analytics-python) and RudderStack's rudder-sdk-python.

Each call they make must land in ClickHouse under the SDK's own messageId, gzip
bodies included, and the SDK's retries (a lost answer, a dropped connection) must
not leave a second row for one messageId.
"""

from __future__ import annotations

import gzip as gzip_codec
import http.client
import importlib.util
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.support.pipeline import WRITE_KEY

pytestmark = pytest.mark.integration

segment = pytest.importorskip("segment.analytics", reason="pip install segment-analytics-python")
needs_rudder = pytest.mark.skipif(
    importlib.util.find_spec("rudderstack") is None, reason="pip install rudder-sdk-python"
)

EVENT_COLUMNS = "message_id, type, event, name, anonymous_id, user_id, previous_id, source, path"


def quoted(ids) -> str:
    return ",".join(f"'{i}'" for i in sorted(ids))


def rows_by_id(pipeline, ids: list[str]) -> dict[str, list]:
    """The events rows of these messageIds once all of them arrived, keyed by message_id."""
    pipeline.wait_for(
        f"SELECT count() FROM clickstream.events FINAL WHERE message_id IN ({quoted(ids)})",
        [[len(ids)]],
    )
    rows = pipeline.sql(
        f"SELECT {EVENT_COLUMNS} FROM clickstream.events FINAL WHERE message_id IN ({quoted(ids)})"
    )
    return {row[0]: row for row in rows}


def assert_no_duplicates(pipeline, ids: list[str]) -> None:
    """One row per messageId in clickstream.events FINAL."""
    rows = pipeline.sql(
        "SELECT count(), uniqExact(message_id) FROM clickstream.events FINAL "
        f"WHERE message_id IN ({quoted(ids)})"
    )
    assert rows == [[len(ids), len(ids)]], rows


def every_call(client, visitor: str, user: str) -> dict[str, dict]:
    """One call of each kind the SDK has; returns the sent messages by kind."""
    calls = {
        "track": client.track(
            anonymous_id=visitor,
            event="Product Viewed",
            properties={"product_id": "sku-sdk-1", "price": 19.99, "currency": "USD"},
        ),
        "page": client.page(
            anonymous_id=visitor,
            name="Home",
            properties={"url": "https://shop.example/sdk/home", "path": "/sdk/home"},
        ),
        "identify": client.identify(
            user_id=user, anonymous_id=visitor, traits={"email": "sdk@example.com"}
        ),
        "track_user": client.track(user_id=user, event="Signed Up", properties={"method": "sdk"}),
        "alias": client.alias(previous_id=visitor, user_id=user),
        "screen": client.screen(user_id=user, name="Settings", properties={"tab": "profile"}),
    }
    for kind, (queued, message) in calls.items():
        assert queued, (kind, message)
    return {kind: message for kind, (_, message) in calls.items()}


def assert_landed(pipeline, sent: dict[str, dict], visitor: str, user: str) -> None:
    rows = rows_by_id(pipeline, [m["messageId"] for m in sent.values()])

    def row(kind: str) -> dict:
        return dict(zip(EVENT_COLUMNS.split(", "), rows[sent[kind]["messageId"]], strict=True))

    track = row("track")
    assert track["message_id"] == sent["track"]["messageId"]
    assert {k: v for k, v in track.items() if k != "message_id"} == {
        "type": "track",
        "event": "Product Viewed",
        "name": "",
        "anonymous_id": visitor,
        "user_id": "",
        "previous_id": "",
        "source": "test",
        "path": "",
    }
    assert (row("page")["type"], row("page")["name"], row("page")["path"]) == (
        "page",
        "Home",
        "/sdk/home",
    )
    assert (row("identify")["type"], row("identify")["user_id"]) == ("identify", user)
    assert row("identify")["anonymous_id"] == visitor
    assert (row("track_user")["event"], row("track_user")["user_id"]) == ("Signed Up", user)
    assert (row("alias")["type"], row("alias")["previous_id"], row("alias")["user_id"]) == (
        "alias",
        visitor,
        user,
    )
    assert (row("screen")["type"], row("screen")["name"]) == ("screen", "Settings")
    assert_no_duplicates(pipeline, list(rows))


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_sdk_sync_mode_every_call_lands(pipeline, gzip):
    client = segment.Client(
        write_key=WRITE_KEY, host=pipeline.collector, sync_mode=True, gzip=gzip, max_retries=0
    )
    visitor, user = f"seg-anon-{uuid.uuid4()}", f"seg-user-{uuid.uuid4()}"
    sent = every_call(client, visitor, user)
    assert_landed(pipeline, sent, visitor, user)
    [[traits, context]] = pipeline.sql(
        "SELECT traits, context FROM clickstream.events FINAL "
        f"WHERE message_id = '{sent['identify']['messageId']}'"
    )
    assert json.loads(traits) == {"email": "sdk@example.com"}
    assert json.loads(context)["library"]["name"] == "analytics-python"


def test_segment_sdk_background_batches_gzip(pipeline):
    """The default mode: a consumer thread batching up to upload_size calls per request."""
    errors = []
    client = segment.Client(
        write_key=WRITE_KEY,
        host=pipeline.collector,
        gzip=True,
        upload_size=10,
        upload_interval=0.1,
        on_error=lambda exc, batch: errors.append((exc, len(batch))),
    )
    visitor = f"seg-batch-{uuid.uuid4()}"
    ids = []
    for i in range(35):
        queued, message = client.track(
            anonymous_id=visitor,
            event="Product Added",
            properties={"product_id": f"p{i}", "sku": f"S{i}", "price": 1.0 + i, "quantity": 1},
        )
        assert queued
        ids.append(message["messageId"])
    client.shutdown()
    assert not errors, errors
    rows = rows_by_id(pipeline, ids)
    assert {r[2] for r in rows.values()} == {"Product Added"}
    assert {r[4] for r in rows.values()} == {visitor}
    assert_no_duplicates(pipeline, ids)


class FlakyProxy:
    """An HTTP proxy in front of the collector that forwards every request, then
    loses the answer of the first ones: `plan` says what the client gets for request
    1, 2, ... ("503": an error answer, "drop": the connection closes unanswered,
    anything after the plan: the collector's own answer). So the collector has
    stored the batch each time, and the SDK, seeing a failure, sends it again.
    Request n is forwarded after 50 ms * n, as a network slower on each retry."""

    def __init__(self, target: str, plan: list[str]) -> None:
        self.target = urlsplit(target)
        self.plan = list(plan)
        self.bodies: list[dict] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    attempt = len(proxy.bodies)
                time.sleep(0.05 * attempt)  # the network is slower on each retry
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower()
                    in ("content-type", "content-encoding", "authorization", "user-agent")
                }
                try:
                    status, data = forward(proxy.target, self.path, body, headers)
                except OSError as exc:  # the collector is down: the SDK must retry
                    status, data = 502, json.dumps({"error": repr(exc)}).encode()
                with proxy.lock:
                    proxy.bodies.append(json.loads(_inflate(body, headers)))
                    proxy.answers.append(status)
                    step = proxy.plan.pop(0) if proxy.plan else "pass"
                if step == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if step == "503":
                    status, data = 503, b'{"success": false, "error": "lost answer"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def forward(target, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=15)
    try:
        upstream.request("POST", path, body, headers)
        answer = upstream.getresponse()
        return answer.status, answer.read()
    finally:
        upstream.close()


def _inflate(body: bytes, headers: dict[str, str]) -> bytes:
    encoding = {k.lower(): v for k, v in headers.items()}.get("content-encoding", "")
    return gzip_codec.decompress(body) if encoding == "gzip" else body


# SDKs restamp sentAt on every retry, so the skew-corrected ts of the copies differs;
# the events table's key leaves ts out, so the copies still collapse under FINAL.
@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_sdk_retries_leave_one_row_per_message(pipeline, gzip):
    """A 503 and a dropped connection after the collector stored the batch: the SDK
    resends the same messages (new sentAt, same messageIds) twice more."""
    errors = []
    visitor = f"seg-retry-{uuid.uuid4()}"
    with FlakyProxy(pipeline.collector, ["503", "drop"]) as proxy:
        client = segment.Client(
            write_key=WRITE_KEY,
            host=proxy.url,
            gzip=gzip,
            upload_size=100,
            upload_interval=0.2,
            max_retries=5,
            on_error=lambda exc, batch: errors.append(exc),
        )
        ids = []
        for i in range(5):
            _, message = client.track(
                anonymous_id=visitor,
                event="Product Viewed",
                properties={"product_id": f"r{i}", "price": 5.0, "currency": "USD"},
            )
            ids.append(message["messageId"])
        client.shutdown()
    assert not errors, errors
    assert proxy.answers == [200, 200, 200], proxy.answers
    sent = [sorted(m["messageId"] for m in body["batch"]) for body in proxy.bodies]
    assert sent == [sorted(ids)] * 3, "the SDK should have sent the same batch three times"
    assert len({body["sentAt"] for body in proxy.bodies}) == 3  # restamped on every retry
    pipeline.wait_for(
        f"SELECT uniqExact(message_id) FROM clickstream.events WHERE message_id IN ({quoted(ids)})",
        [[len(ids)]],
    )
    time.sleep(2.0)  # the copies from the later sends are through the sink by now
    assert_no_duplicates(pipeline, ids)


def rudder_client(**options):
    from rudderstack.analytics import Client

    return Client(write_key=WRITE_KEY, **options)


@needs_rudder
@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_rudderstack_sdk_every_call_lands(pipeline, gzip):
    client = rudder_client(host=pipeline.collector, sync_mode=True, gzip=gzip, max_retries=0)
    visitor, user = f"rs-anon-{uuid.uuid4()}", f"rs-user-{uuid.uuid4()}"
    sent = every_call(client, visitor, user)
    assert_landed(pipeline, sent, visitor, user)
    # RudderStack puts identify traits in context.traits, not at the top level
    [[context]] = pipeline.sql(
        "SELECT context FROM clickstream.events FINAL "
        f"WHERE message_id = '{sent['identify']['messageId']}'"
    )
    assert json.loads(context)["traits"] == {"email": "sdk@example.com"}


@needs_rudder
def test_rudderstack_sdk_background_batches(pipeline):
    errors = []
    client = rudder_client(
        host=pipeline.collector,
        upload_size=10,
        upload_interval=0.1,
        on_error=lambda exc, batch: errors.append(exc),
    )
    visitor = f"rs-batch-{uuid.uuid4()}"
    ids = [
        client.track(anonymous_id=visitor, event="Page Ping", properties={"engaged_seconds": 5})[1][
            "messageId"
        ]
        for _ in range(25)
    ]
    client.shutdown()
    assert not errors, errors
    rows_by_id(pipeline, ids)
    assert_no_duplicates(pipeline, ids)
