"""Separately started broker and workers, for crash and rebalance tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.pipeline import WRITE_KEY, free_port, http


@dataclass
class Cluster:
    """`clickstream broker` plus any number of `clickstream worker --roles ...`."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        broker_port = free_port()
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("CLICKHOUSE_DSN", "PROMETHEUS_MULTIPROC_DIR")
        }
        self.env = {
            **base,
            "CLICKSTREAM_DATA_DIR": str(self.data_dir),
            "CLICKSTREAM_BROKER_PORT": str(broker_port),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
            "CLICKSTREAM_HTTP_PORT": str(free_port()),
            "CLICKSTREAM_API_PORT": str(free_port()),
            "CLICKSTREAM_PROCESSOR_PORT": str(free_port()),
            "CLICKSTREAM_WRITE_KEYS": f"{WRITE_KEY}:test",
            "CLICKSTREAM_SINK_BATCH_SECONDS": "0.2",
        }

    @property
    def bootstrap(self) -> str:
        return self.env["KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['CLICKSTREAM_API_PORT']}"

    def spawn(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", *args],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def start_broker(self) -> subprocess.Popen:
        env = {"KAFKA_BOOTSTRAP_SERVERS": ""}
        proc = self.spawn("broker", "broker", **env)
        deadline = time.monotonic() + 20
        while b"broker ready" not in (self.data_dir / "broker.log").read_bytes():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("broker did not start")
            time.sleep(0.1)
        return proc

    def start_storage(self) -> subprocess.Popen:
        proc = self.spawn("storage", "worker", "--roles", "sink,api")
        self.wait_http(f"{self.api}/healthz")
        return proc

    def start_processor(self, name: str = "processor", port: int | None = None) -> subprocess.Popen:
        port = port or free_port()
        proc = self.spawn(
            name, "worker", "--roles", "processor", CLICKSTREAM_PROCESSOR_PORT=str(port)
        )
        self.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        return proc

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, _ = http("GET", url, timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} not healthy after {timeout}s\n{self.logs()}")

    def sql(self, query: str) -> list[list]:
        status, answer = http(
            "POST", f"{self.api}/api/v1/sql", query.encode(), {"Content-Type": "text/plain"}
        )
        assert status == 200, answer
        return answer["rows"]

    def logs(self) -> str:
        out = []
        for path in sorted(self.data_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """A hard crash: SIGKILL, no cleanup."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
