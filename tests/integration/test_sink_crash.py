"""A sink killed with SIGKILL mid-stream and started again loses nothing and doubles nothing.

The sink runs as `python -m stream.sink` (with its query API) in a subprocess that owns
its own chdb directory; the test process never opens that directory (one engine per
process) and checks the figures through the subprocess's SQL endpoint.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from stream import config, topics
from stream.broker import create_topics
from stream.config import REPO_ROOT
from tests.integration.test_sink import merge_ends, produce_events

pytestmark = pytest.mark.integration

TOTAL = 100_000


def sql(api: str, query: str) -> list[list] | None:
    """Rows from the API's SQL endpoint, or None while the process is not answering."""
    request = urllib.request.Request(api + "/api/v1/sql", data=query.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return orjson.loads(response.read())["rows"]
    except (urllib.error.URLError, OSError):
        return None


class SinkProcess:
    def __init__(self, env: dict[str, str], log: Path):
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.sink"],
                env=env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


async def wait_rows(api: str, query: str, done, sink: SinkProcess, timeout: float) -> list[list]:
    deadline = time.monotonic() + timeout
    rows = None
    while time.monotonic() < deadline:
        assert sink.process.poll() is None, f"the sink exited:\n{sink.tail()}"
        rows = await asyncio.to_thread(sql, api, query)
        if rows is not None and done(rows):
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"{query!r} last gave {rows!r}\n{sink.tail()}")


async def test_sigkill_mid_stream_then_restart_gives_every_event_exactly_once(
    embedded_broker, tmp_path, free_port
):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_DSN", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=embedded_broker,
        CLICKHOUSE_DSN=f"chdb://{tmp_path / 'clickhouse'}",
        CLICKSTREAM_DATABASE="crash",
        CLICKSTREAM_TOPIC_PREFIX="crash.",
        CLICKSTREAM_API_PORT=str(free_port),
        CLICKSTREAM_SINK_BATCH_SECONDS="0.2",
        CLICKSTREAM_SINK_SESSION_TIMEOUT_MS="2000",
        CLICKSTREAM_LOG_LEVEL="INFO",
    )
    settings = config.load(env)
    api = f"http://127.0.0.1:{settings.api_port}"
    await create_topics(settings)

    async def stream() -> dict:
        ends: dict = {}
        for first in range(0, TOTAL, 5_000):  # about 4 s of traffic
            ends = merge_ends(ends, await produce_events(settings, first, first + 5_000))
            await asyncio.sleep(0.2)
        return ends

    producing = asyncio.create_task(stream())
    log = tmp_path / "sink.log"
    sink = SinkProcess(env, log)
    try:
        rows = await wait_rows(
            api, "SELECT count() FROM events", lambda r: r[0][0] >= 20_000, sink, 60
        )
        sink.kill()
        assert rows[0][0] < TOTAL, "the sink was not killed mid-stream"
        ends = await producing

        sink = SinkProcess(env, log)
        await wait_rows(
            api,
            "SELECT count() FROM events FINAL",
            lambda r: r[0][0] >= TOTAL,
            sink,
            60,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=topics.SINK_GROUP
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + 20
            while True:
                committed = {tp: await consumer.committed(tp) for tp in ends}
                if all((committed[tp] or 0) >= end for tp, end in ends.items()):
                    break
                assert time.monotonic() < deadline, f"committed {committed}, ends {ends}"
                await asyncio.sleep(0.2)
        finally:
            await consumer.stop()

        figures = await asyncio.to_thread(
            sql,
            api,
            "SELECT (SELECT count() FROM events FINAL), "
            "(SELECT uniqExact(message_id) FROM events), "
            "(SELECT count() FROM (SELECT message_id FROM events FINAL "
            "GROUP BY message_id HAVING count() > 1))",
        )
        assert figures == [[TOTAL, TOTAL, 0]], sink.tail()
        assert sink.terminate() == 0, sink.tail()
    finally:
        if sink.process.poll() is None:
            sink.kill()
        if not producing.done():
            producing.cancel()
