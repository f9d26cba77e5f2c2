"""The processor's batch engine: plain Python between Faust and the pure journey core.

Faust hands over a batch of raw Kafka records (events and control ticks, in
partition order); the engine decodes each state once, applies every record through
`stream.journey`, and returns what to send and what to write back (once per
visitor per batch). No Faust or Kafka calls here, so the same engine runs in tests
and benchmarks without a broker.

Per-partition bookkeeping (event-time watermark, and when each visitor needs a look:
session timeout, lapse, state expiry) is in memory; after a restart it is rebuilt as
events arrive and from a scan of the table on the first tick (`Engine.index_visitor`).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream import topics
from stream.config import Settings
from stream.journey import (
    Outcome,
    StageMachine,
    VisitorState,
    apply,
    decode_state,
    due,
    encode_state,
    tick,
)
from stream.journey.people import Person, decode_person, encode_person, link
from stream.metrics import WindowAccumulator, metric_row_key, settle_ms
from stream.records import InvalidRecord
from stream.sessionize.rules import SessionRules
from stream.telemetry import (
    ACTIVE_SESSIONS,
    EVENTS_LATE,
    EVENTS_PROCESSED,
    OFFSET_GAPS,
    PROCESSING_FAILURES,
    SESSIONS_CLOSED,
    SESSIONS_STARTED,
    STAGE_TRANSITIONS,
    STATES_EXPIRED,
    TRIGGERS,
    VISITORS_IN_STATE,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as the engine needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes
    value: bytes


@dataclass(slots=True)
class BatchResult:
    states: dict[str, bytes] = field(default_factory=dict)  # visitor -> encoded state
    deleted: set[str] = field(default_factory=set)  # visitors whose state expired
    state_partitions: dict[str, int] = field(default_factory=dict)  # visitor -> partition
    windows: dict[int, bytes] = field(default_factory=dict)  # partition -> encoded metrics
    outputs: list[Output] = field(default_factory=list)
    processed: int = 0
    last_received_at: int = 0  # ms, for processing latency


@dataclass(slots=True)
class PartitionClock:
    """Event-time watermark of a partition, and when to look at each of its visitors
    again (a session to time out, a customer to lapse, a state to expire): a heap of
    (watermark, visitor), so a tick touches only the visitors that are due. `pending`
    holds each visitor's live entry; heap entries that disagree with it are stale."""

    max_ts: int = 0
    last_event_wall: float = 0.0
    pending: dict[str, int] = field(default_factory=dict)  # visitor -> next look
    queue: list[tuple[int, str]] = field(default_factory=list)

    def watch(self, visitor: str, at: int) -> None:
        """Look at `visitor` once the watermark reaches `at`, or earlier if already
        planned (a later look is planned again when the earlier one finds nothing)."""
        planned = self.pending.get(visitor)
        if planned is None or at < planned:
            self.pending[visitor] = at
            heapq.heappush(self.queue, (at, visitor))

    def replan(self, visitor: str, at: int) -> None:
        self.pending[visitor] = at
        heapq.heappush(self.queue, (at, visitor))

    def due(self, watermark: int) -> list[str]:
        """Pop the visitors whose look is due at `watermark`."""
        out = []
        queue, pending = self.queue, self.pending
        while queue and queue[0][0] <= watermark:
            at, visitor = heapq.heappop(queue)
            if pending.get(visitor) == at:
                del pending[visitor]
                out.append(visitor)
        return out


