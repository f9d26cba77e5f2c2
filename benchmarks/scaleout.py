"""Scale-out check: 1, 2 and 3 processor workers on one broker, 4 and 8 partitions.

    .venv/bin/python -m benchmarks.scaleout [--events 100000] [--partitions 4,8] [--workers 1,2,3]

Each run: a fresh `clickstream broker` (CLICKSTREAM_PARTITIONS=p), the same pre-loaded
traffic-model events, one `worker --roles sink,api`, then N `worker --roles
processor` started together. Throughput as in the processor benchmark (commits of
`clickstream-processor` from the first one seen to the end of the backlog, so start-up
and the first group join are excluded, later rebalances are not). Then the run
settles: the idle-partition tick closes every session, the sink catches up, and
ClickHouse is read with FINAL. Every run must give the SAME set of stage-change
idempotency keys and the SAME session ids as the first one (1 worker); the session
rows' contents are compared too.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time

from benchmarks.common import (
    EVENTS_TOPIC,
    PROCESSOR_GROUP,
    SINK_GROUP,
    Cluster,
    Committed,
    Result,
    all_partitions,
    drain,
    highwaters,
    load_now,
    model_events,
    per_1k,
    produce,
    sql,
    use_uvloop,
)
from stream import topics
from stream.sink import rows

SESSION_COLUMNS = "session_id, visitor_id, started_at, ended_at, events, pageviews, stage_reached, orders, revenue, closed"


async def settle(cluster: Cluster, timeout: float = 120.0) -> float:
    """Until every session is closed in ClickHouse and the sink has committed every topic's
    end, the ends unchanged for 3 s. Returns the seconds it took."""
    from stream import config

    settings = config.load(
        {k: v for k, v in cluster.env.items() if k.startswith(("CLICKSTREAM_", "KAFKA_"))}
    )
    names = list(rows.routes(settings))
    started = time.monotonic()
    stable_since, last = time.monotonic(), None
    # The processor writes a tick into each events partition every 2 s, and each tick a
    # partition clock into the windows changelog: those topics' ends never stand still,
    # and the sink may be a few ticks behind them.
    ticking = {settings.topic(topics.EVENTS), *topics.changelog_topics(settings)}
    while time.monotonic() - started < timeout:
        ends = {n: await highwaters(cluster.bootstrap, n, cluster.partitions) for n in names}
        outputs = {n: e for n, e in ends.items() if n not in ticking}
        if outputs != last:
            stable_since, last = time.monotonic(), outputs
        done = True
        for name in names:
            async with Committed(
                cluster.bootstrap, SINK_GROUP, name, cluster.partitions
            ) as committed:
                got = await committed.read()
                slack = 5 if name in ticking else 0
                if any(got.get(p, 0) < end - slack for p, end in ends[name].items()):
                    done = False
                    break
        if done and time.monotonic() - stable_since >= 3.0:
            open_sessions = sql(
                cluster.api, "SELECT count() FROM clickstream.sessions FINAL WHERE NOT closed"
            )[0][0]
            if open_sessions == 0:
                return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the pipeline did not settle in {timeout:.0f}s:\n{cluster.logs()}")


def digest(values) -> str:
    h = hashlib.blake2b(digest_size=8)
    for value in sorted(values):
        h.update(repr(value).encode())
    return h.hexdigest()


async def one(partitions: int, workers: int, n: int) -> dict:
    events = model_events(n)
    # Sessions close after this much arrival-time silence (default: timeout + lateness, 30 min+).
    with Cluster(partitions, CLICKSTREAM_IDLE_CLOSE_SECONDS="3") as cluster:
        broker = cluster.start_broker()
        ends = all_partitions(await produce(cluster.bootstrap, EVENTS_TOPIC, events), partitions)
        cluster.start_storage()
        started = time.monotonic()
        procs = [cluster.start_processor(f"processor-{i}", wait=False) for i in range(workers)]
        result = await drain(
            cluster.bootstrap,
            PROCESSOR_GROUP,
            EVENTS_TOPIC,
            ends,
            procs,
            broker,
            started,
            timeout=900,
        )
        settled = await settle(cluster)
        keys = {
            r[0]
            for r in sql(
                cluster.api, "SELECT idempotency_key FROM clickstream.stage_transitions FINAL"
            )
        }
        sessions = [
            tuple(r)
            for r in sql(cluster.api, f"SELECT {SESSION_COLUMNS} FROM clickstream.sessions FINAL")
        ]
        stage_records = sum(
            (await highwaters(cluster.bootstrap, "journey.stage-changes", partitions)).values()
        )
    return {
        "partitions": partitions,
        "workers": workers,
        "events_per_s": result.rate,
        "cpu_s_per_1k": per_1k(result.cpu, result.events),
        "busy_cores": round(result.cpu / result.seconds, 2) if result.seconds else None,
        "others_busy_cores": round(result.others_busy, 2),
        "measured_events": result.events,
        "seconds": round(result.seconds, 2),
        "wall_from_start_s": round(result.wall_from_start, 2),
        "settle_s": round(settled, 1),
        "stage_keys": keys,
        "session_ids": {s[0] for s in sessions},
        "session_rows": set(sessions),
        "stage_change_records": stage_records,
        "load_average_after": load_now(),
    }


async def run(n: int = 100_000, partition_counts=(4, 8), worker_counts=(1, 2, 3)) -> list[Result]:
    runs = []
    for partitions in partition_counts:
        for workers in worker_counts:
            runs.append(await one(partitions, workers, n))
            r = runs[-1]
            print(
                f"  scale-out p={partitions} workers={workers}: {r['events_per_s']:,.0f} events/s, "
                f"{len(r['stage_keys'])} stage keys, {len(r['session_ids'])} sessions",
                flush=True,
            )
    reference = runs[0]
    out = []
    for r in runs:
        same_keys = r["stage_keys"] == reference["stage_keys"]
        same_sessions = r["session_ids"] == reference["session_ids"]
        same_rows = r["session_rows"] == reference["session_rows"]
        result = Result(
            f"scale-out: {r['workers']} worker(s), {r['partitions']} partitions",
            events_per_s=r["events_per_s"],
            cpu_s_per_1k=r["cpu_s_per_1k"],
            events=r["measured_events"],
            seconds=r["seconds"],
            extra={
                "partitions": r["partitions"],
                "workers": r["workers"],
                "busy_cores": r["busy_cores"],
                "others_busy_cores": r["others_busy_cores"],
                "wall_from_start_s": r["wall_from_start_s"],
                "settle_s": r["settle_s"],
                "stage_change_keys": len(r["stage_keys"]),
                "stage_change_records_on_topic": r["stage_change_records"],
                "session_ids": len(r["session_ids"]),
                "stage_keys_digest": digest(r["stage_keys"]),
                "session_ids_digest": digest(r["session_ids"]),
                "identical_stage_keys": same_keys,
                "identical_session_ids": same_sessions,
                "identical_session_rows": same_rows,
                "missing_stage_keys": len(reference["stage_keys"] - r["stage_keys"]),
                "extra_stage_keys": len(r["stage_keys"] - reference["stage_keys"]),
                "missing_session_ids": len(reference["session_ids"] - r["session_ids"]),
                "extra_session_ids": len(r["session_ids"] - reference["session_ids"]),
                "load_average_after": r["load_average_after"],
                "reference": f"{reference['workers']} worker(s), {reference['partitions']} partitions",
            },
        )
        if not (same_keys and same_sessions):
            result.notes.append("NOT identical to the reference run")
        elif not same_rows:
            result.notes.append("same ids, but some session rows differ from the reference run")
        out.append(result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", default="4,8")
    parser.add_argument("--workers", default="1,2,3")
    args = parser.parse_args()
    use_uvloop()
    results = asyncio.run(
        run(
            args.events,
            [int(p) for p in args.partitions.split(",")],
            [int(w) for w in args.workers.split(",")],
        )
    )
    for r in results:
        e = r.extra
        print(
            f"{r.name}: {r.events_per_s:,.0f} events/s; stage keys {e['stage_change_keys']} "
            f"identical={e['identical_stage_keys']}; sessions {e['session_ids']} identical={e['identical_session_ids']}"
            f" rows identical={e['identical_session_rows']} {r.notes}"
        )


if __name__ == "__main__":
    main()
