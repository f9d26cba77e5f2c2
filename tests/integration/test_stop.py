"""Stopping `clickstream run` (issue 16, issue 12): signals in bursts never hang it,
nothing it started outlives it however it ends, a stale broker on the port is named,
and what was accepted before a clean stop is stored before it ends.

The default suite runs a few start/stop cycles; the long loop runs by hand:

    CLICKSTREAM_STOP_LOOPS=24 .venv/bin/pytest -m integration tests/integration/test_stop.py -k cycle

cycling through every combination of 2 or 3 signals, sent to the runner or to its
process group, idle, under load, or while the pipeline is still starting.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from stream.broker import EmbeddedBroker, port_in_use
from stream.config import REPO_ROOT
from stream.procs import port_holders
from tests.support.pipeline import Pipeline, http, pipeline_env, prestart

pytestmark = pytest.mark.integration

COMBOS = list(itertools.product((2, 3), ("pid", "group"), ("idle", "load", "starting")))
DEFAULT = [(2, "pid", "load"), (3, "group", "load"), (2, "group", "starting")]
LOOPS = int(os.environ.get("CLICKSTREAM_STOP_LOOPS", "0"))
CYCLES = [COMBOS[i % len(COMBOS)] for i in range(LOOPS)] if LOOPS else DEFAULT
EXIT_BOUND_S = 20.0


def spawn(data_dir: Path, **extra: str) -> Pipeline:
    """`clickstream run` in its own session (the test may signal its group), not waited for."""
    env = pipeline_env(data_dir, **extra)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "pipeline.log"
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "run"],
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


class Tree:
    """Every process the runner started, seen by polling its tree until it exits (a
    child restarted or started late is caught too)."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.seen: dict[int, psutil.Process] = {}
        self.names: dict[int, str] = {}  # command line when first seen
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            try:
                for child in self.root.children(recursive=True):
                    if child.pid not in self.seen:
                        self.seen[child.pid] = child
                        try:
                            self.names[child.pid] = " ".join(child.cmdline()[:5])
                        except psutil.Error:
                            self.names[child.pid] = "?"
            except psutil.NoSuchProcess:
                return
            time.sleep(0.05)

    def finish(self) -> None:
        self._done.set()
        self._thread.join(5)

    def left(self, within: float = 3.0) -> list[str]:
        """Processes of the tree still alive after `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            alive = []
            for proc in self.seen.values():
                try:
                    if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{proc.pid} {' '.join(proc.cmdline()[:4])}")
                except psutil.NoSuchProcess:
                    pass
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)


def busy_ports(p: Pipeline, within: float = 3.0) -> list[str]:
    """The pipeline's ports still listening after `within` seconds (a process killed
    with SIGKILL closes its sockets last, after its memory is torn down)."""
    ports = (p.broker_port, p.http_port, p.api_port, p.processor_port)
    deadline = time.monotonic() + within
    while True:
        busy = [
            f"{port} held by {port_holders(port) or '?'}"
            for port in ports
            if port_in_use("127.0.0.1", port) or port_holders(port)
        ]
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.05)


class Load:
    """Batches posted to the collector back to back, in a thread, until stopped."""

    def __init__(self, p: Pipeline, batch: int = 100):
        self.p = p
        self.batch = batch
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            events = [
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "anonymousId": f"load-{n % 50}-{i % 20}",
                    "messageId": f"load-{n}-{i}",
                    "properties": {"product_id": "sku-1", "price": 1.0, "currency": "USD"},
                }
                for i in range(self.batch)
            ]
            try:
                status, answer = self.p.post("/v1/batch", {"batch": events})
                if status == 200:
                    self.accepted += answer["accepted"]
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def send_signals(pid: int, count: int, target: str) -> None:
    """`count` signals in quick succession, SIGINT and SIGTERM alternating (Ctrl-C,
    then `make` passing SIGTERM on), 30 ms apart: the kernel merges a signal sent while
    the same one is still pending, so closer than that they may count as fewer."""
    for n in range(count):
        sig = signal.SIGINT if n % 2 == 0 else signal.SIGTERM
        if target == "group":
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        time.sleep(0.03)


def wait_ready(p: Pipeline, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for url in (
        f"{p.collector}/healthz",
        f"{p.api}/healthz",
        f"http://127.0.0.1:{p.processor_port}/healthz",
    ):
        while True:
            assert p.process.poll() is None, p.log_tail(60)
            assert time.monotonic() < deadline, "not ready\n" + p.log_tail(60)
            try:
                status, _ = http("GET", url, timeout=1.0)
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)


def wait_for_log(p: Pipeline, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in p.log_path.read_text(errors="replace"):
        assert p.process.poll() is None, p.log_tail(60)
        assert time.monotonic() < deadline, f"no {text!r} in the log\n{p.log_tail(60)}"
        time.sleep(0.05)


def hard_stop(p: Pipeline) -> None:
    """Clean-up after a failed assertion: nothing may stay behind for the next test."""
    if p.process.poll() is None:
        os.killpg(p.process.pid, signal.SIGKILL)
        p.process.wait()


# The cycles that stop a ready pipeline take one started ahead (tests/support/pipeline.py).
READY = {
    cycle: prestart(__name__, f"cycle-{cycle}", CLICKSTREAM_STOP_DRAIN_SECONDS="10")
    for cycle, (_, _, phase) in enumerate(CYCLES)
    if phase != "starting"
}


@pytest.mark.parametrize(
    "cycle,signals,target,phase",
    [(i, *combo) for i, combo in enumerate(CYCLES)],
    ids=[f"{n}x-{t}-{ph}-{i}" for i, (n, t, ph) in enumerate(CYCLES)],
)
def test_cycle_stop_with_signals_in_a_row(
    tmp_path, tmp_path_factory, cycle, signals, target, phase
):
    if phase == "starting":
        p = spawn(tmp_path / "run", CLICKSTREAM_STOP_DRAIN_SECONDS="10")
    else:
        p = READY[cycle].take(tmp_path_factory)
    tree = Tree(p.process.pid)
    load = None
    try:
        if phase == "starting":
            # Somewhere in the start-up, once the runner listens for signals (before
            # that, Python's defaults apply: nothing is started yet).
            wait_for_log(p, "embedded broker listening")
            time.sleep(random.uniform(0.0, 4.0))
        else:
            wait_ready(p)
            if phase == "load":
                load = Load(p).start()
                time.sleep(0.5)
        stopped_at = time.monotonic()
        send_signals(p.process.pid, signals, target)
        try:
            code = p.process.wait(EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"runner still running {EXIT_BOUND_S:.0f}s after the signals\n{p.log_tail(60)}"
            )
        elapsed = time.monotonic() - stopped_at
    finally:
        if load is not None:
            load.stop()
        tree.finish()
        hard_stop(p)
    log = p.log_tail(200)
    assert tree.seen or phase == "starting", "the runner should have started children"
    assert not tree.left(), f"left behind: {tree.left()}\n{log}"
    checked = time.monotonic()
    busy = busy_ports(p)
    ports_s = time.monotonic() - checked
    assert not busy, f"{busy}\n{log}"
    if signals == 3:
        # The third signal kills at once (unless the first two already finished the stop).
        assert code in (0, 128 + signal.SIGINT, 128 + signal.SIGTERM), (code, log)
    else:
        assert code == 0, (code, log)
        if phase != "starting":
            assert "second signal: stopping faster" in log, log
    assert not runner_errors(log), log
    print(
        f"{signals}x {target} {phase}: exit {code} in {elapsed:.2f}s,"
        f" {len(tree.seen)} children, ports free after {ports_s:.2f}s more"
    )


def runner_errors(log: str) -> list[str]:
    """Traceback lines from the runner's own code (a role process may log an error of
    its own, e.g. the collector answering 500 to a request cut by the stop)."""
    runner = re.compile(
        r'stream/(supervisor|drain|procs|broker)\.py"|in (_stop_run|_check_ports)$'
        r'|stream/cli\.py", line \d+, in run$|KeyboardInterrupt'
    )
    return [line for line in log.splitlines() if runner.search(line.strip())]


SIGKILLED = prestart(__name__, "sigkilled")
DRAINED = prestart(__name__, "drained")


def test_sigkill_of_the_runner_leaves_no_process_and_no_port(tmp_path_factory):
    p = SIGKILLED.take(tmp_path_factory)
    tree = Tree(p.process.pid)
    load = Load(p).start()
    try:
        time.sleep(0.5)
        assert len(tree.seen) >= 4, tree.seen  # broker, collector, processor, sink+api
        p.process.kill()
        p.process.wait()
        killed_at = time.monotonic()
        left = tree.left(within=5.0)
        gone_in = time.monotonic() - killed_at
    finally:
        load.stop()
        tree.finish()
    assert not left, f"left behind after SIGKILL of the runner: {left}"
    busy = busy_ports(p)
    assert not busy, busy
    assert gone_in < 5.0
    print(f"SIGKILL: {len(tree.seen)} children gone in {gone_in:.2f}s")


def test_a_stale_broker_on_the_port_is_named(tmp_path, free_port):
    stale = EmbeddedBroker(free_port)
    stale.start()
    try:
        env = pipeline_env(tmp_path, CLICKSTREAM_BROKER_PORT=str(free_port))
        result = subprocess.run(
            [sys.executable, "-m", "stream.cli", "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        stale.stop()
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("clickstream:")]
    assert len(lines) == 1, result.stderr
    assert f"port {free_port}" in lines[0] and f"pid {stale_pid(lines[0])}" in lines[0]
    assert "tansu" in lines[0] and "CLICKSTREAM_BROKER_PORT" in lines[0]


def stale_pid(line: str) -> str:
    return line.split("pid ", 1)[1].split()[0]


def count_rows(data_dir: Path, queries: list[str]) -> list[int]:
    """Counts from the stopped pipeline's chDB directory, in a process of their own (the
    test process may hold another chDB engine: one per process)."""
    code = textwrap.dedent(
        f"""
        import sys
        from stream.sink.clickhouse import open_client
        client = open_client("chdb://{data_dir / "clickhouse"}")
        for query in {queries!r}:
            print(client.query(query).result_rows[0][0])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [int(line) for line in result.stdout.split()]


