"""The processor alone: one `clickstream worker --roles processor` over a pre-loaded backlog.

    .venv/bin/python -m benchmarks.processor [--events 200000] [--profile]

N traffic-model events (historic, so sessions close by event time) are produced to
clickstream.events on a fresh embedded broker; then ONE processor worker starts and is
timed until the committed offsets of group `clickstream-processor` reach the end of
every partition (the end as the producer's acknowledgements and a fetch's high
watermark give it). The rate is taken from the first commit seen to the end, so the
start-up and the group join are not in it; CPU (psutil, the worker's process tree)
over the same span; peak RSS over the whole run.

`--profile` runs the same again under `py-spy record -f raw` and prints the top
inclusive and self frames; the raw stacks stay in a temporary directory, never in the
repository.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import signal
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
from benchmarks.harness import record_profile
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
            profiler = record_profile(proc.popen.pid, profile_to, 600)
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

_LINE = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    """`function (path/to/file.py:123)` -> `function (file.py)`: one entry per function."""
    raw = _LINE.sub(")", raw)
    name, _, where = raw.partition(" (")
    if where:
        parts = where.rstrip(")").split("/")
        where = "/".join(parts[-2:])
        return f"{name} ({where})"
    return name


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
)


def summarize(raw_path: str, top: int = 40) -> dict:
    """Top inclusive and self frames of py-spy's raw (collapsed) output, in % of the
    samples (py-spy counts only threads that are running, not idle ones)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(raw_path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        if frames and frames[0].startswith(("thread (", "process ")):
            frames = frames[1:]
        for frame in set(frames):
            if not any(w in frame for w in _WRAPPERS):
                inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    pct = 100.0 / max(total, 1)
    return {
        "samples": total,
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
    print(f"py-spy: {summary['samples']} samples (raw stacks: {summary['raw']})")
    print("top inclusive frames (% of samples):")
    for frame, pct in summary["inclusive"][:top]:
        print(f"  {pct:5.1f}  {frame}")
    print("top self frames:")
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
