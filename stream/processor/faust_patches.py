"""Changes to faust-streaming's behaviour, all here, pinned to the version they were
written for, switchable off with CLICKSTREAM_FAUST_PATCHES=0.

1. True high watermarks for table recovery. Faust asks ListOffsets(LATEST) where a
   changelog ends; the embedded broker (Tansu) answers with the base offset + 1 of the
   newest record batch, not the log end. Recovery then stops early and keeps stale
   state, and the RocksDB store even refuses to start ("persisted offset is higher than
   the highwater"). Fetch responses carry the true high watermark, so we read it from
   a fetch instead. On a real Kafka both answers agree and this costs one fetch per
   recovery.
2. A shorter fetch wait. Faust builds its consumer with fetch_max_wait_ms=1500, fixed;
   whenever a fetch finds less than a full batch the event waits there, and the
   stage-change latency showed it. FETCH_MAX_WAIT_MS bounds that wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)
FAUST_VERSION = "0.15.3"
FETCH_MAX_WAIT_MS = 100
_applied = False


def enabled() -> bool:
    return os.environ.get("CLICKSTREAM_FAUST_PATCHES", "1") not in ("0", "false", "no", "off")


async def true_end_offsets(
    bootstrap_servers: str | list[str], partitions: Iterable[TopicPartition], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """The log end of each partition, from fetch responses (not from ListOffsets)."""
    tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    if not tps:
        return {}
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=16
        * 1024
        * 1024,  # a batch larger than this would hide the watermark
    )
    await probe.start()
    try:
        probe.assign(tps)
        listed = await probe.end_offsets(tps)
        for tp in tps:
            # ListOffsets is never past the end, so start a little before its answer.
            probe.seek(tp, max(0, listed[tp] - 1))
        ends: dict[TopicPartition, int] = {}
        deadline = asyncio.get_running_loop().time() + timeout
        while len(ends) < len(tps) and asyncio.get_running_loop().time() < deadline:
            await probe.getmany(timeout_ms=100, max_records=1)
            for tp in tps:
                high = probe.highwater(tp)
                if high is not None:
                    ends[tp] = max(high, listed[tp])
                    probe.pause(tp)
        for tp in tps:  # a partition that never answered keeps what ListOffsets said
            ends.setdefault(tp, listed[tp])
        return ends
    finally:
        await probe.stop()


def apply() -> None:
    """Install the patches once, if enabled and the Faust version is the pinned one."""
    global _applied
    if _applied or not enabled():
        return
    import faust
    from faust.transport.drivers import aiokafka as driver

    if faust.__version__ != FAUST_VERSION:
        log.warning(
            "faust %s is not %s: patches not applied; table recovery may be short on Tansu",
            faust.__version__,
            FAUST_VERSION,
        )
        return
    original = driver.AIOKafkaConsumerThread._highwaters

    async def _highwaters(self, partitions) -> Mapping:
        if self.consumer.in_transaction:
            return await original(self, partitions)
        consumer = self._ensure_consumer()
        ends = await true_end_offsets(consumer._client._bootstrap_servers, partitions)
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in partitions}

    driver.AIOKafkaConsumerThread._highwaters = _highwaters

    create_worker_consumer = driver.AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self, transport):
        consumer = create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start(), which comes later
        return consumer

    driver.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
    _applied = True
