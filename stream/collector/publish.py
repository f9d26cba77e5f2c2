"""Kafka publishing for the collector: every record of a request is sent, and the call
returns only when the broker acknowledged all of them (acks=all)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaProducer

from stream import topics
from stream.config import Settings
from stream.records import EventRecord, InvalidRecord
from stream.telemetry import PRODUCE_LATENCY


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events_topic = settings.topic(topics.EVENTS)
        self.invalid_topic = settings.topic(topics.INVALID)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            linger_ms=2,  # requests already batch events; a short linger merges concurrent ones
            max_batch_size=1024 * 1024,
            max_request_size=4 * 1024 * 1024,
            request_timeout_ms=15_000,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(self, events: Iterable[EventRecord], invalid: Iterable[InvalidRecord]) -> None:
        """Send everything, then wait for every acknowledgement; raises if any send failed."""
        started = time.perf_counter()
        send = self.producer.send
        futures = [
            await send(self.events_topic, orjson.dumps(e), key=e["visitor_id"].encode())
            for e in events
        ]
        futures += [
            await send(self.invalid_topic, orjson.dumps(r), key=r["message_id"].encode())
            for r in invalid
        ]
        if futures:
            await asyncio.gather(*futures)
        PRODUCE_LATENCY.observe(time.perf_counter() - started)

    async def healthy(self, timeout: float = 2.0) -> str:
        """"" when the broker answers a metadata request, else the reason."""
        try:
            await asyncio.wait_for(self.producer.client.force_metadata_update(), timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            return f"kafka unreachable: {type(exc).__name__}"
        if not self.producer.client.cluster.brokers():
            return "kafka unreachable: no brokers in metadata"
        return ""
