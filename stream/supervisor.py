"""Runs a worker's role processes (for `clickstream run`, next to the embedded broker
the CLI starts) as children: starts them in order, restarts one that dies, and stops
them in order: intake first, then (optionally) a bounded drain, processing, storage.

Nothing here runs in a signal handler: `StopSignals` (stream/procs.py) only records
SIGINT/SIGTERM and the caller's main loop polls it. Every child is started from the
main thread, in its own process group, with PR_SET_PDEATHSIG: the kernel signals it
when the runner dies, SIGKILL included; each stop signals the child's whole group, so
anything the child started goes with it.
"""

from __future__ import annotations

import asyncio
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
from stream.procs import StopSignals, die_with_parent, kill_group
from stream.roles import process_groups

__all__ = ["Child", "StopSignals", "Supervisor", "create_topics_sync", "healthy"]

log = logging.getLogger(__name__)
GRACE_S = 8.0  # per child on a clean stop (the sink flushes its last batch)
FAST_GRACE_S = 1.0  # per child after a second signal
POLL_S = 0.05


@dataclass
class Child:
    name: str
    argv: list[str]
    health_url: str | None
    process: subprocess.Popen | None = None
    restarts: int = 0
    restart_at: float | None = None  # when a dead child is due to start again
    cleaned: int | None = None  # pid whose group got its final SIGKILL

    @property
    def role(self) -> str:
        return self.name.split("+")[0]

    def start(self, env: dict[str, str], die_signal: int = signal.SIGKILL) -> None:
        self.process = subprocess.Popen(
            self.argv, env=env, preexec_fn=die_with_parent(die_signal, new_group=True)
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        """The child's process group: the child and whatever it started."""
        if self.process is not None:
            kill_group(self.process.pid, sig)

    def terminate(self) -> None:
        if self.alive():
            self.signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the group (once per process: a reaped pid may be reused later)."""
        if self.process is None or self.cleaned == self.process.pid:
            return
        self.signal_group(signal.SIGKILL)
        self.process.wait()
        self.cleaned = self.process.pid


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status == 200
    except Exception:  # noqa: BLE001
        return False


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        roles: tuple[str, ...],
        extra_env: dict[str, str] | None = None,
        signals: StopSignals | None = None,
    ):
        self.settings = settings
        self.signals = signals or StopSignals()
        self.metrics_dir = tempfile.mkdtemp(prefix="clickstream-metrics-")
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir, **(extra_env or {})}
        if settings.embedded_broker:
            # Children must use the broker this process started, not start their own,
            # and keep state in memory: the broker's topics vanish when it stops.
            self.env["KAFKA_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
            self.env.setdefault("CLICKSTREAM_STATE_STORE", settings.store)
        # Runner gone: with the embedded broker (gone too, SIGKILL) there is nothing to
        # flush into, and a child that tried could hang on the missing broker; with a
        # Kafka cluster, SIGTERM lets a child leave its group cleanly.
        self.die_signal = signal.SIGKILL if settings.embedded_broker else signal.SIGTERM
        self.children = [self._child(group) for group in process_groups(roles)]
        self.stopping = False
        self._stopped = False

    def _child(self, group: tuple[str, ...]) -> Child:
        name = "+".join(group)
        argv = [sys.executable, "-m", "stream.cli", "role", ",".join(group)]
        port = {
            "collector": self.settings.http_port,
            "processor": self.settings.processor_port,
        }.get(group[0], self.settings.api_port if "api" in group else None)
        url = f"http://127.0.0.1:{port}/healthz" if port else None
        return Child(name, argv, url)

    def child(self, role: str) -> Child | None:
        return next((c for c in self.children if role in c.name.split("+")), None)

    def _start(self, child: Child) -> None:
        child.start(self.env, self.die_signal)
        assert child.process is not None
        self.signals.guard(child.name, child.process.pid)

    def start(self) -> None:
        # Storage first (applies migrations), then processing, then intake.
        order = sorted(
            self.children,
            key=lambda c: {"sink": 0, "api": 0, "processor": 1}.get(c.role, 2),
        )
        for child in order:
            if self.signals.count:
                return
            self._start(child)

    def wait_ready(self, timeout: float, on_ready: Callable[[Child], None] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        pending = [c for c in self.children if c.health_url]
        while pending and time.monotonic() < deadline and not self.stopping:
            if self.signals.count:
                return False
            for child in list(pending):
                if child.health_url and healthy(child.health_url):
                    pending.remove(child)
                    if on_ready:
                        on_ready(child)
                elif not child.alive():
                    return False
            time.sleep(0.1)
        return not pending

    def check(self) -> bool:
        """One round of watching, without blocking: schedule a dead child's restart
        (backoff 1 s .. 10 s), start the ones due. False: stop the whole worker (a child
        exited with a configuration error: restarting would not help)."""
        if self.stopping:
            return False
        now = time.monotonic()
        for child in self.children:
            if child.alive() or child.process is None:
                continue
            if child.restart_at is None:
                code = child.process.returncode
                child.kill()  # whatever it left behind in its group
                if code == 2:
                    log.error("%s exited with a configuration error", child.name)
                    self.stopping = True
                    return False
                child.restarts += 1
                wait = min(10.0, 0.5 * 2 ** min(child.restarts, 5))
                log.warning("%s exited (code %s); restarting in %.1fs", child.name, code, wait)
                child.restart_at = now + wait
            elif now >= child.restart_at:
                child.restart_at = None
                self._start(child)
        return True

    def watch(self, poll: float = 0.2) -> None:
        """Restart children that die until a stop signal or a configuration error."""
        while not self.signals.count and self.check():
            time.sleep(poll)

    def _stop_child(self, child: Child, fast: Callable[[], bool]) -> None:
        """SIGTERM to the child's group, a grace period (shortened when `fast()` turns
        true meanwhile), then SIGKILL to the group."""
        if child.alive():
            child.terminate()
            started = time.monotonic()
            while child.alive():
                grace = FAST_GRACE_S if fast() else GRACE_S
                if time.monotonic() - started > grace:
                    log.warning("%s did not stop within %.0fs; killing it", child.name, grace)
                    break
                time.sleep(POLL_S)
        child.kill()  # the group: the child if still there, and anything it started
        self.signals.release(child.name)

    def stop(
        self,
        *,
        drain: Callable[[], None] | None = None,
        fast: Callable[[], bool] | None = None,
    ) -> None:
        """Intake first (no new events), then `drain` (unless `fast()`), then the
        processor, then storage (the sink flushes what the others produced). Runs once;
        later calls return at once. A third signal meanwhile kills everything (the
        signal handler itself)."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping = True
        fast = fast or (lambda: self.signals.fast())
        stages = [
            [c for c in self.children if c.role == "collector"],
            [c for c in self.children if c.role == "processor"],
            [c for c in self.children if c.role not in ("collector", "processor")],
        ]
        try:
            for number, stage in enumerate(stages):
                for child in stage:
                    self._stop_child(child, fast)
                if number == 0 and drain is not None and not fast():
                    try:
                        drain()
                    except Exception:  # a failed drain must not stop the stop
                        log.exception("drain failed; stopping anyway")
        finally:
            for child in self.children:
                child.kill()
                self.signals.release(child.name)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


async def ensure_topics(settings: Settings) -> list[str]:
    from stream.broker import create_topics

    return await create_topics(settings)


def create_topics_sync(settings: Settings) -> list[str]:
    return asyncio.run(ensure_topics(settings))
