"""The transport ceiling: raw aiokafka produce and consume of the processor's own events.

    .venv/bin/python -m benchmarks.transport [--events 200000]

The same traffic-model EventRecords (JSON, keyed by visitor) as the processor
benchmark, on a fresh embedded broker: one AIOKafkaProducer (acks=all, 5 ms linger,
1 MiB batches, as the project's producers) sends them all, then one AIOKafkaConsumer
(no group, every partition assigned) reads them all back. No decoding, no work:
what any consumer or producer on this broker, from Python, can at best do. CPU is the
client's (this process) and the broker's.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from benchmarks.common import (
    EVENTS_TOPIC,
    Cluster,
    Peak,
    Result,
    all_partitions,
    describe,
    load_now,
    model_events,
    per_1k,
    produce,
    use_uvloop,
)


async def consume_all(bootstrap: str, topic: str, ends: dict[int, int]) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        total, wanted = 0, sum(ends.values())
        while total < wanted:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            total += sum(len(records) for records in batches.values())
        return total
    finally:
        await consumer.stop()


async def run(n: int = 200_000, partitions: int = 4) -> list[Result]:
    events = model_events(n)
    with Cluster(partitions) as cluster:
        broker = cluster.start_broker()
        with Peak([broker]) as peak:
            cpu0, broker0, t0 = time.process_time(), broker.cpu_seconds(), time.monotonic()
            ends = all_partitions(
                await produce(cluster.bootstrap, EVENTS_TOPIC, events), partitions
            )
            cpu1, broker1, t1 = time.process_time(), broker.cpu_seconds(), time.monotonic()
            consumed = await consume_all(cluster.bootstrap, EVENTS_TOPIC, ends)
            cpu2, broker2, t2 = time.process_time(), broker.cpu_seconds(), time.monotonic()
    info = {
        **describe(events),
        "partitions": partitions,
        "broker_peak_rss_mb": round(peak.peaks["broker"]),
    }
    produced = Result(
        "transport: aiokafka produce",
        events_per_s=n / (t1 - t0),
        cpu_s_per_1k=per_1k(cpu1 - cpu0, n),
        broker_cpu_s_per_1k=per_1k(broker1 - broker0, n),
        events=n,
        seconds=t1 - t0,
        extra={**info, "load_average_after": load_now()},
    )
    read = Result(
        "transport: aiokafka consume",
        events_per_s=consumed / (t2 - t1),
        cpu_s_per_1k=per_1k(cpu2 - cpu1, consumed),
        broker_cpu_s_per_1k=per_1k(broker2 - broker1, consumed),
        events=consumed,
        seconds=t2 - t1,
        extra={**info, "load_average_after": load_now()},
    )
    for result in (produced, read):
        result.notes.append("CPU is the aiokafka client's (this process); no RSS of its own")
    return [produced, read]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    use_uvloop()
    for r in asyncio.run(run(args.events)):
        print(
            f"{r.name}: {r.events_per_s:,.0f} events/s, client CPU {r.cpu_s_per_1k:.3f} s and broker "
            f"CPU {r.broker_cpu_s_per_1k:.3f} s per 1,000 events; {r.extra}"
        )


if __name__ == "__main__":
    main()
