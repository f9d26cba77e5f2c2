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
