"""The sink alone: rows/s from a pre-loaded clickstream.events into the embedded chdb.

    .venv/bin/python -m benchmarks.sink [--events 200000] [--in-process]

The same traffic-model events as the processor benchmark are produced to a fresh
embedded broker; then one `clickstream worker --roles sink,api` (a fresh chdb
directory) is timed until the committed offsets of group `clickstream-sink` reach the
end (the sink commits only what ClickHouse has), from its first commit on. The row
count is then checked through the query API.

`--in-process` also runs benchmarks/sink_throughput.py (another engineer's: the Sink
class in the benchmark's own process, its own synthetic events) and reports its figure
next to ours.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import (
    EVENTS_TOPIC,
    SINK_GROUP,
    Cluster,
    Peak,
    Result,
    all_partitions,
    describe,
    drain,
    load_now,
    model_events,
    per_1k,
    produce,
    sql,
    use_uvloop,
)

SINK_THROUGHPUT = Path(__file__).resolve().parent / "sink_throughput.py"


async def run(n: int = 200_000, partitions: int = 4) -> Result:
    events = model_events(n)
    with Cluster(partitions) as cluster:
        broker = cluster.start_broker()
        ends = all_partitions(await produce(cluster.bootstrap, EVENTS_TOPIC, events), partitions)
        started = time.monotonic()
        proc = cluster.spawn("storage", ["worker", "--roles", "sink,api"])
        with Peak([proc]) as peak:
            result = await drain(
                cluster.bootstrap,
                SINK_GROUP,
                EVENTS_TOPIC,
                ends,
                [proc],
                broker,
                started,
                timeout=900,
            )
        cluster.wait(proc, f"{cluster.api}/healthz")
        rows = sql(cluster.api, "SELECT count(), uniqExact(message_id) FROM clickstream.events")[0]
    out = Result(
        "sink (1 worker, chdb)",
        events_per_s=result.rate,
        cpu_s_per_1k=per_1k(result.cpu, result.events),
        broker_cpu_s_per_1k=per_1k(result.broker_cpu, result.events),
        peak_rss_mb=peak.peaks["storage"],
        events=result.events,
        seconds=result.seconds,
        unit="rows/s",
        extra={
            **describe(events),
            "partitions": partitions,
            "rows_in_clickhouse": rows[0],
            "distinct_message_ids": rows[1],
            "busy_cores": round(result.cpu / result.seconds, 2) if result.seconds else None,
            "others_busy_cores": round(result.others_busy, 2),
            "wall_from_process_start_s": round(result.wall_from_start, 2),
            "load_average_after": load_now(),
        },
    )
    if rows[1] != len(events):
        out.notes.append(f"ClickHouse holds {rows[1]:,} distinct events of {len(events):,}")
    return out


def run_in_process(n: int = 200_000) -> Result:
    """benchmarks/sink_throughput.py as it is, its figure parsed from its output."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(SINK_THROUGHPUT), "--events", str(n)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    match = re.search(r"sink: ([\d,]+) rows in ([\d.]+) s = ([\d,]+) rows/s", done.stdout)
    result = Result("sink, in-process (sink_throughput.py)", unit="rows/s")
    if done.returncode != 0 or not match:
        result.notes.append(f"sink_throughput.py failed: {(done.stderr or done.stdout)[-300:]}")
        return result
    result.events = int(match.group(1).replace(",", ""))
    result.seconds = float(match.group(2))
    result.events_per_s = float(match.group(3).replace(",", ""))
    result.extra = {
        "its_output": done.stdout.strip(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    result.notes.append("its own ~800 B synthetic events; Sink in the benchmark process")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    use_uvloop()
    results = [asyncio.run(run(args.events))]
    if args.in_process:
        results.append(run_in_process(args.events))
    for r in results:
        print(
            f"{r.name}: {r.events_per_s or 0:,.0f} rows/s ({r.events:,} in {r.seconds:.1f} s); "
            f"CPU {r.cpu_s_per_1k} s per 1,000; peak RSS {r.peak_rss_mb}; {r.extra} {r.notes}"
        )


if __name__ == "__main__":
    main()
