"""The processor's batch engine: plain Python between Faust and the pure journey core.

Faust hands over a batch of raw Kafka records of the events topic (events, and tick
records the processor itself writes into each partition); the engine applies each
through `stream.journey` and `stream.metrics`, and returns what to publish and what
to write back (once per key per batch). No Faust or Kafka calls here, so the same
engine runs in tests and benchmarks without a broker.

Time (README, "Journeys"): each partition has a CLOCK, the largest arrival time in its
log so far: events' `received_at` (the collector's clock) and ticks' `now` (the
processor's wall clock, written into the partition's log, so its order against the
events is the log's). Client time never moves it. On a tick the engine closes the
sessions of visitors not heard from for timeout + lateness on that clock, lapses
buyers, expires idle state and publishes the metric increments of the partition:
everything that depends on time is decided at a record of the log, so the same log
gives the same outputs whatever the batches, crashes or workers.

State, all small records (a bound per record, whatever the traffic):
- table "visitors": one journey state per visitor (key: visitor id);
- table "windows": the pending metric increments of each row (key: partition, window,
  key) and one clock record per partition.
In memory, per partition and rebuilt from those tables when the partition is assigned
(`index`): the visitors' look-up schedule and the set of pending metric rows.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from stream import topics
from stream.config import Settings
from stream.journey import Outcome, StageMachine, VisitorState, apply, decode_state, due, tick
from stream.journey.people import (
    Person,
    decode_person,
    encode_person,
    forget,
    gone_record,
    link,
)
from stream.journey.state import encode_state, store_state
from stream.metrics import windows
from stream.metrics.observe import observe
from stream.metrics.windows import Delta, MetricRow, PartitionRecord
from stream.processor.schedule import Schedule
from stream.records import EVENTS, EventRecord, InvalidRecord
from stream.sessionize.rules import SessionRules
from stream.telemetry import (
    ACTIVE_SESSIONS,
    EVENTS_LATE,
    EVENTS_PROCESSED,
    PROCESSING_FAILURES,
    SESSIONS_CLOSED,
    SESSIONS_STARTED,
    STAGE_TRANSITIONS,
    STATES_EXPIRED,
    TRIGGERS,
    TRIGGERS_WITHHELD,
    VISITORS_IN_STATE,
)

log = logging.getLogger(__name__)

TICK_KEY = topics.TICK_KEY
MAX_STATE_BYTES = 512 * 1024  # no state record can be larger (test_state_bounds): half of
# Kafka's default 1 MiB record limit, whatever a visitor sends (a typical one is ~1 KB)


def tick_value(now_ms: int) -> bytes:
    return orjson.dumps({"type": "tick", "now": now_ms})


def is_tick(key: bytes | None) -> bool:
    return key == TICK_KEY


class Consumed(Protocol):
    """What the engine reads of a consumed record: a Record below, an aiokafka
    ConsumerRecord or a Faust Message (a Protocol: compiled code checks no class)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as the engine needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone


@dataclass(slots=True, init=False, unsafe_hash=True)
class Output:
    # Not frozen, its __init__ written out: compiled, a dataclass's generated __init__
    # stays interpreted Python (and a frozen one's sets each field through
    # object.__setattr__); several are made per event. Nothing changes one.
    topic: str
    key: bytes
    value: bytes

    def __init__(self, topic: str, key: bytes, value: bytes) -> None:
        self.topic = topic
        self.key = key
        self.value = value


@dataclass(slots=True)
class BatchResult:
    # key -> (partition, value); value None: delete (a tombstone in the changelog)
    states: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    rows: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    processed: int = 0
    last_received_at: int = 0  # ms, for processing latency


@dataclass(slots=True)
class Partition:
    """What the engine keeps in memory of one assigned partition (derived from state)."""

    schedule: Schedule = field(default_factory=Schedule)
    pending: set[bytes] = field(default_factory=set)  # metric rows not yet published


