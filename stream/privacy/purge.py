"""The processor's privacy hook, around the engine's two computations (app.py wires it).

Journey step (events): records of a suppressed id are dropped (counted); when new
suppressions arrived, the visitor states naming a suppressed id are deleted (a
tombstone in the changelog, the store entry removed) and their person is told the
device is gone. The scan runs on two consecutive batches: a state still in flight
when the first ran (computed before the suppression arrived) is stored by the second.
Then the erasure is acknowledged for every partition this worker owns.

People step (identities): records of a suppressed user, a tombstone (an erasure of
that user) or a device state of a suppressed visitor are not linked; the person is
deleted for the first two; an erasure's own records (tombstone, "gone") are
acknowledged once applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import orjson

from stream import partitioning, topics
from stream.config import Settings
from stream.journey.people import gone_record
from stream.privacy.rows import event_ids, state_fields, state_ids
from stream.privacy.suppressions import Suppression, SuppressionList
from stream.processor.engine import BatchResult, Output, Record
from stream.telemetry import EVENTS_SUPPRESSED

log = logging.getLogger(__name__)

PASSES = 2

Load = Callable[[bytes], bytes | None]


class Purge:
    def __init__(self, settings: Settings, suppressions: SuppressionList):
        self.settings = settings
        self.matcher = suppressions.matcher
        self.acks = settings.topic(topics.ERASURE_ACKS)
        self.identities = settings.topic(topics.IDENTITIES)
        self.pending: list[list] = []  # [Suppression, passes done, acknowledge?]
        # A person's tombstone can come before this process has read its suppression
        # (two topics, two consumers): its acknowledgement then waits for the suppression.
        self.tombstoned: set[str] = set()  # hashes of users tombstoned, erasure unknown
        self.late_acks: list[Output] = []
        self.suppressions = suppressions
        suppressions.listeners.append(self._arrived)

    def _arrived(self, suppression: Suppression) -> None:
        # What the list held at start is purged too (state restored from before an
        # erasure the processor missed), but only erasures arriving live, or published
        # again by an erasure resumed after a restart (`again`), are acknowledged:
        # nobody waits for the others.
        acknowledge = self.suppressions.ready.is_set() or suppression.again
        self.pending.append([suppression, 0, acknowledge])
        if suppression.hash in self.tombstoned:
            self.tombstoned.discard(suppression.hash)
            ack = self._ack(suppression.erasure_id, "people", hash=suppression.hash)
            self.late_acks.append(ack)

    # --- journey ------------------------------------------------------------------
    def journey(
        self,
        records: list[Record],
        load: Load,
        run: Callable[[list[Record], Load], BatchResult],
        items: Callable[[], Iterable[tuple[bytes, bytes | None]]],
        owned: Callable[[], set[int]],
    ) -> BatchResult:
        suppressed = self.matcher.suppressed
        doomed: dict[bytes, str] = {}  # visitor key -> its user id
        if self.pending:
            for key, raw in list(items()):
                if raw is None:
                    continue
                try:
                    ids = state_fields(raw)
                except Exception:  # noqa: BLE001 - judged by its key alone
                    ids = ("", "", "")
                if suppressed(key.decode("utf-8", "replace")) or any(map(suppressed, ids)):
                    doomed[key] = ids[2]
        if self.matcher.hashes:
            kept = []
            for record in records:
                if record.key != topics.TICK_KEY and any(
                    map(suppressed, event_ids(record.key, record.value))
                ):
                    EVENTS_SUPPRESSED.labels("processor", "").inc()
                    continue
                kept.append(record)
            records = kept
        if doomed:
            inner = load

            def load(key: bytes) -> bytes | None:
                return None if key in doomed else inner(key)

        result = run(records, load)
        partitions = self.settings.partitions
        for key, user in doomed.items():
            result.states[key] = (partitioning.partition_of(key, partitions), None)
            if user:  # the person forgets the device (as on expiry)
                gone = gone_record(key.decode("utf-8", "replace"))
                result.outputs.append(Output(self.identities, user.encode(), gone))
        if doomed:
            log.info("erasure: deleted %d visitor state(s)", len(doomed))
        if self.pending:
            for item in self.pending:
                item[1] += 1
            done = {s.erasure_id for s, n, ack in self.pending if n >= PASSES and ack}
            self.pending = [item for item in self.pending if item[1] < PASSES]
            mine = sorted(owned())
            for erasure_id in sorted(done):
                result.outputs.append(self._ack(erasure_id, "journey", partitions=mine))
        self._flush_late_acks(result)
        return result

    # --- people -------------------------------------------------------------------
    def people(
        self,
        records: list[Record],
        load: Callable[[str], bytes | None],
        link: Callable[[list[Record], Callable[[str], bytes | None]], BatchResult],
    ) -> BatchResult:
        suppressed = self.matcher.suppressed
        deleted: dict[str, int] = {}
        acks: list[Output] = []
        kept = []
        for record in records:
            user = (record.key or b"").decode("utf-8", "replace")
            if record.value is None:  # an erasure of this user: the person goes
                deleted[user] = record.partition
                ack = self._ack_for(user)
                if ack is None:
                    self.tombstoned.add(self.matcher.hash(user))
                acks.append(ack)
                continue
            if suppressed(user):
                deleted[user] = record.partition
                continue
            try:
                if record.value.startswith(b"{"):
                    gone = str(orjson.loads(record.value).get("gone", ""))
                    if suppressed(gone):
                        acks.append(self._ack_for(gone))
                elif any(map(suppressed, state_ids(record.value))):
                    continue  # a device erased since: never linked again
            except Exception:  # noqa: BLE001 - the engine dead-letters it
                pass
            kept.append(record)
        if deleted:
            inner = load

            def load(user: str) -> bytes | None:
                return None if user in deleted else inner(user)

        result = link(kept, load)
        for user, partition in deleted.items():
            result.states[user.encode()] = (partition, None)
        result.outputs.extend(a for a in acks if a is not None)
        self._flush_late_acks(result)
        return result

    def _flush_late_acks(self, result: BatchResult) -> None:
        if self.late_acks:
            result.outputs.extend(self.late_acks)
            self.late_acks = []

    # --- acknowledgements ------------------------------------------------------------
    def _ack_for(self, subject_id: str) -> Output | None:
        digest = self.matcher.hash(subject_id)
        erasure_id = self.matcher.hashes.get(digest)
        if erasure_id is None:
            return None
        return self._ack(erasure_id, "people", hash=digest)

    def _ack(self, erasure_id: str, stage: str, **extra) -> Output:
        value = {"erasure_id": erasure_id, "stage": stage, "at": int(time.time() * 1000), **extra}
        return Output(self.acks, erasure_id.encode(), orjson.dumps(value))
