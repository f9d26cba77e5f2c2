"""Drive simulated traffic into the pipeline at a given rate, and report what happened.

One producer task draws calls from the model (`model.generate_timed`, endless), cuts
them into batches, paces the batches to the rate and queues them; a few workers
send the queue (HTTP keep-alive connections or one Kafka producer). The queue is
short, so a slow collector slows the producer rather than filling memory.

Live traffic is stamped with the wall clock when it is batched. An event the model
delivers behind the stream (`out_of_order`, `late`) keeps its lag: its timestamp
is "now" minus how far its event time is behind the newest one sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from stream.config import Settings, SettingsError
from stream.simulate.model import Mix, generate_timed
from stream.simulate.send import Answer, HttpSender, KafkaSender, Sender, deliver
from stream.simulate.session import iso

# Live traffic is restamped, so event-time spacing only sets how many sessions interleave:
# ~30 at once instead of ~200, and the first orders come within the first ~1,000 events.
LIVE_SESSION_INTERVAL_S = 20.0
log = logging.getLogger(__name__)
BATCH_WINDOW_S = 0.25  # at low rates a batch holds at most this long a stretch of events
# Failed tries in a row (requests or retries) after which the run gives up: few when
# nothing ever got through (wrong URL or write key), many once it did (an outage).
GIVE_UP_UNREACHED = 8
GIVE_UP_AFTER_SUCCESS = 100


@dataclass(slots=True)
class SimulationReport:
    sent: int = 0  # events handed to the transport
    accepted: int = 0
    rejected: int = 0
    failed_requests: int = 0  # requests given up after retries, or refused as a whole
    seconds: float = 0.0
    events_per_second: float = 0.0
    # Events sent per name: the track event's, else the call type ("page", "identify").
    events: dict[str, int] = field(default_factory=dict)
    last_error: str = ""  # the latest failure or rejection reason

    def summary(self) -> str:
        top = ", ".join(f"{name} {n}" for name, n in Counter(self.events).most_common(6))
        line = (
            f"sent {self.sent} events in {self.seconds:.1f}s ({self.events_per_second:.0f}/s): "
            f"{self.accepted} accepted, {self.rejected} rejected, {self.failed_requests} failed requests"
        )
        error = f"\n  last error: {self.last_error}" if self.last_error else ""
        return f"{line}\n  {top}{error}"


async def run_simulation(
    settings: Settings,
    *,
    rate: float,
    visitors: int,
    duration: float,
    max_events: int,
    seed: int,
    url: str,
    to_kafka: bool,
    stop: threading.Event | None = None,
    progress: bool = True,
    mix: Mix | None = None,
    batch_size: int = 20,
    concurrency: int = 4,
    out_of_order: float = 0.0,
    late: float = 0.0,
    base_time_ms: int | None = None,
) -> SimulationReport:
    """Send simulated storefront traffic until `duration` s, `max_events` or `stop`.

    rate 0 sends as fast as the target takes it. The model runs endless: new
    visitors keep coming, and `visitors` bounds the pool of those who may come
    back. `base_time_ms` sends historic traffic (event times from the model,
    starting then) instead of live traffic. Failed requests are retried with
    backoff; when nothing gets through at all the run soon gives up (`last_error`
    says why). Without `stop`, Ctrl-C ends the run cleanly, with its report.
    """
    if rate < 0 or duration < 0 or max_events < 0:
        raise ValueError("rate, duration and max_events must not be negative")
    run = _Run(rate, duration, max_events, batch_size, stop or threading.Event())
    sender: Sender
    if to_kafka:
        sender = KafkaSender(settings)
    else:
        sender = HttpSender(url, next(iter(settings.write_keys)), concurrency)
    live = base_time_ms is None
    if mix is None:
        mix = Mix(session_interval_s=LIVE_SESSION_INTERVAL_S) if live else Mix()
    calls = generate_timed(
        seed,
        max(visitors, 1),
        mix=mix,
        base_time_ms=base_time_ms,
        out_of_order=out_of_order,
        late=late,
        endless=True,
    )
    try:
        await sender.start()
    except Exception as exc:
        if not to_kafka:
            raise
        await _quietly(sender.stop())  # a broker we cannot reach: the CLI prints one line
        raise SettingsError(
            f"KAFKA_BOOTSTRAP_SERVERS: cannot reach Kafka at {settings.bootstrap_servers} ({type(exc).__name__})"
        ) from None
    restore = _ctrl_c_stops(run.stop) if stop is None else None
    bar = _Progress(run) if progress else None
    try:
        if bar:
            bar.start()
        await run.drive(calls, sender, concurrency, live=live)
    finally:
        if bar:
            bar.stop()
        if restore:
            restore()
        await _quietly(sender.stop())
    if progress:
        from rich.console import Console

        Console(stderr=True).print(run.report.summary(), highlight=False, markup=False)
    elif run.aborted:
        log.warning("simulation gave up: %s", run.report.last_error)
    return run.report


class _Run:
    def __init__(
        self, rate: float, duration: float, max_events: int, batch_size: int, stop: threading.Event
    ) -> None:
        self.rate, self.duration, self.max_events = rate, duration, max_events
        self.batch = max(
            1, batch_size if rate <= 0 else min(batch_size, int(rate * BATCH_WINDOW_S))
        )
        self.stop = stop
        self.report = SimulationReport()
        self.started = time.monotonic()
        self.failures = 0  # failed tries in a row
        self.delivered = False  # some batch got an answer
        self.aborted = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def over(self) -> bool:
        return (
            self.stop.is_set()
            or self.aborted
            or (self.duration > 0 and self.elapsed >= self.duration)
            or (self.max_events > 0 and self.report.sent >= self.max_events)
        )

    async def drive(self, calls, sender: Sender, concurrency: int, *, live: bool) -> None:
        queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=2 * concurrency)
        self.started = time.monotonic()
        workers = [asyncio.create_task(self._work(queue, sender)) for _ in range(concurrency)]
        try:
            await self._produce(calls, queue, live)
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
            self.report.seconds = self.elapsed
            self.report.events_per_second = (
                self.report.sent / self.report.seconds if self.report.seconds else 0.0
            )

    async def _produce(self, calls, queue: asyncio.Queue, live: bool) -> None:
        newest = 0  # latest event time drawn from the model
        step_ms = 1000.0 / self.rate if self.rate > 0 else 0.0
        report = self.report
        while not self.over():
            if self.rate > 0:  # the batch leaves when its first event is due
                due = self.started + report.sent / self.rate
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(min(wait, 0.2))
                    continue
            size = (
                self.batch
                if not self.max_events
                else min(self.batch, self.max_events - report.sent)
            )
            batch = list(islice(calls, size))
            if not batch:
                break
            now_ms = time.time_ns() // 1_000_000
            for i, (ts, call) in enumerate(batch):
                newest = max(newest, ts)
                if live:
                    call["timestamp"] = iso(now_ms + int(i * step_ms) - (newest - ts))
                name = call.get("event") or call["type"]
                report.events[name] = report.events.get(name, 0) + 1
            report.sent += len(batch)
            await queue.put([call for _, call in batch])

    async def _work(self, queue: asyncio.Queue, sender: Sender) -> None:
        while (calls := await queue.get()) is not None:
            if self.aborted:  # what is left in the queue after giving up
                answer = Answer(error=self.report.last_error)
            else:
                answer = await deliver(sender, calls, self._failed)
            self._count(answer)

    def _failed(self, error: str) -> bool:
        """A try failed: give up on the run after too many; retry unless the run is over."""
        self.report.last_error = error
        self.failures += 1
        limit = GIVE_UP_AFTER_SUCCESS if self.delivered else GIVE_UP_UNREACHED
        self.aborted = self.aborted or self.failures >= limit
        return not self.over()

    def _count(self, answer: Answer) -> None:
        report = self.report
        report.accepted += answer.accepted
        report.rejected += answer.rejected
        if answer.error:
            report.failed_requests += 1
            return
        self.failures, self.delivered = 0, True
        if answer.reason:
            report.last_error = f"rejected: {answer.reason}"


class _Progress:
    """A rich progress bar on stderr: events sent, rate, accepted/rejected counts."""

    def __init__(self, run: _Run) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.run = run
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]simulating"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            refresh_per_second=4,
        )
        total = run.max_events or run.duration or None
        self.task = self.progress.add_task("simulate", total=total, stats="")
        self.task_handle: asyncio.Task | None = None
        self.last = (0.0, 0)
        self.rate = 0.0

    def start(self) -> None:
        self.progress.start()
        self.task_handle = asyncio.create_task(self._refresh())

    def stop(self) -> None:
        if self.task_handle:
            self.task_handle.cancel()
        self._update()
        self.progress.stop()

    async def _refresh(self) -> None:
        while True:
            self._update()
            await asyncio.sleep(0.25)

    def _update(self) -> None:
        run, report = self.run, self.run.report
        elapsed = run.elapsed
        then, sent_then = self.last
        if elapsed - then >= 1.0:
            self.rate = (report.sent - sent_then) / (elapsed - then)
            self.last = (elapsed, report.sent)
        completed = (
            report.sent if run.max_events else min(elapsed, run.duration) if run.duration else 0
        )
        stats = (
            f"{report.sent:,} sent  {self.rate:,.0f}/s  "
            f"[green]{report.accepted:,} accepted[/]  [red]{report.rejected:,} rejected[/]"
        )
        if report.failed_requests:
            stats += f"  [red]{report.failed_requests} failed requests[/]"
        self.progress.update(self.task, completed=completed, stats=stats)


def _ctrl_c_stops(stop: threading.Event):
    """On the main thread, make Ctrl-C end the run cleanly (with its report); return an undo."""
    if threading.current_thread() is not threading.main_thread():
        return None
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (NotImplementedError, RuntimeError):  # Windows, or no signal support
        return None
    return lambda: loop.remove_signal_handler(signal.SIGINT)


async def _quietly(awaitable) -> None:
    with contextlib.suppress(Exception):
        await awaitable