def test_events_accepted_before_a_clean_stop_are_stored_before_it_ends(tmp_path_factory):
    """Post N events, one SIGINT at once: the drain waits for the processor and the sink,
    so every event and every visitor's row is in ClickHouse when the runner is gone."""
    p = DRAINED.take(tmp_path_factory)
    visitors, per_visitor, batch = 500, 6, 250
    events = [
        {
            "type": "track",
            "event": "Product Viewed",
            "anonymousId": f"drain-{v}",
            "messageId": f"drain-{v}-{k}",
            "properties": {"product_id": f"sku-{k}", "price": 1.0, "currency": "USD"},
        }
        for k in range(per_visitor)
        for v in range(visitors)
    ]
    try:
        for start in range(0, len(events), batch):
            status, answer = p.post("/v1/batch", {"batch": events[start : start + batch]})
            assert status == 200 and answer["accepted"] == batch, answer
        p.process.send_signal(signal.SIGINT)
        p.process.wait(45)
    finally:
        hard_stop(p)
    log = p.log_tail(80)
    assert p.process.returncode == 0, log
    assert "drained: every accepted event is processed and stored" in log, log
    stored, seen = count_rows(
        p.log_path.parent,
        [
            "SELECT count() FROM clickstream.events FINAL WHERE message_id LIKE 'drain-%'",
            "SELECT count() FROM clickstream.visitors FINAL WHERE anonymous_id LIKE 'drain-%'",
        ],
    )
    assert (stored, seen) == (len(events), visitors), log
