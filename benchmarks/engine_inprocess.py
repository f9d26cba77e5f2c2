"""The processor's engine alone, in process: no Faust, no Kafka (its tables as dicts).

    .venv/bin/python -m benchmarks.engine_inprocess [--batches 8]

Batches of 5,000 traffic-model events (benchmarks.common.stream_events), generated first,
then timed through `Engine.run`. For the previous engine (before the third session) the
same loop is `engine.run(records, states.get)` with `states.update(result.states)`.
"""

from __future__ import annotations

import argparse
import gc
import time
from itertools import islice

from benchmarks.common import EVENTS_TOPIC, stream_events

BATCH = 5000


def measure(batches: int) -> float:
    from stream import config, partitioning
    from stream.processor.engine import Engine, Record
    from stream.processor.local import LocalTables

    engine = Engine(config.load({"CLICKSTREAM_PARTITIONS": "4"}))
    tables = LocalTables(4)
    events = stream_events()
    offsets = [0] * 4
    prepared = []
    for _ in range(batches):
        records = []
        for key, value in islice(events, BATCH):
            partition = partitioning.partition_of(key, 4)
            offsets[partition] += 1
            records.append(Record(EVENTS_TOPIC, partition, offsets[partition], key, value))
        prepared.append(records)
    gc.collect()  # as the worker does after start-up (stream/processor/app.py)
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    started = time.perf_counter()
    for records in prepared:
        tables.run(engine, records)
    return batches * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    print(f"engine in process: {measure(args.batches):,.0f} events/s")


if __name__ == "__main__":
    main()
