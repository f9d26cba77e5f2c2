"""Re-seed the processor's changelog topics from the state archived in ClickHouse.

The embedded broker keeps its log in memory only, so a restart of `clickstream run`
starts with empty changelog topics: without this, every visitor would be new again. The
sink archives every changelog record in `processor_state` (stream/sink/rows.py); before
the processor starts, `clickstream run` calls `before_start`, which runs
`clickstream restore-state` in a short-lived child process (chdb allows one process per
data directory, and the sink's process opens it next). That child:

1. applies the pending migrations (processor_state may be new);
2. does nothing unless every changelog topic is empty (a fresh broker: with a durable
   Kafka, or when the processor already ran, the changelog is the truth) and the
   archive holds rows;
3. reads the latest row of every (table, key) (`FINAL`: deleted keys left out), passes
   the value through `stream.processor.rebase.rebase` (a value it cannot decode is
   skipped, counted and logged, never fatal), and produces it to the table's changelog
   topic at its stored partition, acks=all, in blocks whose acknowledgements it waits
   for before the next block;
4. logs and prints the counts and the time; a rich progress bar when it takes longer
   than a moment.

5. re-seeds the suppression list (stream/privacy/suppressions.py) the same way, from
   the `suppressions` table, when its topic is empty.

The processor then recovers its tables from these records as after any restart. The
sink reads them like any other changelog record and archives them again (with its new
epoch, so they are the newest rows: the rebased values are the right ones from now on).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream import topics
from stream.config import Settings
from stream.partitioning import partition_of
from stream.privacy.suppressions import reseed as reseed_suppressions
from stream.processor.rebase import rebase
from stream.procs import die_with_parent
from stream.sink import rows

log = logging.getLogger(__name__)

BLOCK = 5_000  # records produced before waiting for their acknowledgements
PROGRESS_AFTER_S = 1.0
ENV = "CLICKSTREAM_STATE_ARCHIVE"
ARCHIVE_OFF = "CLICKSTREAM_STATE_ARCHIVE is off"
# Tables whose keys sit in the partition the default partitioner gives them (the
# partition of the source records keyed alike). When CLICKSTREAM_PARTITIONS changed
# since a value was archived, their values move to the key's new partition (where the
# key's events now arrive). Other tables (windows: one partition's clock and metric
# increments, written to that partition) keep their stored partition; a value whose
# partition no longer exists is left out (counted).
REHOMED_BY_KEY = frozenset({"visitors", "people"})


@dataclass
class Report:
    archived: int = 0  # live rows in processor_state (FINAL)
    produced: Counter = field(default_factory=Counter)  # table -> records produced
    undecodable: Counter = field(default_factory=Counter)  # table -> values skipped
    dropped: Counter = field(default_factory=Counter)  # table -> rebase() said None
    out_of_range: int = 0  # stored partition >= CLICKSTREAM_PARTITIONS, not rehomed: left out
    rehomed: int = 0  # partition count changed: produced to the key's new partition
    unknown_table: int = 0  # a table no longer in topics.TABLES
    seconds: float = 0.0
    skipped: str = ""  # why nothing was restored

    @property
    def total(self) -> int:
        return sum(self.produced.values())

    def summary(self) -> str:
        if self.skipped:
            return f"processor state not restored: {self.skipped}"
        tables = ", ".join(f"{t} {n:,}" for t, n in sorted(self.produced.items())) or "none"
        text = f"restored {self.total:,} processor state records ({tables}) in {self.seconds:.1f}s"
        problems = sum(self.undecodable.values()) + self.out_of_range + self.unknown_table
        if problems:
            text += (
                f"; skipped {sum(self.undecodable.values())} undecodable, "
                f"{self.out_of_range} of partitions beyond CLICKSTREAM_PARTITIONS, "
                f"{self.unknown_table} of unknown tables"
            )
        if self.rehomed:
            text += f"; {self.rehomed} moved to their key's partition (partition count changed)"
        return text


async def changelog_ends(settings: Settings) -> dict[TopicPartition, int]:
    """End offset of every changelog partition. On the embedded broker ListOffsets is up
    to one record batch short of the end, but never 0 for a partition holding records,
    which is all `restore` asks of it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics.changelog_topics(settings)
            for p in range(settings.partitions)
        ]
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


def _archived(client, settings: Settings) -> int:
    table = f"{settings.database}.{rows.PROCESSOR_STATE.name}"
    return client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0]


