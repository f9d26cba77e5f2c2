"""What the Faust shell does around the engine, without a broker: two tables as dicts,
offsets, tick records in the events partition, outputs collected. For unit and
property tests of the processor's batch engine."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from stream import config, topics
from stream.metrics import windows
from stream.processor.engine import TICK_KEY, Engine, Record, tick_value
from tests.golden.script import event

EVENTS = "clickstream.events"


class Shell:
    def __init__(self, **env: str) -> None:
        env.setdefault("CLICKSTREAM_PARTITIONS", "1")
        self.settings = config.load(env)
        self.engine = Engine(self.settings)
        self.visitors: dict[bytes, bytes] = {}
        self.rows: dict[bytes, bytes] = {}
        self.outputs: list[tuple[str, dict]] = []
        self.raw: list = []  # the Output records themselves
        self.offsets = itertools.count()
        self.messages = itertools.count()
        self.deleted: set[str] = set()

    # --- a batch, as the step runs it ----------------------------------------------
    def feed(self, *records: Record) -> None:
        result = self.engine.run(records, self.visitors.get, self.rows.get, self.scan)
        self.store(result)

    def store(self, result) -> None:
        for key, (_, value) in result.states.items():
            if value is None:
                self.visitors.pop(key, None)
                self.deleted.add(key.decode())
            else:
                self.visitors[key] = value
        for key, (_, value) in result.rows.items():
            if value is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = value
        self.outputs += [(o.topic, orjson.loads(o.value)) for o in result.outputs]
        self.raw += result.outputs

    def scan(self, partition: int):
        n = self.settings.partitions
        for key, value in self.visitors.items():
            if topics.partition_of(key, n) == partition:
                yield key, value
        for key, value in self.rows.items():
            if windows.key_partition(key) == partition:
                yield key, value

    # --- records ----------------------------------------------------------------------
    def event_record(self, partition: int = 0, arrival: int | None = None, **fields: Any) -> Record:
        fields.setdefault("message_id", f"m-{next(self.messages)}")
        e = event(**fields)
        e["received_at"] = e["ts"] if arrival is None else arrival
        return Record(
            EVENTS, partition, next(self.offsets), e["visitor_id"].encode(), orjson.dumps(e)
        )

    def tick_record(self, now: int, partition: int = 0) -> Record:
        return Record(EVENTS, partition, next(self.offsets), TICK_KEY, tick_value(now))

    def send(self, **fields: Any) -> None:
        self.feed(self.event_record(**fields))

    def tick(self, now: int) -> None:
        self.feed(self.tick_record(now))

    def of(self, topic: str) -> list[dict]:
        return [value for t, value in self.outputs if t == topic]
