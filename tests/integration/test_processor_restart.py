"""Crashes and rebalances change nothing: the same log through an uninterrupted processor,
through one killed with SIGKILL mid-stream and restarted, and through two workers one of
which is killed mid-stream (its partitions move to the other), gives the same rows in
every table the processor feeds: sessions, stage transitions, triggers, visitors,
customers and metric figures, column by column, not only counts.

The log is the same in all three runs: the events, then one tick record per partition
a day ahead (the clock in the log), which closes every session at the same place in the
log whatever the workers did meanwhile. The workers' own ticks land elsewhere in each
run; they close nothing here (every event arrived within the idle time) and only cut
the metric increments differently, so metric rows are compared as sums per window, key
and partition, which is what every query reads.
"""

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream import topics
from stream.collector.normalize import to_record
from stream.enrich import Enricher
from stream.processor.engine import TICK_KEY, tick_value
from tests.support.workers import Cluster

pytestmark = pytest.mark.integration

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"
FLOW = [
    "page",
    "Product Viewed",
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Product Reviewed",
]
PARTITIONS = 4
DAY_MS = 86_400_000

# Every column of every table, in a fixed order (metrics: summed per window, key, partition).
TABLES = {
    "sessions": "SELECT * FROM clickstream.sessions FINAL ORDER BY session_id",
    "stage_transitions": "SELECT * FROM clickstream.stage_transitions FINAL ORDER BY idempotency_key",
    "triggers": "SELECT * FROM clickstream.triggers FINAL ORDER BY idempotency_key",
    "visitors": "SELECT * FROM clickstream.visitors FINAL ORDER BY visitor_id",
    "customers": "SELECT * FROM clickstream.customers FINAL ORDER BY user_id",
}
FIGURES = (
    "visitors, new_visitors, returning_visitors, sessions, bounces, pageviews, engaged_seconds,"
    " sessions_awareness, sessions_consideration, sessions_decision, sessions_purchase,"
    " stage_transitions, carts_created, carts_abandoned, checkouts, orders, revenue"
)
METRICS = (
    "SELECT window_start, source, campaign, device_type, visitor_type, partition, "
    + ", ".join(f"round(sum({f.strip()}), 3)" for f in FIGURES.split(","))
    + " FROM clickstream.journey_metrics_1m FINAL"
    " GROUP BY window_start, source, campaign, device_type, visitor_type, partition"
    " ORDER BY window_start, source, campaign, device_type, visitor_type, partition"
)


def make_events(visitors: int, now_ms: int) -> list[dict]:
    """Each visitor walks part of the funnel three hours ago, some come back 40 minutes
    later, every tenth is logged in (two devices per user: customers)."""
    enricher = Enricher()
    product = {"product_id": "p1", "sku": "S1", "name": "Mug", "price": 10.0, "quantity": 1}
    records = []
    for v in range(visitors):
        visitor = f"r-{v}"
        depth = 1 + v % len(FLOW)
        visits = 2 if v % 3 == 0 else 1
        for visit in range(visits):
            start = now_ms - 3 * 3_600_000 + visit * 40 * 60_000 + (v % 50) * 1000
            for i, name in enumerate(FLOW[:depth]):
                call = {"messageId": f"{visitor}-{visit}-{i}", "anonymousId": visitor}
                call["context"] = {"userAgent": CHROME}
                if v % 10 == 0:
                    call["userId"] = f"u-{v // 20}"
                if name == "page":
                    call.update(
                        type="page", name="Home", properties={"url": "https://shop.example/"}
                    )
                elif name == "Order Completed":
                    props = {"order_id": f"o-{visitor}-{visit}", "revenue": 10.0, "currency": "USD"}
                    call.update(type="track", event=name, properties=props)
                elif name == "Product Reviewed":
                    props = {"product_id": "p1", "rating": 5}
                    call.update(type="track", event=name, properties=props)
                else:
                    call.update(type="track", event=name, properties=product)
                ts = start + i * 15_000
                call["timestamp"] = (
                    time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts / 1000))
                    + f".{ts % 1000:03d}Z"
                )
                records.append(
                    to_record(
                        call,
                        source="test",
                        received_at_ms=now_ms,
                        ip="203.0.113.9",
                        header_user_agent=CHROME,
                        enricher=enricher,
                    )
                )
    records.sort(key=lambda r: (r["ts"], r["message_id"]))
    return records


