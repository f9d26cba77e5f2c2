"""A real pipeline for integration tests: `clickstream run` in a subprocess on free ports,
the embedded broker and the embedded ClickHouse engine, nothing mocked."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

WRITE_KEY = "test-write-key"


_HANDED_OUT: set[int] = set()
_HANDING_OUT = threading.Lock()  # tests may start clusters from several threads


def free_port() -> int:
    """A port nothing listens on, never one this process handed out before: the kernel
    can give the same free port twice in a row when nothing bound the first yet."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _HANDING_OUT:
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 10.0,
):
    """(status, parsed JSON or raw bytes) without raising on 4xx/5xx."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, raw


def basic_auth(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@dataclass
class Pipeline:
    process: subprocess.Popen
    env: dict[str, str]
    http_port: int
    api_port: int
    broker_port: int
    processor_port: int
    log_path: Path

    @property
    def collector(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def post(self, path: str, payload, headers: dict | None = None, raw: bytes | None = None):
        body = raw if raw is not None else orjson.dumps(payload)
        all_headers = {"Content-Type": "application/json", **basic_auth(), **(headers or {})}
        return http("POST", self.collector + path, body, all_headers)

    def sql(self, query: str) -> list[list]:
        status, answer = http(
            "POST", self.api + "/api/v1/sql", query.encode(), {"Content-Type": "text/plain"}
        )
        assert status == 200, answer
        return answer["rows"]

    def wait_for(self, query: str, expected, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        rows = None
        while time.monotonic() < deadline:
            rows = self.sql(query)
            if rows == expected:
                return rows
            time.sleep(0.25)
        raise AssertionError(f"{query!r} gave {rows!r}, expected {expected!r}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> float:
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _reap(self.process, started + timeout)
        return time.monotonic() - started

    def stop_later(self) -> None:
        """SIGTERM now; `reap_stopped()` waits for the exit at the end of the session. For
        fixtures: their pipeline's clean stop (seconds, mostly waiting on the sink's
        consumer group) overlaps the next tests instead of holding them up."""
        if self.process in _STOPPING:
            return  # a second signal would mean "stop faster"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _STOPPING.append(self.process)


# Pipelines told to stop by `stop_later`, not yet waited for.
_STOPPING: list[subprocess.Popen] = []


def _reap(process: subprocess.Popen, deadline: float) -> None:
    """Wait for the exit until `deadline`, then kill the whole process group."""
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def reap_stopped(timeout: float = 15.0) -> None:
    """Wait for every pipeline stopped by `stop_later` (tests/conftest.py, session end):
    nothing the suite started outlives it."""
    deadline = time.monotonic() + timeout
    while _STOPPING:
        _reap(_STOPPING.pop(), deadline)


def pipeline_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_DSN", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        CLICKSTREAM_DATA_DIR=str(data_dir),
        CLICKSTREAM_HTTP_PORT=str(free_port()),
        CLICKSTREAM_API_PORT=str(free_port()),
        CLICKSTREAM_BROKER_PORT=str(free_port()),
        CLICKSTREAM_PROCESSOR_PORT=str(free_port()),
        CLICKSTREAM_WRITE_KEYS=f"{WRITE_KEY}:test",
        CLICKSTREAM_SINK_BATCH_SECONDS="0.2",
        # Sessions close after 3 s of silence on the arrival clock (not 35 min), so
        # tests of historic traffic see them closed at once; gaps still split by event time.
        CLICKSTREAM_IDLE_CLOSE_SECONDS="3",
        CLICKSTREAM_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def spawn_pipeline(data_dir: Path, args: tuple[str, ...] = (), **extra: str) -> Pipeline:
    """`clickstream run` started, not waited for (`wait_ready`)."""
    env = pipeline_env(data_dir, **extra)
    log_path = data_dir / "pipeline.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "run", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Pipeline(
        process,
        env,
        int(env["CLICKSTREAM_HTTP_PORT"]),
        int(env["CLICKSTREAM_API_PORT"]),
        int(env["CLICKSTREAM_BROKER_PORT"]),
        int(env["CLICKSTREAM_PROCESSOR_PORT"]),
        log_path,
    )


def wait_ready(pipeline: Pipeline, timeout: float = 60.0) -> Pipeline:
    """Every role answers its health check (or the pipeline is stopped and this raises)."""
    process = pipeline.process
    deadline = time.monotonic() + timeout
    urls = [
        f"{pipeline.collector}/healthz",
        f"{pipeline.api}/healthz",
        f"http://127.0.0.1:{pipeline.processor_port}/healthz",
    ]
    while urls:
        if process.poll() is not None or time.monotonic() > deadline:
            pipeline.stop()
            raise RuntimeError(f"pipeline did not become ready:\n{pipeline.log_tail(80)}")
        try:
            status, _ = http("GET", urls[0], timeout=1.0)
        except OSError:
            status = 0
        if status == 200:
            urls.pop(0)
        else:
            time.sleep(0.2)
    return pipeline


def start_pipeline(
    data_dir: Path, args: tuple[str, ...] = (), timeout: float = 60.0, **extra: str
) -> Pipeline:
    return wait_ready(spawn_pipeline(data_dir, args, **extra), timeout)


class Prestart:
    """A pipeline started in the background before its test needs it: declared at import,
    `PIPELINE = prestart(__name__, "name", **env)`, taken by the test or fixture with
    `PIPELINE.take(tmp_path_factory)` (which starts it then if it was not started early:
    a module run alone). A start-up is 10-15 s of imports and topic set-up on 2 cores,
    and a started pipeline idles at about a third of a core: tests/conftest.py starts
    the first few at the first test (the unit tests leave a core idle) and each other
    one when the module before its own begins; a module's next one when its previous
    one is taken."""

    def __init__(self, module: str, name: str, extra: dict[str, str], more=None):
        self.module, self.name, self.extra = module, name, extra
        self.more = more  # () -> more settings, made at the start (e.g. a shop's origin)
        self.started: Pipeline | None = None
        self.taken: Pipeline | None = None
        self.then: Prestart | None = None  # the module's next one
        self.factory = None

    def spawn(self, tmp_path_factory) -> None:
        self.factory = tmp_path_factory
        if self.started is None and self.taken is None:
            extra = {**self.extra, **(self.more() if self.more else {})}
            self.started = spawn_pipeline(tmp_path_factory.mktemp(self.name), **extra)

    def take(self, tmp_path_factory, timeout: float = 60.0) -> Pipeline:
        self.spawn(tmp_path_factory)
        self.taken, self.started = self.started, None
        if self.then is not None and self.factory is not None:
            self.then.spawn(self.factory)
        return wait_ready(self.taken, timeout)

    def release(self) -> None:
        """Stop it: no test needs it any more (not started, or already stopped: nothing)."""
        for pipeline in (self.started, self.taken):
            if pipeline is not None:
                pipeline.stop_later()


PRESTARTS: dict[str, list[Prestart]] = {}  # by the module that declares them


def prestart(module: str, name: str, more=None, **extra: str) -> Prestart:
    pipeline = Prestart(module, name, extra, more)
    declared = PRESTARTS.setdefault(module, [])
    if declared:
        declared[-1].then = pipeline
    declared.append(pipeline)
    return pipeline
