"""Processor-state archive: restore time and the sink's archiving rate.

    .venv/bin/python -m benchmarks.restore [--visitors 100000] [--partitions 4] [--keep DIR]

1. Fills processor_state on a fresh chdb directory with N realistic visitor states
   (a purchase journey, an open session, a cart line, offsets; ~850 B each) plus each
   partition's clock record (windows table).
2. Starts the embedded broker on a free port, creates the topics and times
   `stream.restore.restore` (read FINAL, rebase, produce acks=all, wait for every ack):
   records/s, wall and CPU.
3. Times a Sink with the archive on reading those N changelog records back into
   processor_state (a second database), from start until every partition is committed:
   the sink's archiving rate in rows/s.

`--keep DIR` leaves the filled data directory (database `clickstream`) for a by-hand
`clickstream run` with CLICKSTREAM_DATA_DIR=DIR, to time the start-up with the restore.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

from aiokafka.structs import TopicPartition

from stream import config
from stream.broker import EmbeddedBroker, create_topics
from stream.journey.state import SessionState, VisitorState, encode_state
from stream.metrics.windows import PartitionRecord, partition_key
from stream.partitioning import partition_of
from stream.restore import changelog_ends, restore
from stream.sink import rows
from stream.sink.clickhouse import connect
from stream.sink.consumer import Sink
from stream.sink.migrate import apply
from tests.support.pipeline import free_port

BASE_MS = 1_767_225_600_000


def visitor_state(i: int) -> bytes:
    vid = f"visitor-{i:08d}"
    start = BASE_MS + i * 1000
    session = SessionState(
        f"{vid}-s1",
        start,
        start + 240_000,
        events=6,
        pageviews=3,
        interactions=3,
        engaged_s=85.0,
        stage="purchase",
        landing_page="https://shop.example/?utm_source=news&utm_medium=email",
        landing_ts=start,
        exit_page="https://shop.example/checkout/done",
        exit_ts=start + 240_000,
        referrer="https://www.google.com/",
        ref_source="google",
        ref_medium="search",
        utm_source="news",
        utm_medium="email",
        utm_campaign="spring",
        device_type="desktop",
        browser="Chrome",
        os="Linux",
        orders=1,
        revenue=25.0,
        cart_touched=True,
        checkout=True,
        is_new=True,
    )
    state = VisitorState(
        vid,
        anonymous_id=vid,
        source="web",
        first_seen=start,
        last_seen=start + 240_000,
        last_event_id=f"{vid}-5",
        offsets={i % 4: 1_000_000 + i},
        sessions=[session],
        session_count=1,
        events=6,
        orders=1,
        revenue=25.0,
        last_order_ts=start + 240_000,
        order_ids=[f"o-{vid}"],
        stage="purchase",
        max_stage="purchase",
        history=[
            ("awareness", start),
            ("consideration", start + 20_000),
            ("decision", start + 60_000),
            ("purchase", start + 240_000),
        ],
        first_referrer="https://www.google.com/",
        first_landing_page="https://shop.example/?utm_source=news&utm_medium=email",
        first_utm_source="news",
        first_utm_medium="email",
        first_utm_campaign="spring",
        cart=[("p1", "S1", "Mug", 12.5, 2)],
        currency="USD",
        last_product=("p1", "Mug", "https://shop.example/p/1"),
        version=7,
    )
    return encode_state(state)


def fill(client, settings: config.Settings, visitors: int) -> int:
    table = f"{settings.database}.processor_state"
    columns = list(rows.PROCESSOR_STATE.columns)
    total_bytes = 0
    block: list[list] = []
    for i in range(visitors):
        key = f"visitor-{i:08d}".encode()
        value = visitor_state(i)
        total_bytes += len(value)
        partition = partition_of(key, settings.partitions)
        block.append(["visitors", partition, key, value, 0, rows.state_version(1, i), BASE_MS])
        if len(block) == 20_000:
            client.insert(table, block, column_names=columns)
            block = []
    for p in range(settings.partitions):  # each partition's clock, as the processor keeps it
        clock = PartitionRecord(clock=BASE_MS + visitors * 1000, published=9, tick_offset=99)
        block.append(["windows", p, partition_key(p), clock.encode(), 0, 1, BASE_MS])
    client.insert(table, block, column_names=columns)
    return total_bytes


async def archive_rate(settings: config.Settings, client, expected: int) -> tuple[float, float]:
    """A sink (archive on) reads the seeded changelog into a second database."""
    sink_settings = config.load(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "CLICKHOUSE_DSN": settings.clickhouse_url,
            "CLICKSTREAM_DATABASE": "archive_bench",
            "CLICKSTREAM_PARTITIONS": str(settings.partitions),
            "CLICKSTREAM_STATE_ARCHIVE": "on",
        }
    )
    apply(client, sink_settings)
    ends: dict[TopicPartition, int] = {}
    # Ends from a consumer's fetches would be exact; ListOffsets is up to one batch
    # short on this broker, so wait for the row count instead.
    ends = await changelog_ends(settings)
    assert sum(ends.values()) > 0
    sink = Sink(sink_settings, client, group_id="archive-bench", session_timeout_ms=1500)
    cpu0 = time.process_time()
    started = time.monotonic()
    await sink.start()
    query = "SELECT count() FROM archive_bench.processor_state"
    while client.query(query).result_rows[0][0] < expected:
        await asyncio.sleep(0.05)
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu0
    await sink.stop(catchup_s=0)
    return wall, cpu


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visitors", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keep", default="", help="data directory to fill and keep")
    args = parser.parse_args()

    data_dir = Path(args.keep or tempfile.mkdtemp(prefix="restore-bench-"))
    broker = EmbeddedBroker(free_port())
    settings = config.load(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.port}",
            "CLICKSTREAM_DATA_DIR": str(data_dir),
            "CLICKSTREAM_PARTITIONS": str(args.partitions),
            "CLICKSTREAM_STATE_ARCHIVE": "on",
        }
    )
    client = connect(settings)
    apply(client, settings)
    started = time.monotonic()
    size = fill(client, settings, args.visitors)
    print(
        f"filled processor_state: {args.visitors:,} visitor states, {size / args.visitors:,.0f} B"
        f" each, in {time.monotonic() - started:.1f}s"
    )
    broker.start()
    try:
        await create_topics(settings)
        cpu0 = time.process_time()
        report = await restore(settings, client)
        cpu = time.process_time() - cpu0
        assert report.total == args.visitors + args.partitions, report
        print(
            f"restore: {report.total:,} records in {report.seconds:.2f}s wall"
            f" ({report.total / report.seconds:,.0f} records/s), {cpu:.2f}s CPU in this process;"
            f" peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"
        )
        wall, cpu = await archive_rate(settings, client, report.total)
        print(
            f"sink archiving: {report.total:,} changelog records in {wall:.2f}s wall"
            f" ({report.total / wall:,.0f} rows/s, {report.total / cpu:,.0f} rows per CPU s)"
        )
    finally:
        broker.stop()
    if args.keep:
        print(f"kept {data_dir} (processor_state in database clickstream)")


if __name__ == "__main__":
    asyncio.run(main())