class Engine:
    def __init__(self, settings: Settings, machine: StageMachine | None = None) -> None:
        self.settings = settings
        self.rules = SessionRules.from_settings(settings)
        self.machine = machine or StageMachine.load(
            settings.schemas_dir / "journey" / "stages.json"
        )
        self.lapse_ms = settings.lapse_days * 86_400_000
        self.ttl_ms = int(settings.state_ttl_days * 86_400_000)
        self.out_topics = {
            "stage_changes": settings.topic(topics.STAGE_CHANGES),
            "sessions": settings.topic(topics.SESSIONS),
            "triggers": settings.topic(topics.TRIGGERS),
            "visitors": settings.topic(topics.VISITORS),
            "metrics": settings.topic(topics.METRICS),
            "identities": settings.topic(topics.IDENTITIES),
            "customers": settings.topic(topics.CUSTOMERS),
            "invalid": settings.topic(topics.INVALID),
        }
        self.partitions: dict[int, Partition] = {}
        self.clocks: dict[int, int] = {}  # partition -> clock, as of the last batch

    # --- partition lifecycle -------------------------------------------------
    def index(self, partition: int, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Take a newly assigned partition: rebuild its schedule and pending rows from
        its recovered state (`items`: every key and value of both tables for it)."""
        part = self.partitions[partition] = Partition()
        for key, raw in items:
            if raw is None:
                continue
            if key.startswith(b"["):  # a metric row
                part.pending.add(key)
            elif not windows.is_partition_key(key):
                part.schedule.plan(key, self._next_look(decode_state(raw)))

    def revoke(self, partition: int) -> None:
        self.partitions.pop(partition, None)
        self.clocks.pop(partition, None)

    def indexed(self, partition: int) -> bool:
        return partition in self.partitions

    # --- the batch --------------------------------------------------------
    def run(
        self,
        records: Iterable[Consumed],
        load: Callable[[bytes], bytes | None],
        load_row: Callable[[bytes], bytes | None],
        scan: Callable[[int], Iterable[tuple[bytes, bytes | None]]],
    ) -> BatchResult:
        """Apply a batch. `load` reads a visitor's stored state, `load_row` a row of the
        windows table (both as of before this batch), `scan(partition)` every key and
        value of both tables for a partition (read once, when first seen)."""
        batch = _Batch(self, load, load_row)
        for record in records:
            if record.partition not in self.partitions:
                self.index(record.partition, scan(record.partition))
            try:
                if is_tick(record.key):
                    batch.on_tick(record)
                else:
                    batch.on_event(record)
            except Exception as exc:  # noqa: BLE001 - one bad record never stops the partition
                batch.dead_letter(record, exc)
        return batch.finish()

    def link(self, records: Iterable[Consumed], load: Callable[[str], bytes | None]) -> BatchResult:
        """A batch of identified visitors' states (from the identities topic): each folded
        into its person, the changed customer records out, one state per person."""
        result = BatchResult()
        people: dict[str, Person | None] = {}
        changed: dict[str, int] = {}
        for record in records:
            try:
                user = (record.key or b"").decode()
                if user not in people:
                    raw = load(user)
                    people[user] = decode_person(raw) if raw else None
                if record.value.startswith(b"{"):  # a device whose state expired
                    gone = orjson.loads(record.value)["gone"]
                    person, customer = forget(people[user], gone, self.machine)
                    changed[user] = record.partition
                else:
                    device = decode_state(record.value)
                    if device.user_id != user:
                        raise ValueError("a device state under another user's key")
                    person, customer = link(people[user], device, self.machine)
                people[user] = person
                if customer is not None:
                    changed[user] = record.partition
                    out = Output(
                        self.out_topics["customers"], user.encode(), orjson.dumps(customer)
                    )
                    result.outputs.append(out)
            except Exception as exc:  # noqa: BLE001 - one bad record never stops the partition
                result.outputs.append(self._dead_letter(record, exc))
        for user, partition in changed.items():
            person = people[user]
            value = None if person is None else encode_person(person)
            result.states[user.encode()] = (partition, value)
        return result

    # --- helpers used by _Batch --------------------------------------------------
    def _next_look(self, state: VisitorState) -> int:
        """The partition clock at which this visitor has work: a session to close, a
        lapse, or its state's expiry."""
        at = due(state, self.rules, self.machine, self.lapse_ms)
        expiry = state.last_arrival + self.ttl_ms
        return expiry if at is None else min(at, expiry)

    def _dead_letter(self, record: Consumed, exc: Exception) -> Output:
        reason = f"processor: {type(exc).__name__}: {exc}"[:500]
        PROCESSING_FAILURES.labels(type(exc).__name__).inc()
        invalid = InvalidRecord(
            received_at=int(time.time() * 1000),
            source="",
            reasons=[reason],
            payload=record.value.decode("utf-8", "replace"),
            message_id=f"processor-{record.topic}-{record.partition}-{record.offset}",
            stage="processor",
        )
        return Output(self.out_topics["invalid"], record.key or b"", orjson.dumps(invalid))


class _Batch:
    """One batch's working set: decoded states and rows, read once, written once."""

    def __init__(self, engine: Engine, load, load_row) -> None:
        self.engine = engine
        self.load, self.load_row = load, load_row
        self.states: dict[str, VisitorState | None] = {}
        self.dirty: dict[str, int] = {}  # visitor -> partition
        self.rows: dict[bytes, MetricRow | None] = {}
        self.dirty_rows: dict[bytes, int] = {}
        self.clocks: dict[int, PartitionRecord] = {}
        self.result = BatchResult()
        # What each visitor's state went through in this batch (events and tick clocks),
        # to rebuild it when a step fails half-way: states change in place.
        # Events are kept as their bytes: a decoded event kept to the batch's end was
        # scanned by every garbage collection until then (a fifth of the engine's time).
        self.steps: dict[str, list[tuple[int, int, bytes | None]]] = {}
        # Counted per source, into Prometheus once per batch (a label look-up per event
        # was a tenth of the engine's time).
        # Keyed by the event's source as it came (Any: a record that breaks the contract
        # must not fail the batch's end, where compiled code would check a `str`).
        self.processed: Counter[Any] = Counter()
        self.counted: Counter[tuple] = Counter()  # (metric, *labels) -> n
        self.started: Counter[Any] = Counter()
        # Visitors whose look must be planned again (visitor -> partition): planned once
        # per batch, and before any tick reads the schedule, instead of once per event.
        self.replan: dict[str, int] = {}
        # Each visitor's table key, one object: the store and the schedule share it (a
        # second copy was 56 B per visitor in state). The schedule's own key wins.
        self.keys: dict[str, bytes] = {}

    # --- state access ---------------------------------------------------------
    def key_of(self, visitor: str) -> bytes:
        key = self.keys.get(visitor)
        if key is None:
            key = self.keys[visitor] = visitor.encode()
        return key

    def state_of(self, visitor: str) -> VisitorState | None:
        if visitor not in self.states:
            raw = self.load(self.key_of(visitor))
            self.states[visitor] = decode_state(raw) if raw else None
        return self.states[visitor]

    def put_state(self, visitor: str, partition: int, state: VisitorState | None) -> None:
        self.states[visitor] = state
        self.dirty[visitor] = partition
        self.replan[visitor] = partition

    def plan_looks(self) -> None:
        engine = self.engine
        for visitor, partition in self.replan.items():
            state = self.states[visitor]
            look = None if state is None else engine._next_look(state)
            engine.partitions[partition].schedule.plan(self.key_of(visitor), look)
        self.replan.clear()

    def clock(self, partition: int) -> PartitionRecord:
        got = self.clocks.get(partition)
        if got is None:
            raw = self.load_row(windows.partition_key(partition))
            got = self.clocks[partition] = PartitionRecord.decode(raw) if raw else PartitionRecord()
        return got

    def fold(self, partition: int, deltas: list[Delta]) -> None:
        pending = self.engine.partitions[partition].pending
        for delta in deltas:
            key = windows.row_key(partition, delta.window, delta.dims)
            row = self.rows.get(key)
            if row is None:
                raw = self.load_row(key) if key not in self.rows else None
                row = self.rows[key] = MetricRow.decode(raw) if raw else MetricRow()
            row.fold(delta)
            self.dirty_rows[key] = partition
            pending.add(key)

    # --- records --------------------------------------------------------------
    def on_event(self, record: Consumed) -> None:
        event = EVENTS.decode(record.value)  # checks the contract (stream/records.py)
        visitor = event["visitor_id"]
        partition = record.partition
        clock = self.clock(partition)
        received = int(event.get("received_at") or 0)
        clock.clock = max(clock.clock, received)
        try:
            outcome, deltas = self._apply(self.state_of(visitor), record.offset, partition, event)
        except Exception:
            self._rebuild(visitor)
            raise
        if outcome.state is None:
            return  # a replayed record: already applied
        self.steps.setdefault(visitor, []).append((record.offset, partition, record.value))
        self.put_state(visitor, partition, outcome.state)
        if outcome.late:
            EVENTS_LATE.labels(event.get("source", "")).inc()
            self.result.outputs.append(self._left_out(record, event, outcome.state))
            return
        if outcome.started:
            self.started[event.get("source", "")] += 1
        self.emit(outcome, visitor)
        self.fold(partition, deltas)
        self.result.processed += 1
        self.result.last_received_at = max(self.result.last_received_at, received)
        self.processed[event.get("source", "")] += 1

    def on_tick(self, record: Consumed) -> None:
        now = int(orjson.loads(record.value)["now"])
        partition = record.partition
        clock = self.clock(partition)
        if record.offset <= clock.tick_offset:
            return  # a replayed tick: its closes and increments are already out
        clock.tick_offset = record.offset
        clock.clock = max(clock.clock, now)
        engine = self.engine
        part = engine.partitions[partition]
        self.plan_looks()
        # Whoever the schedule names and is really due (a look can be planned early),
        # in the order of the looks the states call for: the same after a restart.
        due_now = []
        for key in part.schedule.due(clock.clock):
            visitor = key.decode()
            self.keys[visitor] = key
            state = self.state_of(visitor)
            if state is None:
                continue
            look = engine._next_look(state)
            if look <= clock.clock:
                due_now.append((look, visitor))
            else:
                part.schedule.plan(key, look)
        for _, visitor in sorted(due_now):
            try:
                outcome, deltas, state = self._tick(self.state_of(visitor), clock.clock)  # type: ignore[arg-type]
            except Exception:
                self._rebuild(visitor)
                raise
            self.steps.setdefault(visitor, []).append((clock.clock, partition, None))
            if outcome.state is not None:
                self.emit(outcome, visitor)
                self.fold(partition, deltas)
            if state is None:
                # Idle for the state TTL: forgotten (its last snapshot stays in ClickHouse).
                # Deleted inside stream processing: it is in the changelog.
                STATES_EXPIRED.inc()
                if outcome.state.user_id:  # type: ignore[union-attr]  # its person forgets the device too
                    self.result.outputs.append(
                        Output(
                            engine.out_topics["identities"],
                            outcome.state.user_id.encode(),  # type: ignore[union-attr]
                            gone_record(visitor),
                        )
                    )
            self.put_state(visitor, partition, state)
        self.plan_looks()
        self.publish(partition, clock)
        VISITORS_IN_STATE.labels(str(partition)).set(len(part.schedule))

    # --- one visitor's steps (in place) ------------------------------------------
    def _apply(
        self, state: VisitorState | None, offset: int, partition: int, event: Any
    ) -> tuple[Outcome, list[Delta]]:
        engine = self.engine
        orders_before = 0 if state is None else state.orders
        outcome = apply(
            state, event, offset, engine.rules, engine.machine, partition, in_place=True
        )
        return outcome, ([] if outcome.state is None else observe(outcome, event, orders_before))

    def _tick(
        self, state: VisitorState, clock_ms: int
    ) -> tuple[Outcome, list[Delta], VisitorState | None]:
        """tick() and its deltas, and the state after it: None once idle for the TTL."""
        engine = self.engine
        outcome = tick(
            state, clock_ms, engine.rules, engine.machine, engine.lapse_ms, in_place=True
        )
        deltas = [] if outcome.state is None else observe(outcome)
        after = outcome.state or state
        if not after.sessions and clock_ms - after.last_arrival >= engine.ttl_ms:
            outcome.state = after  # expiry changes the stored state even without work
            return outcome, deltas, None
        return outcome, deltas, after

    def _rebuild(self, visitor: str) -> None:
        """A step failed half-way through a state it changes in place: the state as
        stored, with this batch's steps before the failed one applied again (their
        outputs are already out)."""
        raw = self.load(self.key_of(visitor))
        state = decode_state(raw) if raw else None
        for at, partition, value in self.steps.get(visitor, ()):
            if value is not None:
                outcome, _ = self._apply(state, at, partition, EVENTS.decode(value))
                state = outcome.state or state
            elif state is not None:
                state = self._tick(state, at)[2]
        self.states[visitor] = state

    def publish(self, partition: int, clock: PartitionRecord) -> None:
        """Every metric row changed since the last tick, once, numbered; then forgotten."""
        pending = self.engine.partitions[partition].pending
        if not pending:
            return
        clock.published += 1
        topic = self.engine.out_topics["metrics"]
        for key in sorted(pending):
            row = self.rows.get(key)
            if row is None and key not in self.rows:
                raw = self.load_row(key)
                row = MetricRow.decode(raw) if raw else None
            if row is not None:
                _, window, dims = windows.parse_row_key(key)
                out = row.as_output(partition, window, dims, clock.published)
                self.result.outputs.append(
                    Output(topic, out["idempotency_key"].encode(), orjson.dumps(out))
                )
            self.rows[key] = None
            self.dirty_rows[key] = partition
        pending.clear()

    # --- outputs ----------------------------------------------------------------
    def emit(self, outcome: Outcome, visitor: str) -> None:
        key = visitor.encode()
        out = self.engine.out_topics
        outputs = self.result.outputs
        for change in outcome.stage_changes:
            self.counted[
                (STAGE_TRANSITIONS, change["from_stage"] or "none", change["to_stage"])
            ] += 1
            outputs.append(Output(out["stage_changes"], key, orjson.dumps(change)))
        for change in outcome.stage_amends:  # a correction, not a transition more
            outputs.append(Output(out["stage_changes"], key, orjson.dumps(change)))
        for session in outcome.sessions:
            if session.get("closed"):
                self.counted[(SESSIONS_CLOSED, session.get("close_reason") or "timeout")] += 1
            outputs.append(Output(out["sessions"], key, orjson.dumps(session)))
        for trigger in outcome.triggers:
            self.counted[(TRIGGERS, trigger["trigger"])] += 1
            outputs.append(Output(out["triggers"], key, orjson.dumps(trigger)))
        for trigger in outcome.withheld:  # no marketing consent (journey/consent.py)
            self.counted[(TRIGGERS_WITHHELD, trigger["trigger"])] += 1
        if outcome.visitor is not None:
            outputs.append(Output(out["visitors"], key, orjson.dumps(outcome.visitor)))
            user = outcome.visitor["user_id"]
            if user and outcome.state is not None:  # to the person, across devices
                outputs.append(
                    Output(out["identities"], user.encode(), encode_state(outcome.state))
                )

    def _left_out(self, record: Consumed, event: EventRecord, state: VisitorState) -> Output:
        """An event older than what the visitor's state still holds: kept raw (the
        events table has it), left out of the journey, and said so in invalid_events."""
        invalid = InvalidRecord(
            received_at=int(event.get("received_at") or 0),
            source=event.get("source") or "",
            reasons=[
                f"late: event time {event['ts']} is before {state.floor}, the end of a"
                " session this visitor's state no longer holds; kept in events, left out"
                " of sessions, journeys and metrics"
            ],
            payload=record.value.decode("utf-8", "replace"),
            message_id=f"late-{event.get('message_id') or record.offset}",
            stage="late",
        )
        return Output(self.engine.out_topics["invalid"], record.key or b"", orjson.dumps(invalid))

    def dead_letter(self, record: Consumed, exc: Exception) -> None:
        self.result.outputs.append(self.engine._dead_letter(record, exc))

    def finish(self) -> BatchResult:
        result = self.result
        self.plan_looks()
        for source, n in self.processed.items():
            EVENTS_PROCESSED.labels(source).inc(n)
        for source, n in self.started.items():
            SESSIONS_STARTED.labels(source).inc(n)
            ACTIVE_SESSIONS.inc(n)
        for (metric, *labels), n in self.counted.items():
            metric.labels(*labels).inc(n)
            if metric is SESSIONS_CLOSED:
                ACTIVE_SESSIONS.dec(n)
        for visitor, partition in self.dirty.items():
            state = self.states[visitor]
            value = None if state is None else store_state(state)
            if value is not None and len(value) > MAX_STATE_BYTES:  # the bounds failed us
                log.error("visitor state of %d B exceeds %d B", len(value), MAX_STATE_BYTES)
            result.states[self.key_of(visitor)] = (partition, value)
        for key, partition in self.dirty_rows.items():
            row = self.rows.get(key)
            result.rows[key] = (partition, None if row is None else row.encode())
        for partition, clock in self.clocks.items():
            result.rows[windows.partition_key(partition)] = (partition, clock.encode())
            self.engine.clocks[partition] = clock.clock
        return result
