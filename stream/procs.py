"""Process helpers for the supervisor and the embedded broker: children that die with
their parent, stop requests recorded without locks, and who holds a TCP port.

Linux only where it matters (prctl, /proc); elsewhere the helpers degrade to no-ops.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _resolve_prctl():
    """libc's prctl, looked up once in the parent: loading a library after fork() in a
    threaded parent can deadlock the child on the loader's lock."""
    for name in (None, "libc.so.6"):  # None: this program's own symbols, libc's among them
        try:
            return ctypes.CDLL(name, use_errno=True).prctl
        except (OSError, AttributeError):
            continue
    return None


_PRCTL = _resolve_prctl()


def die_with_parent(sig: int = signal.SIGKILL, *, new_group: bool = True) -> Callable[[], None]:
    """A preexec_fn: the kernel sends `sig` to the child when the thread that started it
    (start children from the main thread) or its process dies, SIGKILL included.

    If the parent died between fork() and prctl(), the child kills itself: the death
    signal would never come. `new_group` puts the child in its own process group (the
    terminal's Ctrl-C reaches only the parent, which stops the children in order)."""
    parent = os.getpid()

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        if new_group:
            os.setpgrp()

    return preexec


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group (a child and anything it started); gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class StopSignals:
    """SIGINT/SIGTERM as stop requests, recorded without taking any lock.

    A Python signal handler runs between two bytecodes of the main thread, possibly
    while that thread holds a lock (an Event's condition, a logging handler's lock, a
    Popen's waitpid lock): a handler that takes a lock can wait for ever. This one only
    appends to lists (atomic) and reads the wakeup socket without blocking; the main
    flow polls `count` and does the work: 1 = stop in order, 2 = stop faster (`fast()`,
    logged once).

    A third signal cannot wait for the main flow (it may be stuck): the handler SIGKILLs
    every registered process group and leaves with os._exit. Both are plain system
    calls, no lock involved."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.groups: dict[str, int] = {}  # name -> process group killed by a third signal
        self._said_fast = False
        self._reader: int | None = None
        self._delivered: list[int] = []  # wakeup bytes read, per read
        self._wakeup: tuple | None = None

    def install(self) -> StopSignals:
        """Main thread only. Python runs a handler once for several deliveries of one
        signal that came before it got to run; the wakeup fd gets one byte per delivery,
        so the count stays exact (two quick Ctrl-C are two)."""
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wakeup = (reader, writer)  # kept open as long as this object lives
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
            self._reader = reader.fileno()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    @property
    def count(self) -> int:
        """Signals received: handler runs, or wakeup bytes when more (several quick
        deliveries of one signal make one run); runs alone if the fd was taken over."""
        return max(len(self.received), sum(self._delivered))

    def is_set(self) -> bool:
        """A stop was asked (threading.Event's spelling, for code polling an Event)."""
        return self.count > 0

    def guard(self, name: str, pgid: int) -> None:
        self.groups[name] = pgid

    def release(self, name: str) -> None:
        self.groups.pop(name, None)

    def fast(self) -> bool:
        """A second signal came: skip the drain, shorten every grace period. Main
        thread only (it logs)."""
        if self.count < 2:
            return False
        if not self._said_fast:
            self._said_fast = True
            log.warning(
                "second signal: stopping faster (no drain, 1 s per process;"
                " a third signal kills everything at once)"
            )
        return True

    def _handle(self, signum: int, frame) -> None:
        self.received.append(signum)
        if self._reader is not None:  # one byte per delivery, read without blocking
            with contextlib.suppress(OSError):
                while chunk := os.read(self._reader, 64):
                    self._delivered.append(len(chunk))
        if self.count >= 3:
            for pgid in list(self.groups.values()):
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.write(2, b"clickstream: third signal: killed every process\n")
            os._exit(128 + signum)


# --- who holds a port ------------------------------------------------------------------


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (any address), from /proc/net/tcp and tcp6."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A = LISTEN
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_holders(port: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process this user can see that listens on `port`."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return []
    holders: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link in targets:
                try:
                    raw = (entry / "cmdline").read_bytes()
                    cmd = " ".join(p.decode(errors="replace") for p in raw.split(b"\0") if p)
                except OSError:
                    cmd = "?"
                holders.append((int(entry.name), cmd or "?"))
                break
    return holders


def describe_port_holder(port: int) -> str:
    """One phrase naming what holds `port`, for error messages."""
    holders = port_holders(port)
    if not holders:
        return "by a process this user cannot see (another user's, or in another container)"
    pid, cmd = holders[0]
    if len(cmd) > 160:
        cmd = cmd[:157] + "..."
    what = f"by pid {pid} ({cmd}"
    if "tansu" in cmd:
        what += f"; an embedded broker, maybe left by an earlier run: `kill {pid}`"
    return what + ")"
