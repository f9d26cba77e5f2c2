"""procs.py: stop signals recorded without locks, children that die with their parent,
and naming the process that holds a port. Each case runs in a small subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from stream.config import REPO_ROOT
from stream.procs import StopSignals, describe_port_holder, port_holders

pytestmark = pytest.mark.unit


def _script(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_first_and_second_signal_are_only_recorded():
    stop = StopSignals()  # not installed: the handler is called directly
    stop._handle(signal.SIGINT, None)
    assert stop.is_set() and stop.count == 1 and not stop.fast()
    stop._handle(signal.SIGTERM, None)
    assert stop.fast() and stop.received == [signal.SIGINT, signal.SIGTERM]


def test_signals_in_a_burst_while_the_main_thread_takes_locks_never_hang():
    """The issue's deadlock: a handler taking the lock the interrupted code holds. Here
    the main thread spins on an Event (its condition's lock) while two signals come."""
    proc = _script(
        """
        import threading, sys
        from stream.procs import StopSignals
        stop = StopSignals().install()
        print("ready", flush=True)
        event = threading.Event()
        while stop.count < 2:
            event.wait(0.0001)
            event.set(); event.clear()
        print(stop.count, flush=True)
        """
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    for _ in range(20):  # two signals, back to back, many times over
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=10)  # a deadlock would time out here
    # Done: printed its count (later signals may hit it while the interpreter exits, or
    # a third one ends it with 128 + the signal).
    assert out.strip().isdigit() or proc.returncode in (130, 143), (proc.returncode, err)


def test_third_signal_kills_every_guarded_group_and_exits():
    proc = _script(
        """
        import subprocess, time
        from stream.procs import StopSignals, die_with_parent
        stop = StopSignals().install()
        child = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent(new_group=True))
        stop.guard("sleep", child.pid)
        print(child.pid, flush=True)
        while True:
            time.sleep(0.2)  # the main flow would stop in order; it never gets to here
        """
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
        proc.send_signal(sig)
        time.sleep(0.02)  # the kernel merges a signal sent while the same one is pending
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "third signal" in err
    assert _wait_gone(child)


@pytest.mark.parametrize("new_group", [True, False])
def test_child_dies_with_a_parent_killed_hard(new_group):
    proc = _script(
        f"""
        import subprocess, time
        from stream.procs import die_with_parent
        child = subprocess.Popen(
            ["sleep", "60"], preexec_fn=die_with_parent(new_group={new_group}),
            start_new_session={not new_group},
        )
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert not _gone(child)
    if new_group:
        assert os.getpgid(child) == child
    proc.kill()
    proc.wait()
    assert _wait_gone(child), "the child outlived its parent"


def test_port_holder_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        holders = port_holders(port)
        assert [pid for pid, _ in holders] == [os.getpid()]
        assert f"pid {os.getpid()}" in describe_port_holder(port)
    assert port_holders(port) == []
