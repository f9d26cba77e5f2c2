"""What the Faust shell does around the engine, without a broker: two tables as dicts,
offsets, tick records in the events partition, outputs collected. For unit and
property tests of the processor's batch engine."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from stream import config
from stream.processor.engine import TICK_KEY, Engine, Record, tick_value
from stream.processor.local import LocalTables
from tests.golden.script import event

EVENTS = "clickstream.events"


class Shell:
    def __init__(self, **env: str) -> None:
        env.setdefault("CLICKSTREAM_PARTITIONS", "1")
        self.settings = config.load(env)
        self.engine = Engine(self.settings)
        self.tables = LocalTables(self.settings.partitions)
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
        self.deleted |= {k.decode() for k, (_, v) in result.states.items() if v is None}
        self.tables.store(result)
        self.outputs += [(o.topic, orjson.loads(o.value)) for o in result.outputs]
        self.raw += result.outputs

    @property
    def visitors(self) -> dict[bytes, bytes]:
        return self.tables.visitors

    @visitors.setter
    def visitors(self, value: dict[bytes, bytes]) -> None:
        self.tables.visitors = value

    @property
    def rows(self) -> dict[bytes, bytes]:
        return self.tables.rows

    @rows.setter
    def rows(self, value: dict[bytes, bytes]) -> None:
        self.tables.rows = value

    def scan(self, partition: int):
        return self.tables.scan(partition)

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
