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
3. Inline delivery. Faust hands every fetched message to its stream through
   `Service.wait_first(callback(message), suspend_flow.wait())`: two tasks and an
   `asyncio.wait` per message, a tenth of the processor's time. When the flow is
   running and flow control is open, the callback cannot block (channels put without
   waiting), so it is awaited directly; otherwise Faust's path runs unchanged. The
   loop is Faust's `Consumer._drain_messages` with only that line changed.
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

    from faust.transport import consumer as consumer_module

    if os.environ.get("CLICKSTREAM_FAUST_INLINE", "1") != "0":  # for A/B measurements
        consumer_module.Consumer._drain_messages = _drain_messages
    _applied = True


async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - Faust's loop
    """faust 0.15.3's Consumer._drain_messages, delivering inline when it cannot block."""
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspended = self.suspend_flow.is_set
    flow_open = self.app.flow_control.is_active
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if not suspended() and flow_open():
                            await callback(message)  # the change: no tasks per message
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)
