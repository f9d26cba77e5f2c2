"""The erasure of a person, run by the query API's process (which owns ClickHouse).

    resolve    the id -> every id to erase: an anonymous id is that device; a user id
               is the person, every device linked to it (events, visitors, customers)
    suppress   the salted hashes into this process's list (the sink filters from now
               on), to the suppressions topic (acknowledged) and table
    nudge      the people table: a tombstone for an erased user, a "gone" record for
               an erased device of a user who stays
    wait       the processor's acknowledgements: every events partition scanned its
               state twice (and deleted what named the ids), every nudge applied
    delete     once the sink's insert in flight ended: every row naming an id, in every
               table, ALTER ... DELETE with mutations_sync (rows counted before)
    audit      one row in `erasures`: hashes, times, rows removed per table

An erasure is COMPLETE when all of that is done; `status` says how far it is.
Erasing again is safe: the same end state, and a second audit row (zeros).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer

from stream import topics
from stream.config import Settings
from stream.journey.people import gone_record
from stream.privacy.subject import validate_id
from stream.privacy.suppressions import Follower, Suppression, SuppressionList, publish, table_rows

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 120.0
KEEP_DONE = 1000  # finished erasures kept in memory for their status

# Table -> the condition naming any of {ids:Array(String)} (or {patterns:...}: the ids as
# JSON strings, for text holding JSON).
CONDITIONS = {
    "events": "visitor_id IN {ids:Array(String)} OR anonymous_id IN {ids:Array(String)}"
    " OR user_id IN {ids:Array(String)} OR previous_id IN {ids:Array(String)}",
    "invalid_events": "multiSearchAny(payload, {patterns:Array(String)})",
    "sessions": "visitor_id IN {ids:Array(String)} OR anonymous_id IN {ids:Array(String)}"
    " OR user_id IN {ids:Array(String)}",
    "stage_transitions": "visitor_id IN {ids:Array(String)} OR anonymous_id IN {ids:Array(String)}"
    " OR user_id IN {ids:Array(String)}",
    "triggers": "visitor_id IN {ids:Array(String)} OR anonymous_id IN {ids:Array(String)}"
    " OR user_id IN {ids:Array(String)}",
    "visitors": "visitor_id IN {ids:Array(String)} OR anonymous_id IN {ids:Array(String)}"
    " OR user_id IN {ids:Array(String)}",
    "customers": "user_id IN {ids:Array(String)} OR hasAny(visitor_ids, {ids:Array(String)})",
    "processor_state": "(table_name IN ('visitors', 'people') AND key IN {ids:Array(String)})"
    " OR multiSearchAny(value, {patterns:Array(String)})",
}


class UnknownId(LookupError):
    """No table holds the id and it was never erased."""


@dataclass(frozen=True, slots=True)
class Subjects:
    """What an id resolves to."""

    asked: str
    ids: tuple[str, ...]  # every id erased (the asked one first)
    users: tuple[str, ...]  # erased user ids (their person is deleted)
    keep_users: tuple[tuple[str, str], ...]  # (device, user) of an erased device whose user stays


def patterns(ids) -> list[str]:
    """The ids as they appear in JSON text: quoted and escaped."""
    return [orjson.dumps(i).decode() for i in ids]


def resolve(client, database: str, subject_id: str) -> Subjects | None:
    """The ids to erase for `subject_id`; None when no table names it."""
    db = database
    params = {"id": subject_id}
    q = client.query
    devices = {
        r[0]
        for sql in (
            f"SELECT DISTINCT visitor_id FROM {db}.events WHERE user_id = {{id:String}}",
            f"SELECT DISTINCT anonymous_id FROM {db}.events WHERE user_id = {{id:String}}",
            f"SELECT DISTINCT visitor_id FROM {db}.visitors WHERE user_id = {{id:String}}",
            f"SELECT DISTINCT arrayJoin(visitor_ids) FROM {db}.customers WHERE user_id = {{id:String}}",
        )
        for r in q(sql, parameters=params).result_rows
        if r[0]
    }
    is_user = bool(devices) or bool(
        q(
            f"SELECT count() FROM {db}.customers WHERE user_id = {{id:String}}", parameters=params
        ).result_rows[0][0]
    )
    if is_user:
        devices.discard(subject_id)
        return Subjects(subject_id, (subject_id, *sorted(devices)), (subject_id,), ())
    users = {
        r[0]
        for sql in (
            f"SELECT DISTINCT user_id FROM {db}.events"
            f" WHERE visitor_id = {{id:String}} OR anonymous_id = {{id:String}}",
            f"SELECT DISTINCT user_id FROM {db}.visitors WHERE visitor_id = {{id:String}}",
            f"SELECT DISTINCT user_id FROM {db}.customers WHERE has(visitor_ids, {{id:String}})",
        )
        for r in q(sql, parameters=params).result_rows
    }
    known = bool(users)
    if not known:  # named only in tables without an id column, or nowhere
        for table, condition in CONDITIONS.items():
            found = q(
                f"SELECT count() FROM {db}.{table} WHERE {condition}",
                parameters={"ids": [subject_id], "patterns": patterns([subject_id])},
            ).result_rows[0][0]
            if found:
                known = True
                break
    if not known:
        return None
    users.discard("")
    return Subjects(subject_id, (subject_id,), (), tuple((subject_id, u) for u in sorted(users)))


@dataclass
class Erasure:
    erasure_id: str
    subject_hash: str
    hashes: list[str]
    requested_at: int  # ms
    partitions: int
    people_acks: set[str]  # hashes whose nudge must be acknowledged
    journey_acked: set[int] = field(default_factory=set)
    status: str = "pending"
    completed_at: int = 0
    rows_removed: dict[str, int] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def acknowledged(self) -> bool:
        return not self.people_acks and len(self.journey_acked) >= self.partitions

    def view(self) -> dict:
        waiting = []
        if len(self.journey_acked) < self.partitions:
            waiting.append(
                f"processor: {self.partitions - len(self.journey_acked)} events partition(s)"
            )
        if self.people_acks:
            waiting.append(f"processor: {len(self.people_acks)} person update(s)")
        return {
            "erasure_id": self.erasure_id,
            "status": self.status,
            "subject_hash": self.subject_hash,
            "ids_erased": len(self.hashes),
            "requested_at": _iso(self.requested_at),
            "completed_at": _iso(self.completed_at) if self.completed_at else None,
            "seconds": round((self.completed_at - self.requested_at) / 1000, 3)
            if self.completed_at
            else None,
            "rows_removed": self.rows_removed,
            "waiting_for": waiting if self.status == "pending" else [],
        }


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


class Erasures:
    """The erasure service: one per API process; `sink` is the in-process sink."""

    def __init__(self, settings: Settings, client, suppressions: SuppressionList, sink=None):
        self.settings = settings
        self.client = client
        self.suppressions = suppressions
        self.sink = sink
        self.producer: AIOKafkaProducer | None = None
        self.running: dict[str, Erasure] = {}
        self._acks = Follower(settings, topics.ERASURE_ACKS, self._ack)
        self._tasks: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if not self.suppressions.ready.is_set():
            await self.suppressions.start()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers, acks="all"
        )
        await self.producer.start()
        await self._acks.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._acks.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.sink is None:  # else the sink stops the list it shares
            await self.suppressions.stop()

    # --- acknowledgements -------------------------------------------------------------
    def _ack(self, record) -> None:
        ack = orjson.loads(record.value)
        erasure = self.running.get(ack.get("erasure_id", ""))
        if erasure is None:
            return
        if ack.get("stage") == "journey":
            erasure.journey_acked.update(int(p) for p in ack.get("partitions", ()))
        elif ack.get("stage") == "people":
            erasure.people_acks.discard(ack.get("hash", ""))

    # --- the erasure ----------------------------------------------------------------
    async def erase(self, raw_id: str) -> Erasure:
        """Validate (IdError), resolve (UnknownId), suppress and nudge; the rest runs in
        a task. Returns once the suppression is acknowledged."""
        subject_id = validate_id(raw_id)
        matcher = self.suppressions.matcher
        async with self._lock:  # one erasure's suppression at a time: acks stay simple
            found = await asyncio.to_thread(
                resolve, self.client, self.settings.database, subject_id
            )
            if found is None:
                if not matcher.suppressed(subject_id):
                    raise UnknownId(subject_id)
                found = Subjects(subject_id, (subject_id,), (), ())  # erased before: again
            now = int(time.time() * 1000)
            erasure_id = uuid.uuid4().hex
            items = [Suppression(matcher.hash(i), erasure_id, now) for i in found.ids]
            nudges = [(user.encode(), None) for user in found.users] + [
                (user.encode(), gone_record(device)) for device, user in found.keep_users
            ]
            erasure = Erasure(
                erasure_id=erasure_id,
                subject_hash=items[0].hash,
                hashes=[s.hash for s in items],
                requested_at=now,
                partitions=self.settings.partitions,
                people_acks={matcher.hash(u) for u in found.users}
                | {matcher.hash(d) for d, _ in found.keep_users},
            )
            self.running[erasure_id] = erasure
            for item in items:  # this process's sink filters from now on
                self.suppressions.add(item)
            assert self.producer is not None
            await publish(self.settings, self.producer, items)
            await asyncio.to_thread(self._insert_suppressions, items)
            identities = self.settings.topic(topics.IDENTITIES)
            sent = [await self.producer.send(identities, value=v, key=k) for k, v in nudges]
            await asyncio.gather(*sent)
        log.info("erasure %s requested: %d id(s)", erasure_id, len(items))
        task = asyncio.create_task(self._complete(erasure, list(found.ids)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return erasure

    async def _complete(self, erasure: Erasure, ids: list[str]) -> None:
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while not erasure.acknowledged and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.sink is not None:
            await self.sink.settled()
        try:
            erasure.rows_removed = await asyncio.to_thread(self._delete, ids)
        except Exception:
            log.exception("erasure %s: deleting rows failed", erasure.erasure_id)
            erasure.status = "failed"
        else:
            erasure.status = "complete" if erasure.acknowledged else "unacknowledged"
        erasure.completed_at = int(time.time() * 1000)
        await asyncio.to_thread(self._audit, erasure)
        erasure.done.set()
        log.info(
            "erasure %s %s in %.2fs: %d row(s) removed",
            erasure.erasure_id,
            erasure.status,
            (erasure.completed_at - erasure.requested_at) / 1000,
            sum(erasure.rows_removed.values()),
        )
        if len(self.running) > KEEP_DONE:
            for key in [k for k, e in self.running.items() if e.done.is_set()][: KEEP_DONE // 2]:
                del self.running[key]

    # --- ClickHouse ----------------------------------------------------------------------
    def _insert_suppressions(self, items: list[Suppression]) -> None:
        rows = [
            (h, e, dt.datetime.fromtimestamp(t / 1000, dt.UTC)) for h, e, t in table_rows(items)
        ]
        self.client.insert(
            f"{self.settings.database}.suppressions",
            rows,
            column_names=("hash", "erasure_id", "requested_at"),
        )

    def _delete(self, ids: list[str]) -> dict[str, int]:
        db = self.settings.database
        params = {"ids": ids, "patterns": patterns(ids)}
        removed = {}
        for table, condition in CONDITIONS.items():
            count = self.client.query(
                f"SELECT count() FROM {db}.{table} WHERE {condition}", parameters=params
            ).result_rows[0][0]
            removed[table] = int(count)
            if count:
                self.client.command(
                    f"ALTER TABLE {db}.{table} DELETE WHERE {condition}",
                    parameters=params,
                    settings={"mutations_sync": 2},
                )
        return removed

    def _audit(self, erasure: Erasure) -> None:
        self.client.insert(
            f"{self.settings.database}.erasures",
            [
                (
                    erasure.erasure_id,
                    erasure.subject_hash,
                    erasure.hashes,
                    dt.datetime.fromtimestamp(erasure.requested_at / 1000, dt.UTC),
                    dt.datetime.fromtimestamp(erasure.completed_at / 1000, dt.UTC),
                    (erasure.completed_at - erasure.requested_at) / 1000,
                    erasure.status,
                    erasure.rows_removed,
                )
            ],
            column_names=(
                "erasure_id",
                "subject_hash",
                "hashes",
                "requested_at",
                "completed_at",
                "seconds",
                "status",
                "rows_removed",
            ),
        )

    def status(self, erasure_id: str) -> dict | None:
        erasure = self.running.get(erasure_id)
        if erasure is not None:
            return erasure.view()
        rows = self.client.query(
            "SELECT erasure_id, status, subject_hash, length(hashes), requested_at,"
            f" completed_at, seconds, rows_removed FROM {self.settings.database}.erasures FINAL"
            " WHERE erasure_id = {id:String}",
            parameters={"id": erasure_id},
        ).result_rows
        if not rows:
            return None
        e, status, subject, n, requested, completed, seconds, removed = rows[0]
        return {
            "erasure_id": e,
            "status": status,
            "subject_hash": subject,
            "ids_erased": n,
            "requested_at": requested,
            "completed_at": completed,
            "seconds": seconds,
            "rows_removed": dict(removed),
            "waiting_for": [],
        }
