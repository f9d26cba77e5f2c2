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

Durable: before anything is suppressed, a `pending` row (the erasure id and the hashes,
never an id) goes to `erasures`; the final row replaces it. `start` resumes every
erasure without a final row: it finds the ids to delete by hashing the ids the tables
hold (no ClickHouse function computes our keyed BLAKE2b), publishes the suppressions
again (the processor purges and acknowledges them), then waits, deletes and audits as
usual.
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
from stream.privacy.rows import payload_ids
from stream.privacy.subject import Matcher, validate_id
from stream.privacy.suppressions import Follower, Suppression, SuppressionList, publish, table_rows
from stream.processor.engine import tick_value

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


# Table -> the expression giving every id its rows name (for resuming: ids by hash).
ID_SOURCES = {
    "events": "arrayJoin([visitor_id, anonymous_id, user_id, previous_id])",
    "sessions": "arrayJoin([visitor_id, anonymous_id, user_id])",
    "stage_transitions": "arrayJoin([visitor_id, anonymous_id, user_id])",
    "triggers": "arrayJoin([visitor_id, anonymous_id, user_id])",
    "visitors": "arrayJoin([visitor_id, anonymous_id, user_id])",
    "customers": "arrayJoin(arrayPushBack(visitor_ids, user_id))",
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


def ids_by_hash(client, database: str, matcher: Matcher, hashes: set[str]) -> list[str]:
    """Every id a table still names whose hash is in `hashes` (a full scan of the id
    columns and of the invalid payloads: only run when resuming)."""
    found: set[str] = set()

    def take(candidates) -> None:
        for candidate in candidates:
            if candidate and candidate not in found and matcher.hash(candidate) in hashes:
                found.add(candidate)

    for table, expression in ID_SOURCES.items():
        rows = client.query(f"SELECT DISTINCT {expression} FROM {database}.{table}").result_rows
        take(r[0] for r in rows)
    rows = client.query(
        f"SELECT DISTINCT key FROM {database}.processor_state"
        " WHERE table_name IN ('visitors', 'people')"
    ).result_rows
    take(r[0].decode("utf-8", "replace") if isinstance(r[0], bytes) else r[0] for r in rows)
    for (payload,) in client.query(f"SELECT payload FROM {database}.invalid_events").result_rows:
        take(payload_ids(payload))
    return sorted(found)


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
        # Known before the acknowledgements are read: a Kafka that kept them replays them.
        unfinished = await self._read_unfinished()
        for erasure in unfinished:
            self.running[erasure.erasure_id] = erasure
        await self._acks.start()
        for erasure in unfinished:
            self._spawn(self._resume(erasure))

    async def _read_unfinished(self, attempts: int = 30) -> list[Erasure]:
        """The erasures to resume (retrying while ClickHouse does not answer)."""
        unfinished: list[Erasure] = []
        for attempt in range(1, attempts + 1):
            try:
                unfinished = await asyncio.to_thread(self._unfinished)
                break
            except Exception as exc:
                if attempt == attempts:
                    raise
                log.warning("reading the erasures in progress failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
        if unfinished:
            log.info("resuming %d erasure(s) a restart interrupted", len(unfinished))
        return unfinished

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            # Durable before anything else: a restart from here on resumes it.
            await asyncio.to_thread(self._audit, erasure)
            for item in items:  # this process's sink filters from now on
                self.suppressions.add(item)
            assert self.producer is not None
            await publish(self.settings, self.producer, items)
            await asyncio.to_thread(self._insert_suppressions, items)
            identities = self.settings.topic(topics.IDENTITIES)
            sent = [await self.producer.send(identities, value=v, key=k) for k, v in nudges]
            await asyncio.gather(*sent)
        log.info("erasure %s requested: %d id(s)", erasure_id, len(items))
        self._spawn(self._complete(erasure, list(found.ids)))
        return erasure

    async def _resume(self, erasure: Erasure) -> None:
        """An erasure a restart interrupted: its ids found again by their hashes, its
        suppressions and tombstones sent again (idempotent), then as usual."""
        try:
            async with self._lock:
                ids = await asyncio.to_thread(
                    ids_by_hash,
                    self.client,
                    self.settings.database,
                    self.suppressions.matcher,
                    set(erasure.hashes),
                )
                items = [
                    Suppression(h, erasure.erasure_id, erasure.requested_at, again=True)
                    for h in erasure.hashes
                ]
                for item in items:
                    self.suppressions.add(item)
                # Every id found may be a person's user id: a tombstone on its key in
                # the people table deletes the person (a no-op for a device id).
                erasure.people_acks = {self.suppressions.matcher.hash(i) for i in ids}
                assert self.producer is not None
                await publish(self.settings, self.producer, items)
                await asyncio.to_thread(self._insert_suppressions, items)
                identities = self.settings.topic(topics.IDENTITIES)
                sent = [
                    await self.producer.send(identities, value=None, key=i.encode()) for i in ids
                ]
                # A tick into every events partition: a processor just restarted runs no
                # batch (so purges nothing, acknowledges nothing) before a record comes.
                # The wall clock, as its own ticks carry.
                events = self.settings.topic(topics.EVENTS)
                tick = tick_value(int(time.time() * 1000))
                sent += [
                    await self.producer.send(events, value=tick, key=topics.TICK_KEY, partition=p)
                    for p in range(self.settings.partitions)
                ]
                await asyncio.gather(*sent)
        except Exception:
            log.exception(
                "erasure %s: resuming failed; retried at the next start", erasure.erasure_id
            )
            return
        log.info("erasure %s resumed: %d id(s) still named", erasure.erasure_id, len(ids))
        await self._complete(erasure, ids)

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
                    # A pending row: completed_at = requested_at, 0 s.
                    dt.datetime.fromtimestamp(
                        (erasure.completed_at or erasure.requested_at) / 1000, dt.UTC
                    ),
                    (erasure.completed_at - erasure.requested_at) / 1000
                    if erasure.completed_at
                    else 0.0,
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

    def _unfinished(self) -> list[Erasure]:
        """The erasures whose only audit row is the `pending` one."""
        rows = self.client.query(
            "SELECT erasure_id, any(subject_hash), any(hashes),"
            " toUnixTimestamp64Milli(min(requested_at))"
            f" FROM {self.settings.database}.erasures GROUP BY erasure_id"
            " HAVING countIf(status != 'pending') = 0"
        ).result_rows
        return [
            Erasure(
                erasure_id=e,
                subject_hash=subject,
                hashes=list(hashes),
                requested_at=int(requested),
                partitions=self.settings.partitions,
                people_acks=set(),
            )
            for e, subject, hashes, requested in rows
        ]

    def status(self, erasure_id: str) -> dict | None:
        erasure = self.running.get(erasure_id)
        if erasure is not None:
            return erasure.view()
        rows = self.client.query(
            "SELECT erasure_id, status, subject_hash, length(hashes), requested_at,"
            f" completed_at, seconds, rows_removed FROM {self.settings.database}.erasures"
            " WHERE erasure_id = {id:String} ORDER BY status = 'pending' LIMIT 1",
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
            "completed_at": None if status == "pending" else completed,
            "seconds": None if status == "pending" else seconds,
            "rows_removed": dict(removed),
            "waiting_for": [],
        }
