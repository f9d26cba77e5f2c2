"""Runs a worker's role processes (and, for `clickstream run`, the embedded broker) as
children: starts them in order, restarts one that dies, and on Ctrl-C or SIGTERM
stops them all within 10 s, leaving no child behind (children also get SIGTERM from
the kernel if this process dies, via PR_SET_PDEATHSIG)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from stream.config import Settings
from stream.roles import process_groups

log = logging.getLogger(__name__)
STOP_BUDGET_S = 9.0


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the supervisor dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # own group: the terminal's Ctrl-C reaches the supervisor, which stops us in order


@dataclass
class Child:
    name: str
    argv: list[str]
    health_url: str | None
    process: subprocess.Popen | None = None
    restarts: int = 0

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.argv, env=env, preexec_fn=_die_with_parent)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status == 200
    except Exception:  # noqa: BLE001
        return False


class Supervisor:
    def __init__(
        self, settings: Settings, roles: tuple[str, ...], extra_env: dict[str, str] | None = None
    ):
        self.settings = settings
        self.metrics_dir = tempfile.mkdtemp(prefix="clickstream-metrics-")
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir, **(extra_env or {})}
        if settings.embedded_broker:
            # Children must use the broker this process started, not start their own,
            # and keep state in memory: the broker's topics vanish when it stops.
            self.env["KAFKA_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
            self.env.setdefault("CLICKSTREAM_STATE_STORE", settings.store)
        self.children = [self._child(group) for group in process_groups(roles)]
        self.stopping = False

    def _child(self, group: tuple[str, ...]) -> Child:
        name = "+".join(group)
        argv = [sys.executable, "-m", "stream.cli", "role", ",".join(group)]
        port = {
            "collector": self.settings.http_port,
            "processor": self.settings.processor_port,
        }.get(group[0], self.settings.api_port if "api" in group else None)
        url = f"http://127.0.0.1:{port}/healthz" if port else None
        return Child(name, argv, url)

    def start(self) -> None:
        # Storage first (applies migrations), then processing, then intake.
        order = sorted(
            self.children,
            key=lambda c: {"sink": 0, "api": 0, "processor": 1}.get(c.name.split("+")[0], 2),
        )
        for child in order:
            child.start(self.env)

    def wait_ready(self, timeout: float, on_ready: Callable[[Child], None] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        pending = [c for c in self.children if c.health_url]
        while pending and time.monotonic() < deadline and not self.stopping:
            for child in list(pending):
                if child.health_url and healthy(child.health_url):
                    pending.remove(child)
                    if on_ready:
                        on_ready(child)
                elif not child.alive():
                    return False
            time.sleep(0.1)
        return not pending

    def watch(self) -> None:
        """Restart a child that died, with a short backoff, until stop() is called."""
        while not self.stopping:
            for child in self.children:
                if not child.alive() and not self.stopping:
                    code = child.process.returncode if child.process else None
                    if code == 2:  # bad configuration: restarting would not help
                        log.error("%s exited with a configuration error", child.name)
                        self.stopping = True
                        return
                    child.restarts += 1
                    wait = min(10.0, 0.5 * 2 ** min(child.restarts, 5))
                    log.warning("%s exited (code %s); restarting in %.1fs", child.name, code, wait)
                    time.sleep(wait)
                    if not self.stopping:
                        child.start(self.env)
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopping = True
        # Intake first, storage last, so the sink flushes what the others produced.
        order = sorted(
            self.children,
            key=lambda c: {"collector": 0, "processor": 1}.get(c.name.split("+")[0], 2),
        )
        deadline = time.monotonic() + STOP_BUDGET_S
        for child in order:
            child.terminate()
            assert child.process is not None
            try:
                child.process.wait(max(0.1, min(4.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                child.kill()
        for child in self.children:
            child.kill()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def install_stop_handlers(callback: Callable[[], None]) -> None:
    def handler(signum, frame):
        callback()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


async def ensure_topics(settings: Settings) -> list[str]:
    from stream.broker import create_topics

    return await create_topics(settings)


def create_topics_sync(settings: Settings) -> list[str]:
    return asyncio.run(ensure_topics(settings))
