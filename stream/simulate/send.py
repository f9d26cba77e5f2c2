"""Where simulated calls go: the collector over HTTP, or Kafka directly.

Both senders take one batch of Segment calls and return an `Answer`, or raise
`Retryable` when the same batch should be sent again (5xx, 429, connection errors,
Kafka errors). `deliver()` retries with backoff; the calls keep their messageIds,
so a batch that was stored but not acknowledged is deduplicated downstream.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from stream import topics
from stream.config import Settings
from stream.simulate.session import iso

RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0)  # then the batch counts as failed


class Retryable(Exception):
    """The batch was not stored; send it again."""


@dataclass(frozen=True, slots=True)
class Answer:
    accepted: int = 0
    rejected: int = 0
    error: str = ""  # set when the request failed as a whole
    reason: str = ""  # the first rejection reason, when some events were rejected


class Sender(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send(self, calls: list[dict[str, Any]]) -> Answer: ...


async def deliver(
    sender: Sender, calls: list[dict[str, Any]], failed: Callable[[str], bool]
) -> Answer:
    """Send one batch, retrying on Retryable with backoff.

    Every failed try, a refusal included, is reported to `failed(error)`, which
    answers whether to try again. A batch not sent in the end comes back with
    `Answer.error` set.
    """
    error = ""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            answer = await sender.send(calls)
        except Retryable as exc:
            error = str(exc)
        else:
            if answer.error:  # refused as a whole: sending it again would not help
                failed(answer.error)
            return answer
        if not failed(error) or delay is None:
            break
        jitter = random.uniform(0.5, 1.5)  # retries of many workers do not march in step
        await asyncio.sleep(delay * jitter)
    return Answer(error=error)


class HttpSender:
    """POST {"batch": [...], "sentAt": ...} to {url}/v1/batch with the write key as Basic user."""

    def __init__(self, url: str, write_key: str, concurrency: int, timeout_s: float = 30.0) -> None:
        self.endpoint = url.rstrip("/") + "/v1/batch"
        self.write_key = write_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, keepalive_timeout=30),
            auth=aiohttp.BasicAuth(self.write_key, ""),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"Content-Type": "application/json", "User-Agent": "clickstream-simulator/1.0"},
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def send(self, calls: list[dict[str, Any]]) -> Answer:
        assert self.session is not None, "start() first"
        body = orjson.dumps({"batch": calls, "sentAt": iso(time.time_ns() // 1_000_000)})
        try:
            async with self.session.post(self.endpoint, data=body) as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Retryable(f"{self.endpoint}: {type(exc).__name__} {exc}".strip()) from exc
        if status >= 500 or status == 429:
            raise Retryable(f"HTTP {status} from {self.endpoint}")
        return read_answer(status, raw, len(calls))


def read_answer(status: int, raw: bytes, count: int) -> Answer:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        return Answer(rejected=count, error=f"HTTP {status}: answer is not JSON")
    accepted, rejected = payload.get("accepted"), payload.get("rejected")
    if isinstance(accepted, int) and isinstance(rejected, int):
        reason = ""
        errors = payload.get("errors")
        if rejected and isinstance(errors, list) and errors and isinstance(errors[0], dict):
            reason = "; ".join(map(str, errors[0].get("reasons") or []))
        return Answer(accepted, rejected, reason=reason)
    # Refused as a whole (401 unknown write key, 413...): resending would not help.
    return Answer(rejected=count, error=f"HTTP {status}: {payload.get('error', 'refused')}")


class KafkaSender:
    """Validate and normalize like the collector, then produce EventRecords (acks=all)."""

    def __init__(self, settings: Settings) -> None:
        from aiokafka import AIOKafkaProducer

        from stream.collector.validate import Validator
        from stream.enrich import Enricher

        self.settings = settings
        self.topic = settings.topic(topics.EVENTS)
        self.source = next(iter(settings.write_keys.values()))
        self.validator = Validator(settings.schemas_dir)
        self.enricher = Enricher(anonymize_ip=settings.anonymize_ip)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_batch_size=1024 * 1024,
            max_request_size=4 * 1024 * 1024,
            request_timeout_ms=15_000,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send(self, calls: list[dict[str, Any]]) -> Answer:
        from aiokafka.errors import KafkaError

        from stream.collector.normalize import to_record

        received = time.time_ns() // 1_000_000
        sent_at = iso(received)
        records, reason = [], ""
        for call in calls:
            reasons = self.validator.validate(call, received_at_ms=received)
            if reasons:
                reason = reason or "; ".join(reasons)
                continue
            context = call.get("context") or {}
            records.append(
                to_record(
                    {**call, "sentAt": sent_at},
                    source=self.source,
                    received_at_ms=received,
                    ip=context.get("ip") or "",
                    header_user_agent=context.get("userAgent") or "",
                    enricher=self.enricher,
                )
            )
        try:
            futures = [
                await self.producer.send(self.topic, orjson.dumps(r), key=r["visitor_id"].encode())
                for r in records
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise Retryable(f"kafka: {type(exc).__name__} {exc}".strip()) from exc
        return Answer(len(records), len(calls) - len(records), reason=reason)