async def restore(settings: Settings, client, *, block: int = BLOCK, console=None) -> Report:
    """Produce the archived state to empty changelog topics; see the module docstring."""
    started = time.monotonic()
    report = Report()
    report.archived = await asyncio.to_thread(_archived, client, settings)
    if not report.archived:
        report.skipped = "nothing archived yet"
        return report
    ends = await changelog_ends(settings)
    full = sorted(f"{tp.topic}[{tp.partition}]" for tp, end in ends.items() if end)
    if full:
        report.skipped = f"the changelog topics already hold records ({', '.join(full[:4])})"
        return report
    topic_of = {table: topic for topic, table in topics.changelog_topics(settings).items()}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
    progress = None
    try:
        query = (
            f"SELECT table_name, partition, key, value "
            f"FROM {settings.database}.{rows.PROCESSOR_STATE.name} FINAL"
        )
        # The stream is read in this thread (blocks of ~8,000 rows, milliseconds each);
        # the producer's I/O runs while we wait for each block's acknowledgements.
        out = _Batches(producer)
        with client.query_row_block_stream(
            query, column_formats={"key": "bytes", "value": "bytes"}
        ) as stream:
            for rows_block in stream:
                for table, partition, key, value in rows_block:
                    topic = topic_of.get(table)
                    if topic is None:
                        report.unknown_table += 1
                        continue
                    if table in REHOMED_BY_KEY:
                        home = partition_of(key, settings.partitions)
                        if home != partition:  # archived under another partition count
                            partition = home
                            report.rehomed += 1
                    elif partition >= settings.partitions:
                        report.out_of_range += 1
                        continue
                    try:
                        value = rebase(table, value, key)
                    except Exception as exc:  # noqa: BLE001 - one bad value never stops a restore
                        report.undecodable[table] += 1
                        if report.undecodable[table] <= 3:
                            log.warning("skipping an archived %s value: %s", table, exc)
                        continue
                    if value is None:
                        report.dropped[table] += 1
                        continue
                    await out.add(topic, partition, key, value)
                    report.produced[table] += 1
                    if out.unacked >= block:
                        await out.acked()
                late = time.monotonic() - started > PROGRESS_AFTER_S
                if progress is None and console is not None and late:
                    progress = _progress(console, report.archived)
                if progress is not None:
                    progress[0].update(progress[1], completed=_seen(report))
            await out.acked()
    finally:
        if progress is not None:
            progress[0].update(progress[1], completed=_seen(report))
            progress[0].stop()
        await producer.stop()
    report.seconds = time.monotonic() - started
    if sum(report.undecodable.values()):
        log.warning(
            "%d archived value(s) could not be decoded and were skipped",
            sum(report.undecodable.values()),
            extra={"undecodable": dict(report.undecodable)},
        )
    return report


def _seen(report: Report) -> int:
    return (
        report.total
        + sum(report.undecodable.values())
        + sum(report.dropped.values())
        + report.out_of_range
        + report.unknown_table
    )


class _Batches:
    """Record batches built per partition and handed to the producer whole: about six
    times cheaper per record than one send() each (measured with 100,000 states)."""

    def __init__(self, producer: AIOKafkaProducer):
        self.producer = producer
        self.open: dict[tuple[str, int], object] = {}
        self.sent: list[asyncio.Future] = []
        self.unacked = 0

    async def add(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        batch = self.open.get((topic, partition))
        if batch is None:
            batch = self.open[(topic, partition)] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            await self._send(topic, partition)
            batch = self.open[(topic, partition)] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a {topic} value of {len(value)} B exceeds a whole batch")
        self.unacked += 1

    async def _send(self, topic: str, partition: int) -> None:
        batch = self.open.pop((topic, partition))
        self.sent.append(await self.producer.send_batch(batch, topic, partition=partition))

    async def acked(self) -> None:
        """Send every open batch and wait until the broker acknowledged all (acks=all)."""
        for topic, partition in list(self.open):
            await self._send(topic, partition)
        if self.sent:
            await asyncio.gather(*self.sent)
        self.sent.clear()
        self.unacked = 0


def _progress(console, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task("restoring processor state", total=total)
    progress.start()
    return progress, task


def main(settings: Settings) -> int:
    """`clickstream restore-state`: migrate, restore, print the summary; the exit code."""
    from rich.console import Console

    from stream.sink.clickhouse import close_all, connect
    from stream.sink.migrate import apply

    console = Console(stderr=True)
    try:
        client = connect(settings)
        apply(client, settings)
        report = (
            asyncio.run(restore(settings, client, console=console))
            if settings.archives_state
            else Report(skipped=ARCHIVE_OFF)
        )
        # The suppression list too (the broker forgot it): before any worker reads it.
        reseeded = asyncio.run(reseed_suppressions(settings, client))
        if reseeded:
            log.info("suppression list re-seeded: %d erased id hash(es)", reseeded)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, details in the log
        log.exception("restoring the processor state failed")
        console.print(f"[red]restoring the processor state failed:[/] {exc}")
        return 1
    finally:
        close_all()  # releases the embedded engine before the sink's process opens it
    log.info(
        report.summary(),
        extra={
            "restored": dict(report.produced),
            "archived": report.archived,
            "undecodable": dict(report.undecodable),
            "out_of_range": report.out_of_range,
            "rehomed": report.rehomed,
            "seconds": round(report.seconds, 3),
        },
    )
    if report.total or report.skipped not in ("nothing archived yet", ARCHIVE_OFF):
        console.print(report.summary())
    return 0


def before_start(settings: Settings, console, stop: threading.Event | None = None) -> None:
    """Called by `clickstream run` after the topics exist and before any child starts.

    Archiving on (the default with the embedded broker): the children are told so
    (they see KAFKA_BOOTSTRAP_SERVERS, not the embedded broker, so "auto" would read as
    off there), and `clickstream restore-state` runs to its end in a child process.
    With the embedded broker it runs even when archiving is off: it re-seeds the
    suppression list (stream/privacy/suppressions.py), which must survive a restart.
    """
    if settings.archives_state:
        os.environ[ENV] = "on"  # inherited by the supervisor's children
    elif not settings.embedded_broker:
        return  # a durable Kafka keeps its changelogs and the suppression list
    # (else the embedded broker, archive off: the child re-seeds the suppression list only)
    if settings.embedded_clickhouse and not (settings.data_dir / "clickhouse").exists():
        return  # first start on this data directory: nothing archived
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers}
    code = subprocess.run(
        [sys.executable, "-m", "stream.cli", "restore-state"],
        env=env,
        check=False,
        preexec_fn=die_with_parent(signal.SIGKILL, new_group=False),  # dies with the runner
    ).returncode
    if code == 0:
        return
    if stop is not None and stop.is_set():
        raise SystemExit(0)  # stopped while restoring
    console.print(
        "[red]the processor state could not be restored; not starting (the archive in"
        " ClickHouse is untouched). CLICKSTREAM_STATE_ARCHIVE=off starts without it.[/]"
    )
    raise SystemExit(2 if code == 2 else 1)
