"""tracker.js in a real (headless) Chromium against a tiny recording collector.

A small aiohttp app in a background thread serves stream/static (the minified
build at /tracker.js, the readable source at /tracker.src.js, the demo store at
/demo/) plus tests/browser/pages at /pages/, and records every POST /v1/batch.
"""

import asyncio
import base64
import gzip
import json
import re
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "stream" / "static"
PAGES = Path(__file__).resolve().parent / "pages"


# ---------------------------------------------------------------- helpers


def wait_until(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Poll predicate() until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# ---------------------------------------------------------------- test server


class Collector:
    """Serves the static files and records batches, optionally failing on demand."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = []  # {"status", "headers", "body", "t"}
        self.fail_next = 0  # answer this many batch POSTs with fail_status
        self.fail_status = 503
        self.url = ""
        self.port = 0

    # -- control / inspection (test thread)

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.fail_next = 0
            self.fail_status = 503

    def fail(self, n, status=503):
        with self._lock:
            self.fail_next = n
            self.fail_status = status

    def records(self, write_key=None):
        with self._lock:
            recs = list(self.requests)
        return [r for r in recs if write_key is None or r["body"].get("writeKey") == write_key]

    def calls(self, write_key=None):
        """Every call from accepted (2xx) requests, in arrival order."""
        return [c for r in self.records(write_key) if r["status"] < 300 for c in r["body"]["batch"]]

    def events(self, write_key=None):
        return [c["event"] for c in self.calls(write_key) if c["type"] == "track"]

    # -- aiohttp side

    async def batch(self, request):
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        body = json.loads(raw)  # text/plain (beacon) and application/json alike
        with self._lock:
            status = 200
            if self.fail_next > 0:
                self.fail_next -= 1
                status = self.fail_status
            self.requests.append(
                {
                    "status": status,
                    "headers": dict(request.headers),
                    "body": body,
                    "t": time.monotonic(),
                }
            )
        if status >= 300:
            return web.json_response({"success": False}, status=status)
        return web.json_response({"success": True})

    @web.middleware
    async def cors(self, request, handler):
        # Lets a page on another origin post batches (cross-origin test).
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":
            resp = web.Response(status=204)
        else:
            resp = await handler(request)
        if origin:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            resp.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            resp.headers["Vary"] = "Origin"
        return resp

    def app(self):
        app = web.Application(middlewares=[self.cors])

        def file(path):
            async def handler(_request):
                return web.FileResponse(path, headers={"Cache-Control": "no-store"})

            return handler

        app.router.add_post("/v1/batch", self.batch)
        app.router.add_route("OPTIONS", "/v1/batch", lambda r: web.Response(status=204))
        app.router.add_get("/tracker.js", file(STATIC / "tracker.min.js"))
        app.router.add_get("/tracker.src.js", file(STATIC / "tracker.js"))
        app.router.add_static("/demo/", STATIC / "demo")
        app.router.add_static("/pages/", PAGES)
        return app


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(c.app(), access_log=None)
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        c.port = runner.addresses[0][1]
        c.url = f"http://127.0.0.1:{c.port}"
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="tracker-test-collector", daemon=True)
    thread.start()
    assert started.wait(10), "test collector did not start"
    yield c
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def server(collector):
    collector.reset()
    yield collector
    collector.reset()


def track_page(server, key, **attrs):
    """URL of the generic test page with tracker attributes in the query string."""
    qs = "&".join(f"{k.replace('_', '-')}={v}" for k, v in {"key": key, **attrs}.items())
    return f"{server.url}/pages/track.html?{qs}"


def local_storage(page, key):
    return page.evaluate("k => localStorage.getItem(k)", key)


# ---------------------------------------------------------------- demo funnel


FUNNEL = [
    "Product List Viewed",
    "Products Searched",
    "Product List Viewed",
    "Product Viewed",
    "Product Added",
    "Product Reviewed",
    "Cart Viewed",
    "Checkout Started",
    "Checkout Step Completed",
    "Payment Info Entered",
    "Order Completed",
]


def test_demo_storefront_funnel(server, page, page_errors):
    base = server.url + "/demo/"
    page.goto(base + "index.html")
    page.fill("#search-input", "mug")
    page.click("#search-button")
    page.click("#product-link-p-1001")
    page.wait_for_load_state("load")  # async tracker has run once "load" fires
    page.fill("#quantity", "2")
    page.click("#add-to-cart")
    page.select_option("#review-rating", "4")
    page.fill("#review-body", "Keeps coffee warm.")
    page.click("#submit-review")
    page.click("#cart-link")
    page.wait_for_load_state("load")
    page.click("#checkout")
    page.wait_for_url("**/checkout.html")
    page.wait_for_load_state("load")
    page.fill("#email", "Ada@Example.com")
    page.fill("#name", "Ada Lovelace")
    page.fill("#address", "12 Analytical Engine Way")
    page.fill("#card-number", "4242 4242 4242 4242")
    page.click("#place-order")
    page.locator("#order-confirmation").wait_for(state="visible")

    wait_until(
        lambda: "Order Completed" in server.events("dev-write-key"), message="Order Completed"
    )
    # Calls from different pages travel in different requests (fetch or
    # beacon), so order them by their own timestamps; the sort is stable.
    calls = sorted(server.calls("dev-write-key"), key=lambda c: c["timestamp"])

    assert len({c["anonymousId"] for c in calls}) == 1
    ids = [c["messageId"] for c in calls]
    assert len(ids) == len(set(ids)), "messageIds must be unique"

    pages = [c for c in calls if c["type"] == "page"]
    assert [p["context"]["page"]["url"] for p in pages] == [
        base + "index.html",
        base + "product.html?id=p-1001",
        base + "cart.html",
        base + "checkout.html",
    ]
    assert pages[1]["context"]["page"]["referrer"] == base + "index.html"
    assert pages[1]["properties"]["path"] == "/demo/product.html"
    assert pages[1]["properties"]["search"] == "?id=p-1001"

    tracks = [c for c in calls if c["type"] == "track" and c["event"] != "Page Ping"]
    assert [t["event"] for t in tracks] == FUNNEL
    by_event = {t["event"]: t["properties"] for t in tracks}
    assert by_event["Products Searched"] == {"query": "mug"}
    added = by_event["Product Added"]
    assert {
        k: added[k] for k in ("product_id", "sku", "name", "price", "quantity", "currency")
    } == {
        "product_id": "p-1001",
        "sku": "MUG-MID-12",
        "name": "Midnight Mug",
        "price": 14.0,
        "quantity": 2,
        "currency": "USD",
    }
    assert by_event["Product Reviewed"]["rating"] == 4
    order = by_event["Order Completed"]
    assert order["order_id"].startswith("ord-")
    assert order["revenue"] == 28.0 and order["currency"] == "USD"
    assert [p["product_id"] for p in order["products"]] == ["p-1001"]

    identifies = [c for c in calls if c["type"] == "identify"]
    assert len(identifies) == 1
    ident = identifies[0]
    assert ident["userId"].startswith("user-")
    assert ident["traits"]["email"] == "ada@example.com"
    # Everything after identify carries the user id.
    assert next(t for t in tracks if t["event"] == "Order Completed")["userId"] == ident["userId"]

    # Engaged time flushed when pages were left, if any, is whole seconds.
    for ping in (c for c in calls if c.get("event") == "Page Ping"):
        assert isinstance(ping["properties"]["engaged_seconds"], int)
        assert ping["properties"]["engaged_seconds"] >= 1

    ctx = calls[0]["context"]
    assert ctx["library"] == {"name": "clickstream-tracker.js", "version": "1"}
    assert ctx["userAgent"] and ctx["locale"]
    assert set(ctx["screen"]) == {"width", "height"}
    assert set(ctx["page"]) >= {"url", "path", "referrer", "title", "search"}
    for c in calls:
        assert c["timestamp"].endswith("Z") and "properties" in c

    recs = server.records("dev-write-key")
    fetched = [r for r in recs if "Authorization" in r["headers"]]
    assert fetched, "regular flushes use fetch with HTTP Basic auth"
    expected_auth = "Basic " + base64.b64encode(b"dev-write-key:").decode()
    assert all(r["headers"]["Authorization"] == expected_auth for r in fetched)
    assert all(r["body"]["sentAt"].endswith("Z") for r in recs)
    assert page_errors == []


# ---------------------------------------------------------------- SPA routing


@pytest.mark.parametrize("src", ["/tracker.js", "/tracker.src.js"], ids=["min", "source"])
def test_spa_navigation_page_views_and_dedupe(server, page, page_errors, src):
    key = "spa-" + src.strip("/")
    url = track_page(server, key, src=src, ping_seconds=0)
    page.goto(url)
    page.evaluate("""() => {
        history.pushState({}, "", "/pages/app/step-2");
        history.pushState({}, "", "/pages/app/step-2");      // same URL: deduped
        history.replaceState({}, "", "/pages/app/step-2");   // same URL: deduped
        history.pushState({}, "", "/pages/app/step-2#faq");  // hash only: not a view
        history.pushState({}, "", "/pages/app/step-3?tab=b&utm_source=news&utm_campaign=spring");
    }""")
    page.go_back()  # popstate -> back to step-2#faq, a different route from step-3

    expected = [
        url,
        server.url + "/pages/app/step-2",
        server.url + "/pages/app/step-3?tab=b&utm_source=news&utm_campaign=spring",
        server.url + "/pages/app/step-2#faq",
    ]

    def page_calls():
        return [c for c in server.calls(key) if c["type"] == "page"]

    wait_until(lambda: len(page_calls()) >= 4, message="4 page calls")
    time.sleep(1.3)  # one more flush interval: no extra page views may show up
    pages = page_calls()
    assert [p["context"]["page"]["url"] for p in pages] == expected
    # SPA views name the previous route as referrer.
    assert pages[1]["context"]["page"]["referrer"] == url
    assert pages[2]["context"]["page"]["referrer"] == expected[1]
    assert pages[2]["context"]["campaign"] == {"source": "news", "name": "spring"}
    assert pages[2]["properties"]["path"] == "/pages/app/step-3"

    # The call queued before the script loaded is replayed after the first view.
    calls = server.calls(key)
    assert [c.get("event") or c["type"] for c in calls][:2] == ["page", "Queued Before Load"]
    assert calls[1]["properties"] == {"n": 1}
    assert page_errors == []


# ---------------------------------------------------------------- engaged time


def wiggle(page, seconds):
    """Simulate an active visitor: mouse moves every 100 ms."""
    end = time.monotonic() + seconds
    x = 10
    while time.monotonic() < end:
        x = 10 + (x + 37) % 400
        page.mouse.move(x, 200)
        time.sleep(0.1)


def test_engaged_time_page_pings(server, page):
    key = "ping"
    url = track_page(server, key, ping_seconds=1)
    page.goto(url)
    time.sleep(1.5)  # idle visitor: no pings
    assert not [e for e in server.events(key) if e == "Page Ping"]

    wiggle(page, 3.5)

    def pings():
        return [c for c in server.calls(key) if c.get("event") == "Page Ping"]

    wait_until(
        lambda: sum(p["properties"]["engaged_seconds"] for p in pings()) >= 2, message="pings"
    )
    for p in pings():
        secs = p["properties"]["engaged_seconds"]
        assert isinstance(secs, int) and 1 <= secs <= 3
        assert p["context"]["page"]["url"] == url
        assert p["type"] == "track"


def test_engaged_time_flushed_on_page_hide(server, page):
    key = "ping-hide"
    url = track_page(server, key, ping_seconds=30)  # no regular ping during the test
    page.goto(url)
    wiggle(page, 2.6)
    page.goto("about:blank")  # pagehide: the accumulated time goes out in a beacon
    pings = wait_until(
        lambda: [c for c in server.calls(key) if c.get("event") == "Page Ping"],
        message="final ping",
    )
    assert len(pings) == 1
    assert 2 <= pings[0]["properties"]["engaged_seconds"] <= 4
    assert pings[0]["context"]["page"]["url"] == url


# ---------------------------------------------------------------- beacons


def test_sendbeacon_flush_on_hide(server, context, page):
    key = "beacon"
    # Count sendBeacon calls in the page.
    context.add_init_script("""
        window.__beacons = 0;
        const orig = navigator.sendBeacon.bind(navigator);
        navigator.sendBeacon = (url, data) => { window.__beacons++; return orig(url, data); };
    """)
    page.goto(track_page(server, key, ping_seconds=0))
    wait_until(lambda: server.calls(key), message="initial page call")

    # visibilitychange -> hidden (tab switch / app switch on mobile)
    page.evaluate("""() => {
        clickstream.track("Tab Hidden", {x: 1});
        Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    assert page.evaluate("window.__beacons") == 1
    rec = wait_until(
        lambda: [
            r for r in server.records(key) if r["body"]["batch"][0].get("event") == "Tab Hidden"
        ],
        timeout=3,
        message="beacon for Tab Hidden",
    )[0]
    assert rec["headers"]["Content-Type"].startswith("text/plain")
    assert "Authorization" not in rec["headers"]  # beacons cannot set headers...
    assert rec["body"]["writeKey"] == key  # ...so the key rides in the body
    assert local_storage(page, "_cs_q") is None  # beaconed calls left the queue

    # A real navigation away fires pagehide.
    page.evaluate("""() => {
        Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "visible"});
        clickstream.track("Leaving");
    }""")
    page.goto("about:blank")
    rec = wait_until(
        lambda: [r for r in server.records(key) if r["body"]["batch"][0].get("event") == "Leaving"],
        timeout=3,
        message="beacon for Leaving",
    )[0]
    assert rec["headers"]["Content-Type"].startswith("text/plain")
    assert "Authorization" not in rec["headers"]


# ---------------------------------------------------------------- retries


def test_retry_after_503_delivers_every_message(server, page):
    key = "retry"
    server.fail(1, 503)
    page.goto(track_page(server, key, ping_seconds=0))
    page.evaluate("() => { for (let i = 0; i < 3; i++) clickstream.track('Retry ' + i); }")

    def delivered_ids():
        return {c["messageId"] for c in server.calls(key)}

    wait_until(lambda: server.records(key), message="first attempt")
    # The tab goes to the background during the backoff: no beacon (it would
    # likely be lost too), and the retry timer keeps running.
    page.evaluate("""() => {
        Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    recs = wait_until(
        lambda: len(server.records(key)) >= 2 and server.records(key), message="retry"
    )
    failed = recs[0]
    assert failed["status"] == 503
    assert all("Authorization" in r["headers"] for r in recs), "retries use fetch, not beacons"
    sent_ids = {c["messageId"] for c in failed["body"]["batch"]}
    wait_until(lambda: sent_ids <= delivered_ids(), message="all failed ids redelivered")
    assert recs[1]["t"] - failed["t"] >= 0.9, "first retry waits ~1 s"
    # Every messageId ever attempted arrives (duplicates are fine downstream).
    attempted = {c["messageId"] for r in server.records(key) for c in r["body"]["batch"]}
    wait_until(lambda: attempted <= delivered_ids(), message="complete set")
    assert {"Retry 0", "Retry 1", "Retry 2"} <= set(server.events(key))
    wait_until(lambda: local_storage(page, "_cs_q") is None, message="queue drained")


def test_4xx_is_not_retried(server, page):
    key = "bad-request"
    server.fail(1, 400)
    page.goto(track_page(server, key, ping_seconds=0))
    wait_until(lambda: server.records(key), message="first attempt")
    time.sleep(2.2)  # longer than the first two backoff steps
    assert [r["status"] for r in server.records(key)] == [400]
    assert local_storage(page, "_cs_q") is None


def test_unsent_events_survive_reload(server, page):
    key = "offline"
    server.fail(1000, 503)  # collector down
    page.goto(track_page(server, key, ping_seconds=0))
    page.evaluate("() => ['Offline 1', 'Offline 2'].forEach(e => clickstream.track(e))")
    wait_until(lambda: server.records(key), message="failed attempt")
    stored = json.loads(wait_until(lambda: local_storage(page, "_cs_q"), message="stored queue"))
    stored_ids = {c["messageId"] for c in stored}
    assert {c.get("event") for c in stored} >= {"Offline 1", "Offline 2"}

    server.fail(0)  # collector back; the page in backoff keeps the queue for the next load
    page.reload()
    wait_until(lambda: stored_ids <= {c["messageId"] for c in server.calls(key)}, message="replay")
    # The reloaded page's own view arrives too, under the same anonymous id.
    calls = server.calls(key)
    assert len([c for c in calls if c["type"] == "page"]) >= 2
    assert len({c["anonymousId"] for c in calls}) == 1


def test_network_offline_then_online(server, context, page):
    key = "net"
    page.goto(track_page(server, key, ping_seconds=0))
    wait_until(lambda: server.calls(key), message="page call")
    context.set_offline(True)
    page.evaluate("() => clickstream.track('While Offline')")
    time.sleep(1.5)  # the flush fails and backs off
    assert "While Offline" not in server.events(key)
    context.set_offline(False)  # the 'online' event (or the backoff timer) flushes
    wait_until(
        lambda: "While Offline" in server.events(key), timeout=6, message="delivery after online"
    )


# ---------------------------------------------------------------- identity, DNT, safety


def test_ids_persist_and_each_store_restores_the_other(server, context, page):
    key = "ids"
    url = track_page(server, key, ping_seconds=0)
    page.goto(url)
    aid = page.evaluate("clickstream.anonymousId()")
    cookie = next(c for c in context.cookies() if c["name"] == "_cs_aid")
    assert cookie["value"] == aid and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert cookie["expires"] - time.time() > 360 * 86400  # ~1 year
    assert local_storage(page, "_cs_aid") == aid
    page.evaluate("() => clickstream.identify('u-42', {plan: 'pro'})")

    context.clear_cookies()  # cookie gone: localStorage restores it
    page.reload()
    assert page.evaluate("clickstream.anonymousId()") == aid
    assert next(c for c in context.cookies() if c["name"] == "_cs_aid")["value"] == aid

    page.evaluate(
        "() => { localStorage.removeItem('_cs_aid'); localStorage.removeItem('_cs_uid'); }"
    )
    page.reload()  # localStorage gone: the cookie restores it
    assert local_storage(page, "_cs_aid") == aid
    assert local_storage(page, "_cs_uid") == "u-42"

    wait_until(
        lambda: len([c for c in server.calls(key) if c["type"] == "page"]) >= 3, message="pages"
    )
    pages = [c for c in server.calls(key) if c["type"] == "page"]
    assert {p["anonymousId"] for p in pages} == {aid}
    assert "userId" not in pages[0]
    assert pages[1]["userId"] == pages[2]["userId"] == "u-42"
    ident = next(c for c in server.calls(key) if c["type"] == "identify")
    assert ident["traits"] == {"plan": "pro"}


def test_do_not_track_only_when_opted_in(server, context, page):
    context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'})"
    )
    page.goto(track_page(server, "dnt-respected", respect_dnt="true"))
    page.evaluate("() => clickstream.track('Should Not Send')")
    page.goto(track_page(server, "dnt-ignored"))  # default: DNT is not honoured
    wait_until(lambda: server.calls("dnt-ignored"), message="tracking without opt-in")
    time.sleep(0.5)
    assert server.records("dnt-respected") == []
    # Only the second page set the anonymous-id cookie.
    assert len([c for c in context.cookies() if c["name"] == "_cs_aid"]) == 1


def test_public_methods_never_throw(server, page, page_errors):
    key = "safe"
    page.goto(track_page(server, key, ping_seconds=0))
    result = page.evaluate("""() => {
        const loop = {}; loop.self = loop;
        clickstream.track("Circular", loop);
        clickstream.track();
        clickstream.track(null, 5);
        clickstream.identify();
        clickstream.identify(null, "traits?");
        clickstream.page(42, "x");
        clickstream.alias();
        clickstream.push(["nope", 1], ["track", "Pushed After Load", {ok: true}]);
        history.pushState(null, "", location.href);  // the wrapped history API still works
        return "ok";
    }""")
    assert result == "ok"
    wait_until(lambda: "Pushed After Load" in server.events(key), message="pushed call")
    assert "Circular" not in server.events(key)
    assert page_errors == []


def test_cross_origin_collector(server, page, page_errors):
    """The page (localhost) and the collector (127.0.0.1) are different origins."""
    key = "cors"
    page_url = track_page(server, key, ping_seconds=0, host=server.url).replace(
        "127.0.0.1", "localhost", 1
    )
    page.goto(page_url)
    call = wait_until(lambda: server.calls(key), message="cross-origin batch")[0]
    assert call["context"]["page"]["url"] == page_url
    assert server.records(key)[0]["headers"]["Origin"] == f"http://localhost:{server.port}"
    assert page_errors == []


def test_message_ids_without_crypto_randomuuid(server, context, page):
    """Plain-http sites have no crypto.randomUUID: the fallback still makes v4 UUIDs."""
    key = "uuid-fallback"
    context.add_init_script("delete Crypto.prototype.randomUUID")
    page.goto(track_page(server, key, ping_seconds=0))
    assert page.evaluate("typeof crypto.randomUUID") == "undefined"
    page.evaluate("() => { for (let i = 0; i < 5; i++) clickstream.track('E' + i); }")
    calls = wait_until(lambda: len(server.calls(key)) >= 7 and server.calls(key), message="calls")
    v4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    ids = [c["messageId"] for c in calls] + [page.evaluate("clickstream.anonymousId()")]
    assert all(v4.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------- consent


def our_keys(context, page):
    """The tracker's keys in cookies and localStorage."""
    names = {c["name"] for c in context.cookies()}
    names |= set(page.evaluate("Object.keys(localStorage)"))
    return {n for n in names if n.startswith("_cs_")}


def test_consent_required_stores_nothing_and_sends_no_ids(server, context, page, page_errors):
    key = "consent-required"
    server.fail(100)  # undeliverable: the unsent queue would normally go to localStorage
    page.goto(track_page(server, key, ping_seconds=0, consent_required="true"))
    page.evaluate(
        "() => { clickstream.identify('u1', {email: 'a@b.c'}); clickstream.alias('u2'); }"
    )
    wait_until(lambda: server.records(key), message="first attempt")
    assert our_keys(context, page) == set()
    server.fail(0)
    page.evaluate("() => clickstream.flush()")
    calls = wait_until(lambda: server.calls(key), message="delivery")
    assert [c["type"] for c in calls] == ["page", "track"]  # identify and alias not sent
    for c in calls:
        assert "anonymousId" not in c and "userId" not in c
        assert c["context"]["consent"] == {
            "categoryPreferences": {"analytics": False, "marketing": False}
        }
    assert page.evaluate("clickstream.anonymousId()") is None
    assert our_keys(context, page) == set() and page_errors == []


def test_withdrawing_deletes_the_stored_id_and_queue(server, context, page):
    key = "consent-withdrawn"
    page.goto(track_page(server, key, ping_seconds=0))
    wait_until(lambda: server.calls(key), message="page call")
    aid = page.evaluate("clickstream.anonymousId()")
    assert "_cs_aid" in our_keys(context, page)
    server.fail(100)
    page.evaluate("() => clickstream.track('Before')")
    wait_until(lambda: local_storage(page, "_cs_q"), message="stored queue")
    page.evaluate("() => { clickstream.consent({analytics: false}); clickstream.track('After'); }")
    assert our_keys(context, page) == set()  # id, and the unsent queue, gone at once
    server.fail(0)
    page.evaluate("() => clickstream.flush()")
    wait_until(lambda: "After" in server.events(key), message="delivery")
    by_event = {c.get("event"): c for c in server.calls(key)}
    # Made under consent, sent as made; the next call carries the new choice.
    assert (
        by_event["Before"]["anonymousId"] == aid and "consent" not in by_event["Before"]["context"]
    )
    assert "anonymousId" not in by_event["After"]
    assert by_event["After"]["context"]["consent"]["categoryPreferences"] == {
        "analytics": False,
        "marketing": False,
    }
    # Granting again makes a new id (the old one was deleted, not kept aside).
    page.evaluate("() => clickstream.consent({analytics: true, marketing: true})")
    assert page.evaluate("clickstream.anonymousId()") not in (None, aid)
    assert "_cs_aid" in our_keys(context, page)
