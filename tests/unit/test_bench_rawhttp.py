"""The benchmarks' bare HTTP client (benchmarks/rawhttp.py) reads answers the way the
collector writes them: whole, split across reads, or two in one read."""

from __future__ import annotations

import pytest

from benchmarks.rawhttp import split_answer

pytestmark = pytest.mark.unit

OK = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"accepted":2}'
)


def test_a_whole_answer() -> None:
    assert split_answer(OK) == (200, b'{"accepted":2}', b"")


def test_an_answer_split_across_reads_waits_for_its_body() -> None:
    for cut in (5, OK.index(b"\r\n\r\n") + 2, len(OK) - 1):
        assert split_answer(OK[:cut]) is None


def test_two_answers_in_one_read_leave_the_second() -> None:
    refused = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}"
    status, body, rest = split_answer(OK + refused)
    assert (status, body, rest) == (200, b'{"accepted":2}', refused)
    assert split_answer(rest) == (401, b"{}", b"")


def test_an_answer_without_a_length_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="Content-Length"):
        split_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")


async def test_the_sender_posts_batches_and_reconnects_after_the_server_closed() -> None:
    """RawSender against a real aiohttp server: the answer is read as HttpSender reads
    it, and a connection the server closed is replaced, not lost as a slot."""
    import orjson
    from aiohttp import web

    from benchmarks.harness import free_port
    from benchmarks.rawhttp import RawSender

    bodies: list[dict] = []

    async def batch(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        bodies.append(body)
        assert request.headers["Authorization"].startswith("Basic ")
        return web.json_response({"accepted": len(body["batch"]), "rejected": 0})

    app = web.Application()
    app.router.add_post("/v1/batch", batch)
    port = free_port()

    async def serve() -> web.AppRunner:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = await serve()
    sender = RawSender(f"http://127.0.0.1:{port}", "key", concurrency=1)
    await sender.start()
    try:
        answer = await sender.send([{"type": "track", "event": "A"}] * 3)
        assert (answer.accepted, answer.rejected, answer.error) == (3, 0, "")
        await runner.cleanup()  # closes the kept-alive connection
        runner = await serve()
        answer = await sender.send([{"type": "track", "event": "B"}])
        assert answer.accepted == 1
        assert [len(b["batch"]) for b in bodies] == [3, 1] and "sentAt" in bodies[0]
    finally:
        await sender.stop()
        await runner.cleanup()
