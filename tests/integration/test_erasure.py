"""Erasure end to end (README, "Privacy"), on the real embedded broker and chdb: erase a
visitor in the middle of a live stream, a person with two devices, then replay every
topic; nothing of them comes back, their later events are dropped and counted."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream import topics
from tests.support.pipeline import http, prestart

pytestmark = pytest.mark.integration

TOKEN = "erase-test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Every table the pipeline writes, and how a row names a person.
ID_TABLES = {
    "events": "visitor_id IN {ids} OR anonymous_id IN {ids} OR user_id IN {ids}",
    "sessions": "visitor_id IN {ids} OR anonymous_id IN {ids} OR user_id IN {ids}",
    "stage_transitions": "visitor_id IN {ids} OR anonymous_id IN {ids} OR user_id IN {ids}",
    "triggers": "visitor_id IN {ids} OR anonymous_id IN {ids} OR user_id IN {ids}",
    "visitors": "visitor_id IN {ids} OR anonymous_id IN {ids} OR user_id IN {ids}",
    "customers": "user_id IN {ids} OR hasAny(visitor_ids, {ids})",
    "invalid_events": "multiSearchAny(payload, {quoted})",
    "processor_state": "key IN {ids} OR multiSearchAny(value, {quoted})",
}


PIPELINE = prestart(__name__, "erase", CLICKSTREAM_ADMIN_TOKEN=TOKEN, CLICKSTREAM_PARTITIONS="2")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    running = PIPELINE.take(tmp_path_factory)
    yield running
    running.stop_later()


def event(anonymous_id: str, user_id: str = "", kind: str = "Product Viewed") -> dict:
    body = {
        "type": "track",
        "event": kind,
        "messageId": f"m-{uuid.uuid4()}",
        "anonymousId": anonymous_id,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "properties": {"product_id": "p1", "price": 9.5, "currency": "USD"},
        "context": {"page": {"url": "https://shop.example/p/1", "path": "/p/1"}},
    }
    if user_id:
        body["userId"] = user_id
    return body


def identify(anonymous_id: str, user_id: str) -> dict:
    return {
        "type": "identify",
        "messageId": f"m-{uuid.uuid4()}",
        "anonymousId": anonymous_id,
        "userId": user_id,
        "traits": {"email": f"{user_id}@example.com"},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }


def rows_naming(pipeline, ids: list[str]) -> dict[str, int]:
    array = "[" + ",".join(f"'{i}'" for i in ids) + "]"
    quoted = "[" + ",".join(f"'\"{i}\"'" for i in ids) + "]"
    found = {}
    for table, condition in ID_TABLES.items():
        where = condition.format(ids=array, quoted=quoted)
        found[table] = pipeline.sql(f"SELECT count() FROM clickstream.{table} WHERE {where}")[0][0]
    return found


def erase(pipeline, subject_id: str, timeout: float = 60.0) -> dict:
    started = time.monotonic()
    quoted = urllib.parse.quote(subject_id, safe="")
    status, answer = http("DELETE", f"{pipeline.api}/api/v1/visitors/{quoted}", headers=AUTH)
    assert status == 202, answer
    deadline = time.monotonic() + timeout
    while answer["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
        status, answer = http("GET", pipeline.api + answer["status_url"], headers=AUTH)
        assert status == 200, answer
        answer.setdefault("status_url", f"/api/v1/erasures/{answer['erasure_id']}")
    assert answer["status"] == "complete", (answer, pipeline.log_tail())
    print(f"erasure of {subject_id}: {time.monotonic() - started:.2f}s, {answer['seconds']}s")
    return answer


def suppressed_count(pipeline) -> float:
    status, text = http("GET", pipeline.collector + "/metrics")
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith("clickstream_events_suppressed_total{") and 'stage="collector"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class Stream:
    """Posts an event for each visitor every 0.2 s until stopped: a live stream."""

    def __init__(self, pipeline, visitors: list[str]):
        self.pipeline, self.visitors = pipeline, visitors
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            batch = [event(v) for v in self.visitors]
            status, answer = self.pipeline.post("/v1/batch", {"batch": batch})
            assert status == 200, answer
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_bad_input_gets_4xx_with_a_reason(pipeline):
    url = pipeline.api + "/api/v1/visitors/"
    status, answer = http("DELETE", url + "someone")
    assert status == 401 and "token" in answer["error"]
    status, answer = http("DELETE", url + "someone", headers={"Authorization": "Bearer nope"})
    assert status == 403 and "wrong" in answer["error"]
    status, answer = http("DELETE", url + "bad%01id", headers=AUTH)
    assert status == 400 and "control" in answer["error"]
    status, answer = http("DELETE", url + "%20%20", headers=AUTH)
    assert status == 400 and "empty" in answer["error"]
    status, answer = http("DELETE", url + "x" * 600, headers=AUTH)
    assert status == 400 and "longer" in answer["error"]
    status, answer = http("DELETE", url + "never-seen-" + uuid.uuid4().hex, headers=AUTH)
    assert status == 404 and "no such id" in answer["error"]
    status, answer = http("GET", pipeline.api + "/api/v1/erasures/" + "f" * 32, headers=AUTH)
    assert status == 404 and answer["error"]


def test_erase_mid_stream_then_person_with_two_devices_then_replay(pipeline):
    run = uuid.uuid4().hex[:8]
    target, others = f"gone-{run}", [f"stays-{run}-{i}" for i in range(3)]
    user, phone, laptop = f"user-{run}", f"phone-{run}", f"laptop-{run}"
    # The person: two devices, both identified as one user; another person whose one
    # device only will be erased.
    other_user, kept, dropped = f"other-{run}", f"kept-{run}", f"dropped-{run}"
    for device, owner in ((kept, other_user), (dropped, other_user)):
        status, _ = pipeline.post(
            "/v1/batch", {"batch": [event(device), identify(device, owner), event(device, owner)]}
        )
        assert status == 200
    for device in (phone, laptop):
        status, _ = pipeline.post(
            "/v1/batch", {"batch": [event(device), identify(device, user), event(device, user)]}
        )
        assert status == 200
    invalid = {"type": "track", "messageId": f"m-{uuid.uuid4()}", "anonymousId": phone}
    status, answer = pipeline.post("/v1/batch", {"batch": [event(phone), invalid]})
    assert status == 200 and answer["rejected"] == 1, answer  # no event name
    pipeline.wait_for(
        f"SELECT count() FROM clickstream.invalid_events WHERE position(payload, '{phone}') > 0",
        [[1]],
    )
    with Stream(pipeline, [target, *others]):
        pipeline.wait_for(
            f"SELECT count() > 0 FROM clickstream.visitors WHERE visitor_id = '{target}'",
            [[True]],
        )
        pipeline.wait_for(
            f"SELECT max(devices) FROM clickstream.customers WHERE user_id = '{user}'", [[2]]
        )
        before = suppressed_count(pipeline)
        done = erase(pipeline, target)  # while its events keep coming
        assert done["rows_removed"]["events"] > 0 and done["seconds"] < 30
        time.sleep(1.0)  # the stream goes on; the target's events are dropped
        assert suppressed_count(pipeline) > before
    # One device of a person who stays: the device goes, the person keeps the other.
    pipeline.wait_for(
        f"SELECT max(devices) FROM clickstream.customers WHERE user_id = '{other_user}'", [[2]]
    )
    device = erase(pipeline, dropped)
    assert device["ids_erased"] == 1
    pipeline.wait_for(
        f"SELECT visitor_ids FROM clickstream.customers FINAL WHERE user_id = '{other_user}'",
        [[[kept]]],
    )
    person = erase(pipeline, user)
    assert person["ids_erased"] == 3  # the user id and both devices
    assert person["rows_removed"]["customers"] > 0
    gone = [target, user, phone, laptop, dropped]
    time.sleep(2.0)  # whatever was still on its way has arrived
    assert rows_naming(pipeline, gone) == dict.fromkeys(ID_TABLES, 0)
    stays = pipeline.sql(
        "SELECT count(DISTINCT visitor_id) FROM clickstream.visitors WHERE visitor_id IN "
        "(" + ",".join(f"'{v}'" for v in others) + ")"
    )
    assert stays == [[3]]
    audit = pipeline.sql(
        "SELECT status, rows_removed['events'] > 0 FROM clickstream.erasures FINAL"
        f" WHERE erasure_id IN ('{done['erasure_id']}', '{person['erasure_id']}')"
    )
    assert sorted(audit) == [["complete", True], ["complete", True]]
    # No id in the audit or the suppression list: only hashes.
    assert pipeline.sql(
        "SELECT count() FROM clickstream.suppressions WHERE hash IN "
        "(" + ",".join(f"'{i}'" for i in gone) + ")"
    ) == [[0]]

    # Later events of any of them, on any device, are dropped at the collector.
    before = suppressed_count(pipeline)
    late_invalid = {"type": "track", "messageId": f"m-{uuid.uuid4()}", "anonymousId": target}
    status, answer = pipeline.post(
        "/v1/batch",
        {"batch": [event(target), event(phone), event(f"new-{run}", user), late_invalid]},
    )
    assert status == 200 and answer["accepted"] == 3  # accepted, then dropped
    assert suppressed_count(pipeline) == before + 3

    # A replay of every topic the sink and the processor read: nothing comes back.
    marker = f"marker-{run}"
    asyncio.run(replay_everything(pipeline))
    pipeline.post("/v1/batch", {"batch": [event(marker)]})
    pipeline.wait_for(
        f"SELECT count() > 0 FROM clickstream.events WHERE visitor_id = '{marker}'", [[True]]
    )
    time.sleep(3.0)  # the replayed journey records trail the marker's event
    assert rows_naming(pipeline, gone) == dict.fromkeys(ID_TABLES, 0)
    # The processor's state of them is gone: tombstones are the last word on their keys.
    last = asyncio.run(last_changelog_values(pipeline, [target, phone, laptop, user, dropped]))
    assert last == dict.fromkeys([target, phone, laptop, user, dropped]), last
    assert pipeline.sql(
        f"SELECT visitor_ids FROM clickstream.customers FINAL WHERE user_id = '{other_user}'"
    ) == [[[kept]]]

    # Erasing again (here with the CLI) is safe: the same end state, a second audit
    # row with zeros.
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "forget", target],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "complete" in done.stdout and "processor_state" in done.stdout, done.stdout
    assert rows_naming(pipeline, gone) == dict.fromkeys(ID_TABLES, 0)
    audit = pipeline.sql(
        "SELECT count(), sum(arraySum(mapValues(rows_removed)) = 0) FROM clickstream.erasures FINAL"
    )
    assert audit == [[4, 1]]
    # And the CLI's bad input: one line, exit 1.
    bad = subprocess.run(
        [sys.executable, "-m", "stream.cli", "forget", "never-seen-" + run],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "404" in bad.stderr, bad.stderr


REPLAYED = (
    topics.EVENTS,
    topics.INVALID,
    topics.STAGE_CHANGES,
    topics.SESSIONS,
    topics.TRIGGERS,
    topics.VISITORS,
    topics.CUSTOMERS,
    topics.IDENTITIES,
)


async def _read_all(bootstrap: str, names: list[str]) -> dict[str, list]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [
            TopicPartition(name, p)
            for name in names
            for p in (consumer.partitions_for_topic(name) or await _partitions(consumer, name))
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[str, list] = {name: [] for name in names}
        idle = 0
        while idle < 3:
            got = await consumer.getmany(timeout_ms=300)
            idle = 0 if got else idle + 1
            for tp, records in got.items():
                out[tp.topic] += [(tp.partition, r.key, r.value) for r in records]
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer, name: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(name) or {0}


async def replay_everything(pipeline) -> None:
    """Every record of the pipeline's topics produced again, as a replay would."""
    bootstrap = f"127.0.0.1:{pipeline.broker_port}"
    records = await _read_all(bootstrap, list(REPLAYED))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send(name, value=value, key=key, partition=partition)
            for name, items in records.items()
            for partition, key, value in items
            if key != topics.TICK_KEY
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def last_changelog_values(pipeline, keys: list[str]) -> dict:
    bootstrap = f"127.0.0.1:{pipeline.broker_port}"
    names = [f"{topics.PROCESSOR_APP_ID}-{t}-changelog" for t in ("visitors", "people")]
    records = await _read_all(bootstrap, names)
    last = {}
    for items in records.values():
        for _, key, value in items:
            if key is not None and key.decode() in keys:
                last[key.decode()] = value
    return last
