"""The processor alone: one `clickstream worker --roles processor` over a pre-loaded backlog.

    .venv/bin/python -m benchmarks.processor [--events 200000] [--profile]

N traffic-model events (historic, so sessions close by event time) are produced to
clickstream.events on a fresh embedded broker; then ONE processor worker starts and is
timed until the committed offsets of group `clickstream-processor` reach the end of
every partition (the end as the producer's acknowledgements and a fetch's high
watermark give it). The rate is taken from the first commit seen to the end, so the
start-up and the group join are not in it; CPU (psutil, the worker's process tree)
over the same span; peak RSS over the whole run.

`--profile` runs the same again under `py-spy record --idle --threads -f raw` and
prints how the agent's thread spends its wall time (waiting, and the top inclusive and
self frames); the raw stacks stay in a temporary directory, never in the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    EVENTS_TOPIC,
    PROCESSOR_GROUP,
    Cluster,
    Peak,
    Result,
    all_partitions,
    describe,
    drain,
    highwaters,
    load_now,
    model_events,
    per_1k,
    produce,
    use_uvloop,
)
from benchmarks.harness import Proc
from stream import topics

OUTPUT_TOPICS = (
    topics.STAGE_CHANGES,
    topics.SESSIONS,
    topics.TRIGGERS,
    topics.VISITORS,
    topics.METRICS,
)


async def run(n: int = 200_000, partitions: int = 4, profile_to: str | None = None) -> Result:
    events = model_events(n)
    with Cluster(partitions) as cluster:
        broker = cluster.start_broker()
        ends = all_partitions(await produce(cluster.bootstrap, EVENTS_TOPIC, events), partitions)
        fetched = await highwaters(cluster.bootstrap, EVENTS_TOPIC, partitions)
        if fetched != ends:
            raise RuntimeError(
                f"high watermarks {fetched} differ from the acknowledged ends {ends}"
            )
        started = time.monotonic()
        proc = cluster.start_processor(wait=False)
        profiler = None
        if profile_to:
            cluster.wait(proc, cluster.health["processor"])
            profiler = record_profile(proc.popen.pid, profile_to)
        with Peak([proc]) as peak:
            result = await drain(
                cluster.bootstrap,
                PROCESSOR_GROUP,
                EVENTS_TOPIC,
                ends,
                [proc],
                broker,
                started,
                timeout=900,
            )
        if profiler is not None:
            profiler.popen.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            profiler.wait(30)
            profiler.stop()
        invalid = sum((await highwaters(cluster.bootstrap, topics.INVALID, partitions)).values())
        outputs = {
            name: sum((await highwaters(cluster.bootstrap, name, partitions)).values())
            for name in OUTPUT_TOPICS
        }
    out = Result(
        "processor (1 worker)",
        events_per_s=result.rate,
        cpu_s_per_1k=per_1k(result.cpu, result.events),
        broker_cpu_s_per_1k=per_1k(result.broker_cpu, result.events),
        peak_rss_mb=peak.peaks["processor"],
        events=result.events,
        seconds=result.seconds,
    )
    out.extra = {
        **describe(events),
        "partitions": partitions,
        "backlog": sum(ends.values()),
        "wall_from_process_start_s": round(result.wall_from_start, 2),
        "busy_cores": round(result.cpu / result.seconds, 2) if result.seconds else None,
        "others_busy_cores": round(result.others_busy, 2),
        "dead_lettered": invalid,
        "outputs": outputs,
        "profiled": bool(profile_to),
        "load_average_after": load_now(),
    }
    if invalid:
        out.notes.append(f"{invalid} events dead-lettered by the processor")
    return out


# --- the profile -----------------------------------------------------------------------
#
# py-spy samples every thread 100 times a second, idle ones included (`--idle`), each
# stack headed by its thread (`--threads`). The agent runs in the main thread (the event
# loop); aiokafka's fetching runs in a consumer thread of its own. Figures are in % of
# the main thread's wall time, so "waiting" (the loop in select) and each kind of work add
# up to 100.

_LINE = re.compile(r":\d+\)$")
# Frames every sample passes through (start-up, the event loop): left out of the lists.
_WRAPPERS = (
    "(<frozen runpy>)",
    "(click/core.py)",
    "(stream/cli.py)",
    "(stream/roles.py)",
    "run_worker (",
    "(mode/worker.py)",
    "BaseEventLoop.run_forever",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop._run_once",
    "Handle._run (",
    "(threading.py)",
    "Service._execute_task (",
    "ServiceThread._start_thread (",
    "WorkerThread.run (",
)
# A thread is waiting when its innermost Python frame is the selector, or one of the
# frames above (under uvloop the loop is C code: its Python stack ends at the frame
# that started the loop).
_SELECT = ("select (selectors.py)", "EpollSelector.select", "poll (selectors.py)")


def _waiting(frames: list[str]) -> bool:
    return not frames or frames[-1].startswith(_SELECT) or any(w in frames[-1] for w in _WRAPPERS)


def record_profile(pid: int, out: str) -> Proc:
    pyspy = str(Path(sys.executable).parent / "py-spy")
    args = [pyspy, "record", "--pid", str(pid), "--rate", "100", "--idle", "--threads"]
    args += ["--format", "raw", "--output", out]
    return Proc(
        "py-spy", subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )


def _frame(raw: str) -> str:
    """`function (path/to/file.py:123)` -> `function (dir/file.py)`: one entry per function."""
    raw = _LINE.sub(")", raw)
    name, _, where = raw.partition(" (")
    if where:
        return f"{name} ({'/'.join(where.rstrip(')').split('/')[-2:])})"
    return name


def summarize(raw_path: str, top: int = 40) -> dict:
    """The main thread's wall time: waiting vs working, top inclusive and self frames."""
    stacks: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in Path(raw_path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread ", "process ")) else "?"
        body = frames[1:] if thread != "?" else frames
        stacks[thread].append(([_frame(f) for f in body], int(count)))
    threads = {}
    for thread, samples in stacks.items():
        total = sum(n for _, n in samples)
        waiting = sum(n for frames, n in samples if _waiting(frames))
        agent = "MainThread" in thread or any(
            "Step._run" in f for frames, _ in samples for f in frames
        )
        threads[thread] = (total, waiting, agent)
    main = max(threads, key=lambda t: (threads[t][2], threads[t][0]))
    total, waiting, _ = threads[main]
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for frames, n in stacks[main]:
        if _waiting(frames):
            continue
        for frame in set(frames):
            if not any(w in frame for w in _WRAPPERS):
                inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    pct = 100.0 / max(total, 1)
    return {
        "main_thread_samples": total,
        "main_thread_waiting_pct": round(waiting * pct, 1),
        "other_threads_busy_pct_of_main_wall": {
            t: round((n - w) * pct, 1) for t, (n, w, _) in threads.items() if t != main
        },
        "inclusive": [(f, round(c * pct, 1)) for f, c in inclusive.most_common(top)],
        "self": [(f, round(c * pct, 1)) for f, c in own.most_common(top)],
    }


async def profile(n: int, partitions: int = 4) -> dict:
    """A second, profiled run: where the processor's time goes."""
    folder = tempfile.mkdtemp(prefix="clickstream-profile-")
    raw = str(Path(folder) / "processor.raw.txt")
    result = await run(n, partitions, profile_to=raw)
    summary = summarize(raw)
    summary["raw"] = raw
    summary["events_per_s_while_profiled"] = round(result.events_per_s or 0)
    return summary


def print_profile(summary: dict, top: int = 25) -> None:
    print(
        f"py-spy of the processor ({summary['events_per_s_while_profiled']:,} events/s while profiled; "
        f"raw stacks: {summary['raw']})"
    )
    print(
        f"main thread (the agent's event loop): {summary['main_thread_samples']} samples, "
        f"{summary['main_thread_waiting_pct']} % waiting in the event loop; other threads busy "
        f"{summary['other_threads_busy_pct_of_main_wall']} (% of the same wall time)"
    )
    print("main thread, top inclusive frames (% of its wall time, waiting excluded):")
    for frame, pct in summary["inclusive"][:top]:
        print(f"  {pct:5.1f}  {frame}")
    print("main thread, top self frames:")
    for frame, pct in summary["self"][:top]:
        print(f"  {pct:5.1f}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="also a py-spy run, summarised")
    args = parser.parse_args()
    use_uvloop()
    result = asyncio.run(run(args.events, args.partitions))
    print(
        f"processor: {result.events_per_s:,.0f} events/s ({result.events:,} in {result.seconds:.1f} s), "
        f"{result.cpu_s_per_1k:.3f} CPU s per 1,000 events, peak RSS {result.peak_rss_mb:.0f} MB"
    )
    print(result.extra)
    if args.profile:
        print_profile(asyncio.run(profile(args.events, args.partitions)))


if __name__ == "__main__":
    main()
