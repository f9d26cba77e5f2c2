"""Memory: state bytes per visitor, and a processor's RSS growth over a large run.

    .venv/bin/python -m benchmarks.memory [--visitors 5000] [--seconds 150] [--ttl-days 2]

1. State per visitor, in-process: `stream.processor.engine.Engine` over the traffic
   model's events of N visitors (batches of 5,000, as the agent takes them), keeping
   each visitor's encoded state as the table would. Reported: the mean `len(state)`
   of visitors with an open session (active) at the end, of every state written
   (what the changelog carries), and after a final tick has closed every session
   (inactive).
2. RSS growth: one `clickstream worker --roles processor`; its RSS is read idle,
   then traffic-model events (new visitors keep arriving; returning ones come from a
   pool of 1,000,000) are produced for `--seconds`, never more than 50,000 ahead of
   the processor's commits, then the processor drains. Growth per visitor =
   (RSS at the end - idle RSS) / distinct visitors; and the slope between a checkpoint
   at half time and the end (production paused until the processor caught up at each),
   which leaves out the buffers a first batch allocates. The traffic model gives ~57
   events per visitor, so 1,000,000 visitors (~57 M events) does not fit in a few
   minutes: the run is as large as `--seconds` allows, and says how large.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from itertools import islice

import orjson
from aiokafka.partitioner import murmur2

from benchmarks.common import (
    EVENTS_TOPIC,
    PROCESSOR_GROUP,
    Cluster,
    Committed,
    Peak,
    Result,
    load_now,
    producer,
    stream_events,
    use_uvloop,
)
from benchmarks.harness import percentile

AHEAD = 50_000
POOL = 1_000_000
PARTITIONS = 4


def state_sizes(visitors: int, seed: int = 3) -> Result:
    from stream import config
    from stream.journey import decode_state
    from stream.processor.engine import TICK_KEY, Engine, Record, tick_value
    from stream.processor.local import LocalTables
    from stream.simulate import generate

    settings = config.load({"CLICKSTREAM_PARTITIONS": str(PARTITIONS)})
    engine = Engine(settings)
    enricher_events = _events_of(
        generate(seed, visitors, base_time_ms=int(time.time() * 1000) - 30 * 86_400_000)
    )
    tables = LocalTables(PARTITIONS)
    states = tables.visitors
    written: list[int] = []
    offsets = [0] * PARTITIONS
    n = 0
    started = time.perf_counter()
    while batch := list(islice(enricher_events, 5000)):
        records = []
        for key, value in batch:
            partition = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
            records.append(Record(EVENTS_TOPIC, partition, offsets[partition], key, value))
            offsets[partition] += 1
        result = tables.run(engine, records)
        written.extend(len(v) for _, v in result.states.values() if v is not None)
        n += len(records)
    seconds = time.perf_counter() - started
    active = [len(s) for s in states.values() if decode_state(s).sessions]
    # The clock far past every arrival closes every session: what an inactive visitor keeps.
    ticks = [
        Record(EVENTS_TOPIC, p, offsets[p], TICK_KEY, tick_value(2**52 // 1024))
        for p in range(PARTITIONS)
    ]
    tables.run(engine, ticks)
    inactive = [len(s) for s in states.values() if not decode_state(s).sessions]
    mean = sum(active) / max(1, len(active))
    out = Result("state per active visitor (engine)", unit="bytes", events=n, seconds=seconds)
    out.extra = {
        "visitors": len(states),
        "events": n,
        "engine_events_per_s_in_process": round(n / seconds),
        "active_visitors_at_end": len(active),
        "active_mean_bytes": round(mean),
        "active_p99_bytes": percentile(active, 99) if active else None,
        "active_max_bytes": max(active) if active else None,
        "written_mean_bytes": round(sum(written) / max(1, len(written))),
        "written_p99_bytes": percentile(written, 99) if written else None,
        "written_max_bytes": max(written) if written else None,
        "inactive_mean_bytes": round(sum(inactive) / max(1, len(inactive))),
        "all_mean_bytes": round(sum(len(s) for s in states.values()) / max(1, len(states))),
    }
    out.notes.append(
        f"target <= 2,048 B per active visitor: {'met' if mean <= 2048 else 'NOT met'}"
    )
    return out


def _events_of(calls):
    from benchmarks.common import to_event
    from stream.enrich import Enricher

    enricher = Enricher()
    for call in calls:
        event = to_event(call, enricher)
        yield event["visitor_id"].encode(), orjson.dumps(event)


async def rss_growth(seconds: float = 150.0, ttl_days: int = 0) -> Result:
    """With `ttl_days`, the processor drops state idle that long (and lapses after as
    long), and the traffic's event time runs 20 times slower between session starts
    (60 s instead of 3 s), so a run of a few minutes spans weeks of event time: the
    visitors held in state then stay around those of the last `ttl_days`."""
    env: dict[str, str] = {}
    events = stream_events(seed=5, visitors=POOL)
    if ttl_days:
        from stream.simulate.model import Mix

        env = {
            "CLICKSTREAM_STATE_TTL_DAYS": str(ttl_days),
            "CLICKSTREAM_LAPSE_DAYS": str(ttl_days),
        }
        events = stream_events(
            seed=5,
            visitors=POOL,
            base_time_ms=int(time.time() * 1000) - 400 * 86_400_000,
            mix=Mix(session_interval_s=60.0),
        )
    with Cluster(PARTITIONS, **env) as cluster:
        broker = cluster.start_broker()
        proc = cluster.start_processor()
        await asyncio.sleep(3.0)  # settled after the join
        idle = proc.rss_mb()
        visitors: set[bytes] = set()
        produced = 0
        ends = [0] * PARTITIONS
        prod = producer(cluster.bootstrap)
        await prod.start()
        curve: list[tuple[int, int, float]] = []  # (events consumed, visitors produced, RSS MB)
        checkpoints: list[tuple[int, float]] = []  # (visitors, RSS MB) with the processor caught up
        held: list[int] = []  # visitors in the processor's state at each checkpoint
        with Peak([proc, broker]) as peak:
            started = time.monotonic()
            async with Committed(
                cluster.bootstrap, PROCESSOR_GROUP, EVENTS_TOPIC, PARTITIONS
            ) as committed:
                for _half in range(2):
                    until = time.monotonic() + seconds / 2
                    while time.monotonic() < until:
                        done = sum((await committed.read()).values())
                        curve.append((done, len(visitors), proc.rss_mb()))
                        if produced - done >= AHEAD:
                            await asyncio.sleep(0.2)
                            continue
                        futures = []
                        for key, value in islice(events, 5000):
                            visitors.add(key)
                            futures.append(await prod.send(EVENTS_TOPIC, value, key=key))
                        for meta in await asyncio.gather(*futures):
                            ends[meta.partition] = max(ends[meta.partition], meta.offset + 1)
                        produced += len(futures)
                    while done < produced:  # a checkpoint: the processor has everything so far
                        if proc.popen.poll() is not None:
                            raise RuntimeError(f"the processor exited:\n{cluster.logs()}")
                        await asyncio.sleep(0.5)
                        done = sum(min(v, ends[p]) for p, v in (await committed.read()).items())
                        curve.append((done, len(visitors), proc.rss_mb()))
                    await asyncio.sleep(3.0)  # two ticks: expiries due by now are done
                    checkpoints.append((len(visitors), proc.rss_mb()))
                    held.append(_visitors_in_state(cluster.health["processor"]))
            await prod.stop()
            elapsed = time.monotonic() - started
            final = checkpoints[-1][1]
    growth = final - idle
    n_visitors = len(visitors)
    out = Result(
        f"processor RSS growth, state TTL {ttl_days} d" if ttl_days else "processor RSS growth",
        events_per_s=produced / elapsed,
        peak_rss_mb=peak.peaks["processor"],
        events=produced,
        seconds=elapsed,
    )
    step = max(1, len(curve) // 12)
    out.extra = {
        "visitors": n_visitors,
        "events": produced,
        "checkpoints_visitors_rss_mb": [(v, round(r, 1)) for v, r in checkpoints],
        "growth_bytes_per_visitor_second_half": round(
            (checkpoints[1][1] - checkpoints[0][1])
            * 2**20
            / max(1, checkpoints[1][0] - checkpoints[0][0])
        ),
        "visitors_in_state_at_checkpoints": held,
        "idle_rss_mb": round(idle, 1),
        "final_rss_mb": round(final, 1),
        "growth_mb": round(growth, 1),
        "growth_bytes_per_visitor": round(growth * 2**20 / max(1, n_visitors)),
        "broker_peak_rss_mb": round(peak.peaks["broker"]),
        "curve_events_visitors_rss": [(e, v, round(r)) for e, v, r in curve[::step]],
        "load_average_after": load_now(),
    }
    if n_visitors < 1_000_000:
        out.notes.append(
            f"1,000,000 visitors did not fit: {n_visitors:,} visitors ({produced:,} events) in {elapsed:.0f} s"
        )
    return out


async def crowd(visitors: int = 1_000_000, budget_s: float = 900.0) -> Result:
    """RSS per visitor held in state with a crowd of `visitors` distinct visitors (live:
    received now, state expiry on with its default TTL). Each visitor sends a page view
    and every third also a product view, as a crowd of mostly one-page visits does;
    events are produced never more than AHEAD ahead of the processor's commits, in two
    halves, each followed by a checkpoint with the processor caught up. Reported: the
    slope between the checkpoints (RSS per visitor added to the state, without the
    fixed buffers a first batch allocates) and (final - idle RSS) / visitors in state."""
    template = orjson.loads(next(stream_events(seed=7))[1])
    template.update(type="page", event="", name="", user_id="", properties={}, traits={})
    product = dict(template, type="track", event="Product Viewed")
    product["properties"] = {"product_id": "P1004", "name": "Dry Bag 20L", "price": 25.0}

    def records(first: int, last: int):
        for i in range(first, last):
            vid = f"{i:08x}-crowd-{i * 2654435761 % 2**32:08x}"
            now = int(time.time() * 1000)
            for n, base in enumerate((template, product) if i % 3 == 0 else (template,)):
                e = dict(base, visitor_id=vid, anonymous_id=vid, message_id=f"{vid}-{n}")
                e["ts"] = e["client_ts"] = e["received_at"] = now + n
                yield vid.encode(), orjson.dumps(e)

    with Cluster(PARTITIONS) as cluster:
        broker = cluster.start_broker()
        proc = cluster.start_processor()
        await asyncio.sleep(3.0)
        idle = proc.rss_mb()
        prod = producer(cluster.bootstrap)
        await prod.start()
        state = {"produced": 0, "done": 0}
        ends = [0] * PARTITIONS
        started = time.monotonic()
        checkpoints: list[tuple[int, float]] = []  # (visitors in state, RSS MB)
        with Peak([proc, broker]) as peak:
            async with Committed(
                cluster.bootstrap, PROCESSOR_GROUP, EVENTS_TOPIC, PARTITIONS
            ) as committed:

                async def caught_up() -> int:
                    done = sum(min(v, ends[p]) for p, v in (await committed.read()).items())
                    state["done"] = done
                    return done

                async def feed(events, until: float) -> None:
                    while time.monotonic() < until:
                        if state["produced"] - await caught_up() >= AHEAD:
                            if proc.popen.poll() is not None:
                                raise RuntimeError(f"the processor exited:\n{cluster.logs()}")
                            await asyncio.sleep(0.2)
                            continue
                        chunk = list(islice(events, 5000))
                        if not chunk:
                            break
                        futures = [await prod.send(EVENTS_TOPIC, v, key=k) for k, v in chunk]
                        for meta in await asyncio.gather(*futures):
                            ends[meta.partition] = max(ends[meta.partition], meta.offset + 1)
                        state["produced"] += len(chunk)
                    while await caught_up() < state["produced"]:
                        await asyncio.sleep(0.5)
                    await asyncio.sleep(3.0)  # two ticks
                    checkpoints.append(
                        (_visitors_in_state(cluster.health["processor"]), proc.rss_mb())
                    )

                half = visitors // 2
                await feed(records(0, half), started + budget_s / 2)
                await feed(records(half, visitors), started + budget_s)
            await prod.stop()
            elapsed = time.monotonic() - started
    (held_half, rss_half), (held, final) = checkpoints
    out = Result(
        f"processor RSS, a crowd of {visitors:,} visitors",
        events_per_s=state["done"] / elapsed,
        peak_rss_mb=peak.peaks["processor"],
        events=state["done"],
        seconds=elapsed,
    )
    out.extra = {
        "visitors_in_state": held,
        "checkpoints_visitors_rss_mb": [(held_half, round(rss_half, 1)), (held, round(final, 1))],
        "idle_rss_mb": round(idle, 1),
        "final_rss_mb": round(final, 1),
        "rss_bytes_per_visitor_in_state": round((final - idle) * 2**20 / max(1, held)),
        "rss_bytes_per_visitor_in_state_slope": round(
            (final - rss_half) * 2**20 / max(1, held - held_half)
        ),
        "load_average_after": load_now(),
    }
    if held < visitors:
        out.notes.append(
            f"{visitors:,} visitors did not fit in {budget_s:.0f} s: {held:,} in state"
        )
    return out


def _visitors_in_state(health_url: str) -> int:
    """clickstream_visitors_in_state summed over partitions, from the processor's /metrics."""
    import urllib.request

    with urllib.request.urlopen(health_url.replace("/healthz", "/metrics"), timeout=5) as r:
        text = r.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("clickstream_visitors_in_state{")
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--visitors", type=int, default=5000)
    parser.add_argument(
        "--crowd", type=int, default=0, help="only the crowd run, this many visitors"
    )
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument(
        "--ttl-days", type=int, default=0, help="state TTL; also slows event time (see rss_growth)"
    )
    args = parser.parse_args()
    use_uvloop()
    if args.crowd:
        r = asyncio.run(crowd(args.crowd))
        print(f"{r.name}: {r.events_per_s:,.0f} events/s, {r.extra} {r.notes}")
        return
    for r in (state_sizes(args.visitors), asyncio.run(rss_growth(args.seconds, args.ttl_days))):
        print(f"{r.name}: {r.extra} {r.notes}")


if __name__ == "__main__":
    main()
