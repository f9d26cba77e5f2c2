"""A load generator's HTTP/1.1 client that costs the shared CPUs little.

The benchmarks run the load generator on the same two cores as what they measure, so
its cost is taken from the system under test. aiohttp's client was about 40 % of the
pipeline load generator's py-spy samples (its request and response machinery); these
requests are written whole over keep-alive connections from a bare asyncio protocol
instead. The
collector sees the same bytes on the wire an SDK sends: a POST with Basic auth and a
JSON body, answered with a Content-Length (aiohttp's web.Response always sets one).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson

from stream.simulate.send import Answer, Retryable, read_answer
from stream.simulate.session import iso


def split_answer(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """(status, body, the bytes after it) once `buffer` holds a whole answer, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].lower()
    length_at = head.find(b"content-length:")
    if length_at < 0:
        raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
    length = int(head[length_at + 15 :].split(b"\r\n", 1)[0])
    if len(buffer) < end + 4 + length:
        return None
    return int(head[9:12]), buffer[end + 4 : end + 4 + length], buffer[end + 4 + length :]


def request_head(host: str, port: int, path: str, write_key: str, agent: str) -> bytes:
    """A POST's head up to, not including, its Content-Length line."""
    auth = base64.b64encode(f"{write_key}:".encode()).decode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\nUser-Agent: {agent}\r\n"
    ).encode()


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request in flight."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def post(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            answer = split_answer(self.buffer)
        except RuntimeError as exc:
            self._fail(exc)
            return
        if answer is not None:
            status, body, self.buffer = answer
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionError("the collector closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class RawSender:
    """`stream.simulate.send.HttpSender`'s interface (POST /v1/batch), on raw connections."""

    def __init__(self, url: str, write_key: str, concurrency: int) -> None:
        host_port = url.split("://", 1)[1].split("/", 1)[0]
        self.host, _, port = host_port.rpartition(":")
        self.port = int(port)
        self.head = request_head(
            self.host, self.port, "/v1/batch", write_key, "clickstream-simulator/1.0"
        )
        self.concurrency = concurrency
        # A slot per concurrent request: its connection, or None until one is made.
        self.idle: asyncio.Queue[_Connection | None] = asyncio.Queue()

    async def start(self) -> None:
        for _ in range(self.concurrency):
            self.idle.put_nowait(await self._connect())

    async def stop(self) -> None:
        while not self.idle.empty():
            connection = self.idle.get_nowait()
            if connection is not None and connection.transport is not None:
                connection.transport.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection

    async def send(self, calls: list[dict[str, Any]]) -> Answer:
        body = orjson.dumps({"batch": calls, "sentAt": iso(time.time_ns() // 1_000_000)})
        request = self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        connection = await self.idle.get()
        try:
            if connection is None or connection.lost:  # reconnected here, never lost as a slot
                connection = None
                connection = await self._connect()
            status, raw = await connection.post(request)
        except (OSError, RuntimeError) as exc:
            raise Retryable(f"{type(exc).__name__} {exc}".strip()) from exc
        finally:
            self.idle.put_nowait(connection)
        if status >= 500 or status == 429:
            raise Retryable(f"HTTP {status}")
        return read_answer(status, raw, len(calls))
