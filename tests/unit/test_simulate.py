"""The traffic model (stream.simulate.model) and the driver that sends it."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson
import pytest
from aiohttp import web

from stream.collector.clock import parse_iso_ms
from stream.config import Settings
from stream.records import EventRecord
from stream.simulate import Mix, generate, generate_timed, run_simulation
from stream.simulate.catalog import PRODUCTS

pytestmark = pytest.mark.unit
BASE = 1_700_000_000_000  # 2023-11-14T22:13:20Z: historic traffic, reproducible timestamps
GAP_MS = 30 * 60 * 1000
DOC_NETS = [ipaddress.ip_network(n) for n in ("203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32")]
WRITE_KEY = "test-write-key"


@dataclass
class Session:
    visitor: str
    returning: bool
    bot: bool
    calls: list[dict[str, Any]] = field(default_factory=list)

    def has(self, event: str) -> bool:
        return any(c.get("event") == event for c in self.calls)


def cut_sessions(timed: list[tuple[int, dict[str, Any]]]) -> list[Session]:
    """Sessions as the pipeline cuts them: per anonymous id, split at > 30 min without events."""
    last: dict[str, tuple[int, Session]] = {}
    out = []
    for ts, call in sorted(timed, key=lambda item: item[0]):
        visitor = call["anonymousId"]
        seen = last.get(visitor)
        if seen is None or ts - seen[0] > GAP_MS:
            bot = "bot" in call["context"]["userAgent"].lower()
            session = Session(visitor, returning=seen is not None, bot=bot)
            out.append(session)
        else:
            session = seen[1]
        session.calls.append(call)
        last[visitor] = (ts, session)
    return out


@pytest.fixture(scope="module")
def traffic() -> list[tuple[int, dict[str, Any]]]:
    """About 5,000 sessions of historic traffic with the default mix."""
    return list(generate_timed(3, 2500, base_time_ms=BASE))


@pytest.fixture(scope="module")
def sessions(traffic) -> list[Session]:
    return cut_sessions(traffic)


@pytest.fixture(scope="module")
def rich() -> list[tuple[int, dict[str, Any]]]:
    """About 800 sessions where orders and refunds are common: every kind of event occurs."""
    mix = Mix(conversion=0.2, cart_abandonment=0.5, refunds=0.5)
    return list(generate_timed(5, 400, base_time_ms=BASE, mix=mix))


# ---- determinism and shape


def test_same_seed_gives_the_same_calls_and_ids():
    first = list(generate(11, 60, base_time_ms=BASE))
    assert first == list(generate(11, 60, base_time_ms=BASE))
    other = list(generate(12, 60, base_time_ms=BASE))
    assert {c["messageId"] for c in first}.isdisjoint(c["messageId"] for c in other)


def test_calls_come_in_time_order_with_unique_ids(traffic):
    times = [ts for ts, _ in traffic]
    assert times == sorted(times)
    assert times[0] >= BASE
    ids = [call["messageId"] for _, call in traffic]
    assert len(set(ids)) == len(ids)
    for ts, call in traffic[:2000]:
        assert call["timestamp"].endswith("Z")
        assert parse_iso_ms(call["timestamp"]) == ts


def test_every_call_has_the_segment_fields(traffic):
    for _, call in islice(traffic, 0, None, 7):
        assert call["type"] in ("track", "page", "identify")
        assert call["anonymousId"]
        if call["type"] == "track":
            assert call["event"]
        context = call["context"]
        assert context["library"]["name"] == "clickstream-simulator"
        assert context["userAgent"]
        assert set(context["page"]) >= {"url", "path", "referrer", "title"}
        assert context["page"]["url"].startswith("https://shop.example.com/")
        assert any(ipaddress.ip_address(context["ip"]) in net for net in DOC_NETS)


def test_campaigns_and_referrers_on_landing_pages(sessions):
    landings = [s.calls[0] for s in sessions if not s.bot]
    assert all(c["type"] == "page" for c in landings)
    mediums = Counter(c["context"].get("campaign", {}).get("medium", "") for c in landings)
    assert {"cpc", "paid_social", "email", ""} <= set(mediums)
    referrers = Counter(c["context"]["page"]["referrer"] for c in landings)
    assert referrers[""] > 0 and referrers["https://www.google.com/"] > 0
    tagged = [c for c in landings if "campaign" in c["context"]]
    assert all("utm_source=" in c["context"]["page"]["url"] for c in tagged)


def test_page_pings_carry_engaged_seconds(traffic):
    pings = [c for _, c in traffic if c.get("event") == "Page Ping"]
    assert pings
    assert all(1 <= c["properties"]["engaged_seconds"] <= 10 for c in pings)


def test_orders_add_up(sessions):
    orders = [c for s in sessions for c in s.calls if c.get("event") == "Order Completed"]
    assert orders
    assert len({o["properties"]["order_id"] for o in orders}) == len(orders)
    for order in orders:
        p = order["properties"]
        assert p["currency"] == "USD" and p["products"]
        assert p["revenue"] == pytest.approx(p["subtotal"] - p["discount"], abs=0.011)
        assert p["total"] == pytest.approx(p["revenue"] + p["shipping"] + p["tax"], abs=0.011)
    assert all(s.has("Product Added") for s in sessions if s.has("Order Completed"))


def test_catalog_has_about_fifty_distinct_products():
    assert 45 <= len(PRODUCTS) <= 60
    assert len({p.product_id for p in PRODUCTS}) == len({p.sku for p in PRODUCTS}) == len(PRODUCTS)
    assert all(p.price > 0 and p.category and p.name for p in PRODUCTS)


# ---- the mix over ~5,000 sessions (bands are about three standard deviations wide)


def test_conversion_and_cart_abandonment_follow_the_mix(sessions):
    assert len(sessions) >= 4500
    conversion = sum(s.has("Order Completed") for s in sessions) / len(sessions)
    assert abs(conversion - 0.02 * 0.98) < 0.006  # 2 % of human sessions; bots never buy
    carts = [s for s in sessions if s.has("Product Added")]
    abandoned = sum(not s.has("Order Completed") for s in carts) / len(carts)
    assert abs(abandoned - 0.70) < 0.08


def test_bots_new_and_returning_visitors(sessions):
    bots = [s for s in sessions if s.bot]
    assert abs(len(bots) / len(sessions) - 0.02) < 0.008
    assert all(c["type"] == "page" for s in bots for c in s.calls)
    humans = [s for s in sessions if not s.bot]
    returning = [s for s in humans if s.returning]
    assert abs(len(returning) / len(humans) - 0.5) < 0.05
    assert any(c.get("userId") for s in returning for c in s.calls)  # some are signed in
    assert len({s.visitor for s in humans}) == pytest.approx(2500, abs=5)


def test_personas_shape_the_sessions(sessions):
    humans = [s for s in sessions if not s.bot]
    bounces = sum(len([c for c in s.calls if c["type"] == "page"]) == 1 for s in humans)
    assert 0.2 < bounces / len(humans) < 0.6
    names = Counter(c.get("event") for s in humans for c in s.calls)
    for event in ("Product Added to Wishlist", "Product Shared", "Signed Up", "Feedback Submitted"):
        assert names[event] > 0, event
    assert max(len(s.calls) for s in humans) >= 40  # some dig deep


def test_a_different_mix_gives_different_rates(rich):
    got = cut_sessions(rich)
    conversion = sum(s.has("Order Completed") for s in got) / len(got)
    assert abs(conversion - 0.20 * 0.98) < 0.045
    carts = [s for s in got if s.has("Product Added")]
    assert abs(sum(not s.has("Order Completed") for s in carts) / len(carts) - 0.5) < 0.1


def test_impossible_mixes_are_refused():
    with pytest.raises(ValueError):
        Mix(conversion=0.5, cart_abandonment=0.7)  # would need more carts than sessions
    with pytest.raises(ValueError):
        Mix(bots=1.5)


def test_out_of_order_and_late_delivery_keep_every_event():
    ordered = list(generate_timed(9, 150, base_time_ms=BASE))
    messy = list(generate_timed(9, 150, base_time_ms=BASE, out_of_order=0.05, late=0.02))
    assert sorted(c["messageId"] for _, c in messy) == sorted(c["messageId"] for _, c in ordered)
    newest, behind, late = 0, 0, 0
    for ts, _ in messy[: len(messy) * 9 // 10]:  # leave out the end, where held events flush
        newest = max(newest, ts)
        behind += ts < newest
        late += newest - ts > 300_000
    checked = len(messy) * 9 // 10
    assert 0.04 < behind / checked < 0.09
    assert 0.007 < late / checked < 0.03  # late ones are more than 5 minutes behind


# ---- every call passes the collector's validator


def test_every_call_is_valid_for_the_collector(rich):
    try:
        from stream.collector.validate import Validator
    except ImportError as exc:  # pragma: no cover - the validator ships with the collector
        pytest.skip(f"stream.collector.validate is not importable: {exc}")
    validator = Validator(Settings().schemas_dir)
    calls = [call for _, call in rich]
    invalid = [(c, r) for c in calls if (r := validator.validate(c))]
    assert not invalid, invalid[:3]
    missing = validator.events - {c.get("event") for c in calls}
    assert not missing


# ---- the driver


class FakePublisher:
    """Stands in for Kafka behind the real collector app."""

    def __init__(self) -> None:
        self.events: list[EventRecord] = []

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def healthy(self) -> str:
        return ""

    async def publish(self, events, invalid) -> None:
        self.events += list(events)


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def settings() -> Settings:
    return Settings(write_keys={WRITE_KEY: "web"})


async def simulate(url: str, **kwargs) -> Any:
    options = dict(rate=0, visitors=50, duration=0, max_events=0, seed=1, url=url, to_kafka=False)
    options.update(progress=False, **kwargs)
    return await run_simulation(settings(), **options)


async def test_events_reach_the_collector_and_are_accepted():
    try:
        from stream.collector.server import build_app
    except ImportError as exc:  # pragma: no cover
        pytest.skip(f"the collector is not importable: {exc}")
    publisher = FakePublisher()
    runner, url = await serve(build_app(settings(), publisher))
    try:
        report = await simulate(url, max_events=250)
    finally:
        await runner.cleanup()
    assert report.sent == report.accepted == len(publisher.events) == 250
    assert report.rejected == report.failed_requests == 0
    assert sum(report.events.values()) == 250
    assert {e["source"] for e in publisher.events} == {"web"}
    assert all(e["visitor_id"] and e["user_agent"] for e in publisher.events)


class FakeCollector:
    """Answers like the collector; the first `failures` requests get a 503."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/batch", self.batch)
        return app

    async def batch(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.requests.append((request.headers.get("Authorization", ""), body))
        if len(self.requests) <= self.failures:
            return web.json_response({"success": False, "error": "retry later"}, status=503)
        count = len(body["batch"])
        return web.json_response({"success": True, "accepted": count, "rejected": 0})


async def test_batches_use_basic_auth_and_retries_keep_message_ids():
    collector = FakeCollector(failures=1)
    runner, url = await serve(collector.app())
    try:
        report = await simulate(url, max_events=100, concurrency=1)
    finally:
        await runner.cleanup()
    auth, first = collector.requests[0]
    assert auth == "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert "sentAt" in first and len(first["batch"]) == 20
    retried = collector.requests[1][1]
    assert [c["messageId"] for c in retried["batch"]] == [c["messageId"] for c in first["batch"]]
    assert report.sent == report.accepted == 100
    assert report.failed_requests == 0


async def test_live_timestamps_follow_the_clock_and_history_keeps_its_own():
    collector = FakeCollector()
    runner, url = await serve(collector.app())
    try:
        await simulate(url, max_events=40)
        live = [c for _, body in collector.requests for c in body["batch"]]
        collector.requests.clear()
        await simulate(url, max_events=40, base_time_ms=BASE)
        historic = [c for _, body in collector.requests for c in body["batch"]]
    finally:
        await runner.cleanup()
    sent_at = parse_iso_ms(collector.requests[0][1]["sentAt"])
    assert all(abs(parse_iso_ms(c["timestamp"]) - sent_at) < 60_000 for c in live)
    assert all(BASE <= parse_iso_ms(c["timestamp"]) < BASE + 3_600_000 for c in historic)


async def test_rate_and_stop_end_the_run():
    collector = FakeCollector()
    runner, url = await serve(collector.app())
    stop = threading.Event()
    try:
        asyncio.get_running_loop().call_later(0.5, stop.set)
        report = await simulate(url, rate=200, stop=stop)
    finally:
        await runner.cleanup()
    assert 60 <= report.sent <= 160  # ~100 in 0.5 s
    assert report.seconds < 2
    assert max(len(body["batch"]) for _, body in collector.requests) <= 20


async def test_a_refused_write_key_ends_the_run_with_the_reason():
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"success": False, "error": "unknown write key"}, status=401)

    app = web.Application()
    app.router.add_post("/v1/batch", refuse)
    runner, url = await serve(app)
    try:
        report = await simulate(url, duration=10)
    finally:
        await runner.cleanup()
    assert report.seconds < 3 and report.accepted == 0
    assert report.failed_requests >= 8  # never retried: a refusal stays a refusal
    assert "unknown write key" in report.last_error


async def test_an_unreachable_collector_ends_the_run_soon():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = await simulate(f"http://127.0.0.1:{port}", duration=30)
    assert report.seconds < 5
    assert report.accepted == 0 and report.failed_requests > 0
    assert f"127.0.0.1:{port}" in report.last_error


async def test_to_kafka_produces_event_records_keyed_by_visitor(monkeypatch):
    import aiokafka

    class FakeProducer:
        sent: list[tuple[str, bytes, bytes]] = []

        def __init__(self, **config) -> None:
            assert config["acks"] == "all"

        async def start(self) -> None: ...
        async def stop(self) -> None: ...

        async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future:
            self.sent.append((topic, key, value))
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", FakeProducer)
    report = await simulate("", max_events=60, to_kafka=True)
    assert report.accepted == 60 and report.rejected == 0
    topics = {topic for topic, _, _ in FakeProducer.sent}
    assert topics == {settings().topic("clickstream.events")}
    for _, key, value in FakeProducer.sent:
        record = orjson.loads(value)
        assert set(record) == set(EventRecord.__annotations__)
        assert key.decode() == record["visitor_id"] and record["source"] == "web"
