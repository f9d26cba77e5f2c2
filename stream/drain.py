"""The drain at a clean stop: with the collector stopped, wait (bounded) until the
processor's and the sink's consumer groups have committed everything on their topics.

The embedded broker keeps its log in memory, so what is not yet processed and stored
when it stops is lost. `clickstream run` therefore stops intake first, then calls
`drain()`, then stops the processor, the sink and the broker.

Two broker facts shape the measurement (see the notes in faust-on-tansu.md):
- ListOffsets (LATEST) answers the base offset + 1 of the newest record batch, not the
  log end. The end is taken from fetch responses' high watermark instead: a consumer
  without a group, assigned every partition, reading from the end on.
- `list_consumer_group_offsets(group)` without partitions fails; it is always called
  with explicit partitions.

The processor keeps writing small tick records into the events topic while it runs
(the control topic in older layouts), so that end moves while we watch: there a commit
up to the end measured one round earlier is enough (`Progress`, the pure part,
unit-tested).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream import topics
from stream.config import Settings

log = logging.getLogger(__name__)

# What the processor consumes (stream/processor/app.py): the events, and the identities
# its second agent folds into customers.
PROCESSOR_SOURCES = (topics.EVENTS, topics.IDENTITIES)
# Where the processor writes its ticks (every 2 s per partition, as long as it runs).
TICKED = (topics.EVENTS,)
ROUND_S = 1.0


# --- the pure part --------------------------------------------------------------------


def lag(ends: Mapping, committed: Mapping) -> dict:
    """Records not yet committed per partition: end - commit (a missing or negative
    commit counts as 0, nothing committed), never below 0."""
    out = {}
    for tp, end in ends.items():
        done = committed.get(tp)
        if done is None or done < 0:
            done = 0
        out[tp] = max(0, end - done)
    return out


class Progress:
    """Decides, one observation (round) at a time, when the drain is complete.

    Each round reads the groups' commits first, then the ends, so an output the
    processor produced for a committed record (outputs are acknowledged before the
    commit) is inside the ends read in the same round.

    - The processor is caught up in a round when its commits reach the ends of that
      round, except on `moving` topics (where the processor writes ticks as long as it
      runs): there the end of the round before is enough; every accepted event is
      below it (the collector stopped before the first round).
    - The sink must then reach the ends of its topics as read in the FIRST round the
      processor was caught up: they hold every output of every accepted event; later
      outputs come from ticks written after the stop was asked.
    """

    def __init__(self, processor: str | None, sink: str | None, moving: Iterable[str] = ()):
        self.processor = processor
        self.sink = sink
        self.moving = set(moving)
        self.previous: dict | None = None
        self.sink_target: dict | None = None
        self.left: dict[str, int] = {}

    def update(self, commits: Mapping[str, Mapping], ends: Mapping) -> bool:
        """Feed one round (group -> partition -> commit; partition -> end); True when
        drained."""
        self.left = {
            group: sum(lag({tp: ends[tp] for tp in done if tp in ends}, done).values())
            for group, done in commits.items()
        }
        processor_done = True
        if self.processor is not None:
            done = commits.get(self.processor, {})
            target = {}
            for tp in done:
                end = ends.get(tp, 0)
                if self.previous is not None and tp.topic in self.moving and tp in self.previous:
                    end = min(end, self.previous[tp])
                target[tp] = end
            processor_done = not any(lag(target, done).values())
        self.previous = dict(ends)
        if not processor_done:
            return False
        if self.sink is None:
            return True
        done = commits.get(self.sink, {})
        if self.sink_target is None:
            self.sink_target = {tp: ends.get(tp, 0) for tp in done}
        return not any(lag(self.sink_target, done).values())


# --- the broker part ------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    group_id: str
    topics: tuple[str, ...]
    moving: tuple[str, ...] = ()  # topics the group's own process writes to while it runs


def groups_for(settings: Settings, roles: tuple[str, ...]) -> list[Group]:
    """The consumer groups of the roles this runner runs."""
    out: list[Group] = []
    if "processor" in roles:
        out.append(
            Group(
                settings.topic(topics.PROCESSOR_APP_ID),
                tuple(settings.topic(t) for t in PROCESSOR_SOURCES),
                moving=tuple(settings.topic(t) for t in PROCESSOR_SOURCES if t in TICKED),
            )
        )
    if "sink" in roles:
        from stream.sink.rows import routes

        out.append(Group(topics.SINK_GROUP, tuple(routes(settings))))
    return out


class Watcher:
    """Ends from fetches (high watermarks) and the groups' commits."""

    def __init__(self, settings: Settings, groups: list[Group]):
        self.settings = settings
        self.groups = groups
        self.consumer: AIOKafkaConsumer | None = None
        self.admin: AIOKafkaAdminClient | None = None
        self.partitions: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        servers = self.settings.bootstrap_servers
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=2 * 1024 * 1024,  # a whole record batch
            request_timeout_ms=5000,
        )
        await self.consumer.start()
        self.admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000)
        await self.admin.start()
        wanted = {t for g in self.groups for t in g.topics}
        await self.consumer.topics()  # metadata of every topic
        for topic in wanted:
            parts = self.consumer.partitions_for_topic(topic) or range(self.settings.partitions)
            self.partitions[topic] = [TopicPartition(topic, p) for p in sorted(parts)]
        every = [tp for tps in self.partitions.values() for tp in tps]
        self.consumer.assign(every)
        await self.consumer.seek_to_end(*every)  # near the end; the fetches tell the rest

    async def close(self) -> None:
        for client in (self.consumer, self.admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop() if client is self.consumer else await client.close()

    async def ends(self, timeout: float = 3.0) -> dict[TopicPartition, int]:
        """The high watermark of every partition from a fetch answered after now."""
        assert self.consumer is not None
        consumer = self.consumer
        asked = time.time() * 1000
        tps = list(consumer.assignment())
        deadline = time.monotonic() + timeout
        while True:
            await consumer.getmany(timeout_ms=100, max_records=100_000)  # read and drop
            fresh = [tp for tp in tps if (consumer.last_poll_timestamp(tp) or 0) >= asked]
            if len(fresh) == len(tps) or time.monotonic() > deadline:
                break
        ends = {}
        for tp in tps:
            high = consumer.highwater(tp)
            if high is not None:
                ends[tp] = high
        if len(ends) < len(tps):
            raise TimeoutError(f"no fetch answer for {len(tps) - len(ends)} partition(s)")
        return ends

    async def commits(self) -> dict[str, dict[TopicPartition, int | None]]:
        assert self.admin is not None
        out: dict[str, dict[TopicPartition, int | None]] = {}
        for group in self.groups:
            tps = [tp for topic in group.topics for tp in self.partitions[topic]]
            answer = await self.admin.list_consumer_group_offsets(group.group_id, partitions=tps)
            out[group.group_id] = {
                tp: (meta.offset if meta is not None and meta.offset >= 0 else None)
                for tp, meta in ((tp, answer.get(tp)) for tp in tps)
            }
        return out


async def drain(
    settings: Settings,
    groups: list[Group],
    budget_s: float,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    round_s: float = ROUND_S,
) -> str:
    """Wait until every group has committed up to the end of its topics, at most
    `budget_s`, logging what is left every round. Returns "drained", "timeout",
    "interrupted" (`should_stop()` turned true) or "failed" (the broker did not answer)."""
    if not groups or budget_s <= 0:
        return "drained"
    started = time.monotonic()
    deadline = started + budget_s
    watcher = Watcher(settings, groups)
    ids = {g.group_id for g in groups}
    processor = settings.topic(topics.PROCESSOR_APP_ID)
    processor = processor if processor in ids else None
    sink = topics.SINK_GROUP if topics.SINK_GROUP in ids else None
    progress = Progress(processor, sink, {t for g in groups for t in g.moving})
    try:
        await asyncio.wait_for(watcher.start(), max(1.0, deadline - time.monotonic()))
        while True:
            left_s = max(1.0, deadline - time.monotonic())
            commits = await asyncio.wait_for(watcher.commits(), left_s)  # commits first
            ends = await asyncio.wait_for(watcher.ends(), left_s)
            if progress.update(commits, ends):
                log.info(
                    "drained: every accepted event is processed and stored (%.1fs)",
                    time.monotonic() - started,
                )
                return "drained"
            if time.monotonic() >= deadline:
                log.warning(
                    "drain: gave up after %.0fs (CLICKSTREAM_STOP_DRAIN_SECONDS) with %s records"
                    " left; they are lost with the embedded broker",
                    budget_s,
                    _say(progress.left),
                )
                return "timeout"
            log.info("draining: %s records left", _say(progress.left))
            pause_until = time.monotonic() + round_s
            while time.monotonic() < min(pause_until, deadline):
                if should_stop():
                    log.warning("drain skipped: %s records left", _say(progress.left))
                    return "interrupted"
                await asyncio.sleep(0.1)
    except Exception as exc:  # noqa: BLE001 - a drain never blocks a stop
        log.warning("drain failed (%r); stopping without it", exc)
        return "failed"
    finally:
        await watcher.close()


def _say(left: dict[str, int]) -> str:
    return ", ".join(f"{group} {count}" for group, count in left.items())
