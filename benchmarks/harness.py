"""Shared pieces of the benchmarks: free ports, child processes, CPU and RSS readings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


TREE_REFRESH_S = 2.0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    # The process and its children, looked up again every TREE_REFRESH_S: finding the
    # children scans all of /proc, and Peak's 5 readings a second cost the load generator
    # ~20 % of its CPU in the pipeline benchmark.
    _tree: list[psutil.Process] = field(default_factory=list, init=False, repr=False)
    _tree_at: float = field(default=-TREE_REFRESH_S, init=False, repr=False)

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)

    def tree(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._tree_at >= TREE_REFRESH_S or not self._tree:
            root = self._tree[0] if self._tree else self.ps
            self._tree = [root, *root.children(recursive=True)]
            self._tree_at = now
        return self._tree

    def cpu_seconds(self) -> float:
        total = 0.0
        try:
            procs = self.tree()
        except psutil.NoSuchProcess:
            return 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mb(self) -> float:
        try:
            procs = self.tree()
        except psutil.NoSuchProcess:
            return 0.0
        total = 0
        for p in procs:
            with suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total / 2**20

    def wait(self, timeout: float) -> None:
        """Let the process finish on its own (py-spy writes its profile on exit)."""
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: str) -> Proc:
    log = open(os.path.join(log_dir, f"{name}.log"), "wb")  # noqa: SIM115
    popen = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    return Proc(name, popen)


def record_profile(pid: int, out: str, seconds: float) -> Proc:
    """py-spy samples process `pid` for `seconds` into `out`: speedscope JSON when `out` ends
    in .json, else raw collapsed stacks. Keep the output out of the repository."""
    pyspy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    fmt = "speedscope" if out.endswith(".json") else "raw"
    args = [
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "100",
    ]
    args += ["--format", fmt, "--output", out]
    return Proc(
        "py-spy", subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )


@contextmanager
def processes():
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