class Engine:
    def __init__(self, settings: Settings, machine: StageMachine | None = None) -> None:
        self.settings = settings
        self.rules = SessionRules.from_settings(settings)
        self.machine = machine or StageMachine.load(
            settings.schemas_dir / "journey" / "stages.json"
        )
        self.lapse_ms = settings.lapse_days * 86_400_000
        self.ttl_ms = int(settings.state_ttl_days * 86_400_000)
        self.idle_after = self.rules.timeout_ms + self.rules.lateness_ms
        self.control_topic = settings.topic(topics.CONTROL)
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
        self.clocks: dict[int, PartitionClock] = {}
        self._last_offsets: dict[tuple[str, int], int] = {}
        self.settle_ms = settle_ms(self.rules)

    # --- the batch --------------------------------------------------------
    def run(
        self,
        records: Iterable[Record],
        load: Callable[[str], bytes | None],
        load_windows: Callable[[int], bytes | None] = lambda partition: None,
    ) -> BatchResult:
        result = BatchResult()
        states: dict[str, Any] = {}  # visitor -> decoded state (None = new visitor)
        dirty: set[str] = set()
        self._windows: dict[int, WindowAccumulator] = {}
        self._load_windows = load_windows

        def state_of(visitor: str) -> Any:
            if visitor not in states:
                raw = load(visitor)
                states[visitor] = decode_state(raw) if raw else None
            return states[visitor]

        watermarks: dict[int, int] = {}
        for record in records:
            self._check_contiguous(record)
            try:
                if record.topic == self.control_topic:
                    watermark = self._on_tick(record, state_of, states, dirty, result)
                    watermarks[record.partition] = max(
                        watermarks.get(record.partition, 0), watermark
                    )
                else:
                    self._on_event(record, state_of, states, dirty, result)
            except Exception as exc:  # noqa: BLE001 - one bad record never stops the partition
                self._dead_letter(record, exc, result)

        for visitor in dirty:
            state = states[visitor]
            if state is not None:
                result.states[visitor] = encode_state(state)
            else:
                result.deleted.add(visitor)
        self._close_windows(watermarks, result)
        return result

    def link(self, records: Iterable[Record], load: Callable[[str], bytes | None]) -> BatchResult:
        """A batch of identified visitors' states (from the identities topic): each folded
        into its person, the changed customer records out, one state per person."""
        result = BatchResult()
        people: dict[str, Person | None] = {}
        for record in records:
            self._check_contiguous(record)
            try:
                device = decode_state(record.value)
                user = device.user_id
                if user not in people:
                    raw = load(user)
                    people[user] = decode_person(raw) if raw else None
                person, customer = link(people[user], device, self.machine)
                people[user] = person
                if customer is not None:
                    result.states[user] = b""  # encoded below, once per person
                    result.state_partitions[user] = record.partition
                    out = Output(
                        self.out_topics["customers"], user.encode(), orjson.dumps(customer)
                    )
                    result.outputs.append(out)
            except Exception as exc:  # noqa: BLE001 - one bad record never stops the partition
                self._dead_letter(record, exc, result)
        for user in result.states:
            result.states[user] = encode_person(people[user])
        return result

    def _check_contiguous(self, record: Record) -> None:
        """Offsets of our topics are contiguous (never compacted, no transactions): a jump
        means records were skipped between the broker and this agent. Say so loudly."""
        tp = (record.topic, record.partition)
        last = self._last_offsets.get(tp)
        if last is None:
            log.info("first offset %s[%d] = %d", record.topic, record.partition, record.offset)
        elif record.offset > last + 1:
            OFFSET_GAPS.labels(record.topic).inc()
            log.error(
                "offset gap: %s[%d] jumped from %d to %d",
                record.topic,
                record.partition,
                last,
                record.offset,
            )
        self._last_offsets[tp] = record.offset

    # --- metrics windows ------------------------------------------------------
    def _accumulator(self, partition: int) -> WindowAccumulator:
        acc = self._windows.get(partition)
        if acc is None:
            raw = self._load_windows(partition)
            acc = WindowAccumulator.decode(raw) if raw else WindowAccumulator()
            self._windows[partition] = acc
        return acc

    def _close_windows(self, watermarks: dict[int, int], result: BatchResult) -> None:
        """Emit the windows each touched partition's watermark completed; store the rest."""
        for partition, acc in self._windows.items():
            clock = self.clocks.get(partition)
            watermark = max(watermarks.get(partition, 0), clock.max_ts if clock else 0)
            for row in acc.close(
                watermark, self.rules.lateness_ms, partition, settle_ms=self.settle_ms
            ):
                key = metric_row_key(row)
                row["idempotency_key"] = key
                result.outputs.append(
                    Output(self.out_topics["metrics"], key.encode(), orjson.dumps(row))
                )
            result.windows[partition] = acc.encode()

    def _on_event(self, record, state_of, states, dirty, result: BatchResult) -> None:
        event = orjson.loads(record.value)
        visitor = event["visitor_id"]
        before = state_of(visitor)
        outcome = apply(before, event, record.offset, self.rules, self.machine, record.partition)
        if outcome.state is not None:  # late events still advance the stored offset
            states[visitor] = outcome.state
            dirty.add(visitor)
            result.state_partitions[visitor] = record.partition
        if outcome.late:
            EVENTS_LATE.labels(event.get("source", "")).inc()
        if not outcome.applied:
            return
        self._observe(record.partition, event, before, outcome)
        self._emit(outcome, visitor, result, record.partition)
        result.processed += 1
        result.last_received_at = max(result.last_received_at, int(event.get("received_at") or 0))
        EVENTS_PROCESSED.labels(event.get("source", "")).inc()
        clock = self.clocks.setdefault(record.partition, PartitionClock())
        clock.max_ts = max(clock.max_ts, int(event["ts"]))
        clock.last_event_wall = time.monotonic()
        clock.watch(visitor, int(event["ts"]) + self.idle_after)

    def _on_tick(self, record, state_of, states, dirty, result: BatchResult) -> None:
        message = orjson.loads(record.value)
        watermark = int(message["watermark"])
        self._accumulator(record.partition)  # the tick may complete metric windows
        clock = self.clocks.setdefault(record.partition, PartitionClock())
        for visitor in clock.due(watermark):
            state = state_of(visitor)
            if state is None:
                continue
            outcome = tick(state, watermark, self.rules, self.machine, self.lapse_ms)
            if outcome.state is not None:
                state = states[visitor] = outcome.state
                dirty.add(visitor)
                result.state_partitions[visitor] = record.partition
            self._emit(outcome, visitor, result, record.partition)
            if not state.sessions and watermark - state.last_seen >= self.ttl_ms:
                # Idle for the state TTL: forget the visitor (its last snapshot stays in
                # ClickHouse). Deleted inside stream processing, so it is in the changelog.
                states[visitor] = None
                dirty.add(visitor)
                result.state_partitions[visitor] = record.partition
                STATES_EXPIRED.inc()
                continue
            clock.replan(visitor, max(watermark + 1, self._next_look(state)))
        return watermark

    def _observe(self, partition: int, event: dict, before: Any, outcome: Outcome) -> None:
        """Feed the partition's metric windows with what the journey applied."""
        state = outcome.state
        session = next((s for s in state.sessions if s.id == outcome.session_id), None)
        previous = None
        if before is not None:
            previous = next((s for s in before.sessions if s.id == outcome.session_id), None)
        started = previous is None
        if started:
            SESSIONS_STARTED.labels(event.get("source", "")).inc()
            ACTIVE_SESSIONS.inc()
        cart_created = (
            event.get("event") == "Product Added"
            and session is not None
            and session.cart_touched
            and not (previous is not None and previous.cart_touched)
        )
        self._accumulator(partition).add_event(
            event,
            new_visitor=bool(session.is_new) if session is not None else before is None,
            session_started=started,
            cart_created=cart_created,
        )

    def _emit(self, outcome: Outcome, visitor: str, result: BatchResult, partition: int) -> None:
        key = visitor.encode()
        out = self.out_topics
        acc = self._accumulator(partition)
        for change in outcome.stage_changes:
            STAGE_TRANSITIONS.labels(change["from_stage"] or "none", change["to_stage"]).inc()
            acc.add_stage_change(change)
            result.outputs.append(Output(out["stage_changes"], key, orjson.dumps(change)))
        for session in outcome.sessions:
            if session.get("closed"):
                SESSIONS_CLOSED.labels(session.get("close_reason") or "timeout").inc()
                ACTIVE_SESSIONS.dec()
                acc.add_session_closed(session)
            result.outputs.append(Output(out["sessions"], key, orjson.dumps(session)))
        for trigger in outcome.triggers:
            TRIGGERS.labels(trigger["trigger"]).inc()
            acc.add_trigger(trigger)
            result.outputs.append(Output(out["triggers"], key, orjson.dumps(trigger)))
        if outcome.visitor is not None:
            result.outputs.append(Output(out["visitors"], key, orjson.dumps(outcome.visitor)))
            user = outcome.visitor["user_id"]
            if user and outcome.state is not None:  # to the person, across devices
                result.outputs.append(
                    Output(out["identities"], user.encode(), encode_state(outcome.state))
                )

    def _dead_letter(self, record: Record, exc: Exception, result: BatchResult) -> None:
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
        key = record.key or b""
        result.outputs.append(Output(self.out_topics["invalid"], key, orjson.dumps(invalid)))

    # --- ticks --------------------------------------------------------------
    def _next_look(self, state: VisitorState) -> int:
        """The watermark at which this visitor has work: a session to close, a lapse,
        or its state's expiry."""
        at = due(state, self.rules, self.machine, self.lapse_ms)
        expiry = state.last_seen + self.ttl_ms
        return expiry if at is None else min(at, expiry)

    def index_visitor(self, partition: int, visitor: str, raw: bytes) -> None:
        """Re-register a recovered visitor: it needs a look at its next timeout, lapse
        or expiry."""
        state = decode_state(raw)
        self.clocks.setdefault(partition, PartitionClock()).watch(visitor, self._next_look(state))

    def ticks(
        self,
        partitions: Iterable[int],
        idle_seconds: float,
        caught_up: Callable[[int], bool] = lambda partition: True,
    ) -> list[tuple[int, bytes]]:
        """Tick records to send to the control topic, one per partition that has watch-list
        entries. Event time drives the watermark; only a partition that is caught up (the
        shell knows: nothing left to read) and has had no event for `idle_seconds` lets
        the wall clock move it on, so a replay or a backlog of old events is never cut
        into sessions by the wall clock."""
        now_wall = time.monotonic()
        now_ms = int(time.time() * 1000)
        out = []
        for partition in partitions:
            clock = self.clocks.get(partition)
            VISITORS_IN_STATE.labels(str(partition)).set(len(clock.pending) if clock else 0)
            if clock is None or not clock.pending:
                continue
            watermark = clock.max_ts
            if now_wall - clock.last_event_wall >= idle_seconds and caught_up(partition):
                watermark = max(watermark, now_ms - self.rules.lateness_ms)
            out.append((partition, orjson.dumps({"type": "tick", "watermark": watermark})))
        return out