async def produce(bootstrap: str, records: list[dict], clock_ms: int) -> None:
    """The events, then the clock a day ahead at the end of every partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for r in records:
            await producer.send(topics.EVENTS, orjson.dumps(r), key=r["visitor_id"].encode())
        await producer.flush()
        for partition in range(PARTITIONS):
            await producer.send(
                topics.EVENTS, tick_value(clock_ms), key=TICK_KEY, partition=partition
            )
        await producer.flush()
    finally:
        await producer.stop()


def settled(cluster: Cluster, events: int, timeout: float = 150.0) -> None:
    """Every event in a closed session, and nothing moving for 3 s."""
    query = (
        "SELECT sum(events), countIf(NOT closed), (SELECT count() FROM clickstream.journey_metrics_1m),"
        " (SELECT count() FROM clickstream.visitors),"
        " (SELECT sum(version) FROM clickstream.customers FINAL) FROM clickstream.sessions FINAL"
    )
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = cluster.sql(query)[0]
        if now != last:
            last, since = now, time.monotonic()
        elif now[0] == events and now[1] == 0 and time.monotonic() - since >= 3:
            return
        time.sleep(0.3)
    raise AssertionError(f"not settled: {last} for {events} events\n{cluster.logs()}")


def outputs(cluster: Cluster) -> dict[str, list]:
    out = {name: cluster.sql(query) for name, query in TABLES.items()}
    out["metrics"] = cluster.sql(METRICS)
    return out


def run(tmp_path, name: str, records: list[dict], clock_ms: int, crash: str) -> dict[str, list]:
    cluster = Cluster(tmp_path / name)
    try:
        cluster.start_broker()
        cluster.start_storage()
        asyncio.run(produce(cluster.bootstrap, records, clock_ms))
        transitions = "SELECT count() FROM clickstream.stage_transitions"
        if crash == "none":
            cluster.start_processor("processor-1")
        elif crash == "single":
            first = cluster.start_processor("processor-1")
            wait_above(cluster, transitions, 300)
            cluster.kill(first)
            cluster.start_processor("processor-2")
        else:  # "rebalance": two workers share the partitions, one dies mid-stream
            cluster.start_processor("processor-1")
            second = cluster.start_processor("processor-2")
            wait_above(cluster, transitions, 300)
            joined = generation(cluster, "processor-2")
            cluster.kill(second)
            # Nothing moves on the dead worker's partitions until the survivor has them
            # (its session times out first): settled() must not take that for the end.
            deadline = time.monotonic() + 60
            while generation(cluster, "processor-1") <= joined:
                assert time.monotonic() < deadline, f"no takeover\n{cluster.logs()}"
                time.sleep(0.2)
        settled(cluster, len(records))
        return outputs(cluster)
    finally:
        cluster.stop()


def generation(cluster: Cluster, worker: str) -> int:
    """The consumer group generation of the worker's latest completed rebalance."""
    log = (cluster.data_dir / f"{worker}.log").read_text(errors="replace")
    return max(map(int, re.findall(r"rebalance complete: generation (\d+)", log)), default=-1)


def wait_above(cluster: Cluster, query: str, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while cluster.sql(query)[0][0] < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{query} stayed below {n}\n{cluster.logs()}")
        time.sleep(0.1)


@pytest.mark.timeout(420)
def test_a_crash_or_a_rebalance_mid_stream_changes_no_output(tmp_path):
    now_ms = int(time.time() * 1000)
    records = make_events(600, now_ms)
    clock = now_ms + DAY_MS
    # The clusters share nothing (broker, ClickHouse directory, ports): the uninterrupted
    # run and the single crash side by side, the rebalance after them, alone (under load,
    # a worker re-seeking while the other joins can crash on a partition it just lost).
    with ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(run, tmp_path, name, records, clock, crash)
            for name, crash in (("uninterrupted", "none"), ("single", "single"))
        }
        got = {name: future.result() for name, future in futures.items()}
    got["rebalance"] = run(tmp_path, "rebalance", records, clock, "rebalance")
    reference = got.pop("uninterrupted")
    assert len(reference["sessions"]) > 600 and reference["customers"]
    assert len(reference["stage_transitions"]) > 1200 and reference["triggers"]
    for crash, outputs_of_crash in got.items():
        for table, rows in reference.items():
            assert outputs_of_crash[table] == rows, (
                f"{crash}: {table} differs from the uninterrupted run"
            )
