"""The trackers storefronts already run, unmodified, against a real pipeline.

Segment analytics.js 2.0, RudderStack's JS SDK v3 and Snowplow's browser tracker (with
its e-commerce plugin), each the npm package at the version pinned in
tests/browser/npm/package.json, are loaded in headless Chromium by a shop page served
from another origin (http://localhost:<port>) than the collector
(http://127.0.0.1:<port>), with CLICKSTREAM_CORS_ORIGINS naming only the shop: CORS is
enforced by the browser, as on a real storefront. Each page includes the snippet of
README.md ("Browser trackers, unchanged") as written there, hosts swapped.

Each shopper views a page, views a product, adds it to the cart, identifies and
orders; the rows must be in clickstream.events with the SDK's anonymous id, the user
id, the event names and properties, and the visitor must reach `purchase`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.pipeline import Pipeline, free_port, prestart

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NPM = Path(__file__).resolve().parent / "npm" / "node_modules"
SEGMENT_KEY, RUDDER_KEY, SNOWPLOW_APP = "segment-write-key", "rudder-write-key", "shop-web"
# The same snippets with one load option more, on sources of their own.
SEGMENT_BATCH_KEY, RUDDER_BEACON_KEY = "segment-batch-key", "rudder-beacon-key"
# Where the README's snippets load each SDK from on the shop -> the npm package's file.
SDK_FILES = {
    "/js/segment/standalone.js": "@segment/analytics-next/dist/umd/standalone.js",
    "/js/rudderstack/index.js": "@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js",
    "/js/snowplow/browser-tracker.umd.min.js": "@snowplow/browser-tracker/dist/index.umd.min.js",
    "/js/snowplow/ecommerce.umd.min.js": (
        "@snowplow/browser-plugin-snowplow-ecommerce/dist/index.umd.min.js"
    ),
}
STAGES = ("awareness", "consideration", "decision", "purchase", "retention", "advocacy")
PRODUCT = {"product_id": "sku-42", "name": "Espresso Cup", "price": 12.5, "currency": "EUR"}
ORDER_ID = "order-{sdk}-1"

# The storefront's own calls, written against each SDK's public API.
WALKS = {
    "segment": """
        analytics.track("Product Viewed", {product_id: "sku-42", name: "Espresso Cup",
                                           price: 12.5, currency: "EUR"});
        analytics.track("Product Added", {product_id: "sku-42", name: "Espresso Cup",
                                          price: 12.5, currency: "EUR", quantity: 2});
        analytics.identify("user-segment", {email: "segment@example.com"});
        analytics.group("acme", {name: "Acme"});
        analytics.track("Product List Viewed", {});
        analytics.track("Order Completed", {order_id: "order-segment-1", revenue: 25,
            currency: "EUR", products: [{product_id: "sku-42", price: 12.5, quantity: 2}]});
    """,
    "rudderstack": """
        rudderanalytics.track("Product Viewed", {product_id: "sku-42", name: "Espresso Cup",
                                                 price: 12.5, currency: "EUR"});
        rudderanalytics.track("Product Added", {product_id: "sku-42", name: "Espresso Cup",
                                                price: 12.5, currency: "EUR", quantity: 2});
        rudderanalytics.identify("user-rudderstack", {email: "rudder@example.com"});
        rudderanalytics.group("acme", {name: "Acme"});
        rudderanalytics.track("Order Completed", {order_id: "order-rudderstack-1", revenue: 25,
            currency: "EUR", products: [{product_id: "sku-42", price: 12.5, quantity: 2}]});
    """,
    "snowplow": """
        const sp = snowplowBrowserTracking, ecom = snowplowEcommerceAccelerator;
        const product = {id: "sku-42", name: "Espresso Cup", price: 12.5, currency: "EUR",
                         category: "Cups"};
        ecom.trackProductView(product);
        ecom.trackAddToCart({products: [{...product, quantity: 2}], total_value: 25,
                             currency: "EUR"});
        sp.setUserId("user-snowplow");
        sp.trackStructEvent({category: "account", action: "Signed In", label: "email"});
        ecom.trackCheckoutStep({step: 1});
        ecom.trackTransaction({transaction_id: "order-snowplow-1", revenue: 25, currency: "EUR",
                               payment_method: "card", products: [{...product, quantity: 2}]});
    """,
}


def snippet(name: str, collector: str, shop: str) -> str:
    """README's snippet for one tracker, as written, with the hosts and keys swapped."""
    text = README.read_text()
    found = re.search(rf"<!-- tested: {name} -->\n```html\n(.*?)```", text, re.S)
    assert found, f"README.md has no snippet marked <!-- tested: {name} -->"
    key = {"segment": SEGMENT_KEY, "rudderstack": RUDDER_KEY}.get(name, "")
    return (
        found.group(1)
        .replace("https://collector.example.com", collector)
        .replace("https://shop.example.com", shop)
        .replace("YOUR_WRITE_KEY", key)
    )


class Shop:
    """The storefront: another origin than the collector, serving the pages and the SDKs."""

    def __init__(self, pages: dict[str, str]) -> None:
        self.pages = pages
        self.port = free_port()
        self.origin = f"http://localhost:{self.port}"
        shop = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                if path in shop.pages:
                    self._send(shop.pages[path].encode(), "text/html; charset=utf-8")
                elif path == "/favicon.ico":
                    self._send(b"", "image/x-icon")
                elif path in SDK_FILES:
                    self._send((NPM / SDK_FILES[path]).read_bytes(), "application/javascript")
                else:
                    self.send_error(404)

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), partial(Handler))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def page_html(sdk: str, collector: str, shop: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Espresso Cup – {sdk} shop</title>
{snippet(sdk, collector, shop)}
</head><body><h1>Espresso Cup</h1>
<img id="pixel" alt="">
</body></html>"""


@pytest.fixture(scope="module")
def npm_packages():
    missing = [f for f in SDK_FILES.values() if not (NPM / f).is_file()]
    if missing:
        pytest.skip(
            f"npm packages missing ({missing[0]}): run `python tests/setup_tools.py` "
            "(npm ci in tests/browser/npm)"
        )


SHOPS: list[Shop] = []  # the shop, opened when its pipeline starts (it names its origin)


def open_shop() -> dict[str, str]:
    SHOPS.append(Shop({}))
    return {"CLICKSTREAM_CORS_ORIGINS": SHOPS[-1].origin}


PIPELINE = prestart(
    __name__,
    "sdk-dropin",
    more=open_shop,
    CLICKSTREAM_WRITE_KEYS=(
        f"{SEGMENT_KEY}:segment,{RUDDER_KEY}:rudderstack,"
        f"{SEGMENT_BATCH_KEY}:segment_batch,{RUDDER_BEACON_KEY}:rudder_beacon"
    ),
    CLICKSTREAM_SNOWPLOW_APP_IDS=f"{SNOWPLOW_APP}:snowplow",
)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, npm_packages):
    running = PIPELINE.take(tmp_path_factory)
    shop = SHOPS[-1]
    for sdk in WALKS:
        shop.pages[f"/{sdk}.html"] = page_html(sdk, running.collector, shop.origin)
    segment = page_html("segment", running.collector, shop.origin)
    batching = '{integrations: {"Segment.io": {deliveryStrategy: {strategy: "batching", config: {size: 4, timeout: 300}}}}}'
    shop.pages["/segment-batch.html"] = segment.replace(
        f'analytics.load("{SEGMENT_KEY}");', f'analytics.load("{SEGMENT_BATCH_KEY}", {batching});'
    ).replace(f'analytics._writeKey="{SEGMENT_KEY}"', f'analytics._writeKey="{SEGMENT_BATCH_KEY}"')
    rudder = page_html("rudderstack", running.collector, shop.origin)
    shop.pages["/rudder-beacon.html"] = rudder.replace(
        f'rudderanalytics.load("{RUDDER_KEY}"', f'rudderanalytics.load("{RUDDER_BEACON_KEY}"'
    ).replace("configUrl:", "useBeacon: true, configUrl:")
    shop.pages["/pixel.html"] = PIXEL_PAGE.format(collector=running.collector)
    yield running
    running.stop_later()
    shop.stop()


@pytest.fixture(scope="module")
def shop(pipeline) -> Shop:
    return SHOPS[-1]


PIXEL_ID = "pixel-visitor-1"
PIXEL_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>No-JS shop</title></head>
<body><img id="pixel" alt="" width="1" height="1"
 src="{collector}/i?e=pv&amp;aid=shop-web&amp;p=web&amp;tv=no-js-0.2.0&amp;duid=pixel-visitor-1&amp;eid=5d2f6f1c-1b0e-4c55-9d0a-3a1c2b4d5e6f&amp;url=https%3A%2F%2Fshop.example%2Fnojs&amp;page=No-JS%20shop">
</body></html>"""


class Visit:
    def __init__(self, sdk: str) -> None:
        self.sdk = sdk
        self.anonymous_id = ""
        self.errors: list[str] = []
        self.console: list[str] = []
        self.failed: list[str] = []
        self.in_flight: set = set()  # requests sent and neither answered nor failed yet


READY = {
    "segment": "window.analytics && window.analytics.initialized === true",
    "rudderstack": "window.rudderanalytics && typeof window.rudderanalytics.getAnonymousId"
    " === 'function' && !!window.rudderanalytics.getAnonymousId()",
    "snowplow": "document.cookie.includes('_sp_id')",
}
ANONYMOUS_ID = {
    "segment": "analytics.user().anonymousId()",
    "rudderstack": "rudderanalytics.getAnonymousId()",
    "snowplow": "document.cookie.match(/_sp_id[^=]*=([^.;]+)/)[1]",
}


def walk(context, shop: Shop, sdk: str) -> Visit:
    """The shopper's calls, made; the SDK delivers them in the background."""
    visit = Visit(sdk)
    page = context.new_page()
    page.on("pageerror", lambda exc: visit.errors.append(str(exc)))
    page.on("console", lambda msg: visit.console.append(f"{msg.type}: {msg.text}"))
    page.on("request", lambda r: visit.in_flight.add(r))
    page.on("requestfinished", lambda r: visit.in_flight.discard(r))
    page.on("requestfailed", lambda r: visit.in_flight.discard(r))
    page.on("requestfailed", lambda r: visit.failed.append(f"{r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and visit.failed.append(f"{r.status} {r.url}"))
    page.goto(f"{shop.origin}/{sdk}.html")
    page.wait_for_function(READY[sdk], timeout=15_000)
    visit.anonymous_id = page.evaluate(ANONYMOUS_ID[sdk])
    page.evaluate(f"() => {{ {WALKS[sdk]} }}")
    return visit


def delivered(pipeline: Pipeline, visit: Visit) -> bool:
    """Every call of the walk is stored and the SDK has no request left in flight."""
    got = rows(pipeline, visit.sdk, "type, event")
    return EXPECTED[visit.sdk] <= {r[1] or r[0] for r in got} and not visit.in_flight


@pytest.fixture(scope="module")
def visits(browser, shop, pipeline) -> dict[str, Visit]:
    """The three shoppers at once, each in a browser profile of its own, each page kept
    open until its SDK has delivered (the tests below say what, if it never does)."""
    contexts = {sdk: browser.new_context() for sdk in WALKS}
    try:
        walks = {sdk: walk(contexts[sdk], shop, sdk) for sdk in WALKS}
        page = next(iter(contexts.values())).pages[0]
        deadline, quiet = time.monotonic() + 30, 0
        while time.monotonic() < deadline and quiet < 2:  # twice in a row, 250 ms apart
            done = all(delivered(pipeline, visit) for visit in walks.values())
            quiet = quiet + 1 if done else 0
            page.wait_for_timeout(250)  # the browser's events reach the handlers meanwhile
    finally:
        for context in contexts.values():
            context.close()
    return walks


def rows(pipeline: Pipeline, source: str, columns: str) -> list[list]:
    return pipeline.sql(
        f"SELECT {columns} FROM clickstream.events FINAL WHERE source = '{source}' "
        "ORDER BY ts, _partition, _offset LIMIT 1 BY message_id"
    )


def wait_rows(pipeline: Pipeline, source: str, needed: set[str], timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    got: list[list] = []
    while time.monotonic() < deadline:
        got = rows(pipeline, source, "type, event, anonymous_id, user_id, properties")
        names = {r[1] or r[0] for r in got}
        if needed <= names:
            return got
        time.sleep(0.5)
    raise AssertionError(f"{source}: {sorted({r[1] or r[0] for r in got})}, needed {needed}")


def stage_of(pipeline: Pipeline, visitor: str, timeout: float = 60.0) -> str:
    deadline, stage = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        found = pipeline.sql(
            f"SELECT stage FROM clickstream.visitors FINAL WHERE visitor_id = '{visitor}'"
        )
        stage = found[0][0] if found else None
        if stage in STAGES[3:]:
            return stage
        time.sleep(0.5)
    return stage or ""


EXPECTED = {
    "segment": {
        "page",
        "identify",
        "group",
        "Product Viewed",
        "Product Added",
        "Product List Viewed",
        "Order Completed",
    },
    "rudderstack": {
        "page",
        "identify",
        "group",
        "Product Viewed",
        "Product Added",
        "Order Completed",
    },
    "snowplow": {
        "page",
        "Product Viewed",
        "Product Added",
        "Signed In",
        "Checkout Started",
        "Order Completed",
    },
}


@pytest.mark.parametrize("sdk", list(WALKS))
def test_every_call_arrives_with_ids_and_properties(pipeline, visits, sdk):
    visit = visits[sdk]
    assert visit.anonymous_id, visit.console
    got = wait_rows(pipeline, sdk, EXPECTED[sdk])
    assert not visit.errors, visit.errors
    # nothing refused (CORS, 4xx) and nothing fetched from the SDK vendors' hosts
    assert not visit.failed, visit.failed
    assert not [c for c in visit.console if c.startswith("error")], visit.console
    assert {r[2] for r in got} == {visit.anonymous_id}, got
    by_name = {(r[1] or r[0]): r for r in got}
    user = f"user-{sdk}"
    assert by_name["Order Completed"][3] == user
    viewed = json.loads(by_name["Product Viewed"][4])
    assert {k: viewed.get(k) for k in PRODUCT} == PRODUCT, viewed
    order = json.loads(by_name["Order Completed"][4])
    assert (order["order_id"], order["revenue"], order["currency"]) == (
        ORDER_ID.format(sdk=sdk),
        25,
        "EUR",
    )
    added = json.loads(by_name["Product Added"][4])
    assert (added["product_id"], added["quantity"]) == ("sku-42", 2)


@pytest.mark.parametrize("sdk", list(WALKS))
def test_visitor_reaches_purchase(pipeline, visits, sdk):
    visit = visits[sdk]
    wait_rows(pipeline, sdk, {"Order Completed"})
    assert stage_of(pipeline, visit.anonymous_id) in STAGES[3:]


def test_one_row_per_message_id(pipeline, visits):
    for sdk in WALKS:
        [[count, unique]] = pipeline.sql(
            f"SELECT count(), uniqExact(message_id) FROM clickstream.events FINAL "
            f"WHERE source = '{sdk}'"
        )
        assert count == unique, sdk


def test_snowplow_pixel_from_a_plain_img(browser, shop, pipeline):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{shop.origin}/pixel.html")
        page.wait_for_function("document.getElementById('pixel').complete")
        assert page.evaluate("document.getElementById('pixel').naturalWidth") == 1
    finally:
        context.close()
    pipeline.wait_for(
        "SELECT type, anonymous_id, path, title FROM clickstream.events FINAL "
        f"WHERE source = 'snowplow' AND anonymous_id = '{PIXEL_ID}'",
        [["page", PIXEL_ID, "/nojs", "No-JS shop"]],
    )


def test_segment_batching_and_retries_after_lost_answers(browser, shop, pipeline):
    """analytics.js batching to /v1/b; the first two answers are lost after the collector
    stored the batch (the browser sees a network error), so the SDK sends it again."""
    context = browser.new_context()
    page = context.new_page()
    lost: list[str] = []
    lost_ids: set[str] = set()  # the messages of the batches whose answer was lost
    answered_ids: set[str] = set()  # ... and of those answered 2xx

    def message_ids(request) -> set[str]:
        return {item.get("messageId") for item in (request.post_data_json or {})["batch"]}

    def lose_answer(route) -> None:
        if len(lost) < 2:
            route.fetch()  # the collector gets and stores the batch ...
            lost.append(route.request.url)
            lost_ids.update(message_ids(route.request))
            route.abort()  # ... and its answer never arrives
        else:
            route.continue_()

    def on_answer(response) -> None:
        if response.url.endswith("/v1/b") and response.ok:
            answered_ids.update(message_ids(response.request))

    page.route("**/v1/b", lose_answer)
    page.on("response", on_answer)
    try:
        page.goto(f"{shop.origin}/segment-batch.html")
        page.wait_for_function(READY["segment"], timeout=15_000)
        anonymous_id = page.evaluate(ANONYMOUS_ID["segment"])
        page.evaluate(f"() => {{ {WALKS['segment']} }}")
        # until the SDK has sent every lost batch again (after its backoff) and got an answer
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (len(lost) == 2 and lost_ids <= answered_ids):
            page.wait_for_timeout(250)
    finally:
        context.close()
    assert len(lost) == 2, lost
    assert lost_ids and lost_ids <= answered_ids, (lost_ids, answered_ids)
    got = wait_rows(pipeline, "segment_batch", EXPECTED["segment"])
    assert {r[2] for r in got} == {anonymous_id}
    [[count, unique]] = pipeline.sql(
        "SELECT count(), uniqExact(message_id) FROM clickstream.events FINAL "
        "WHERE source = 'segment_batch'"
    )
    assert count == unique == len(got), (count, unique, len(got))


def test_rudderstack_send_beacon(browser, shop, pipeline):
    """useBeacon: the SDK queues events and sends them with navigator.sendBeacon to
    /beacon/v1/batch?writeKey=..., text/plain, flushed at the latest when the page goes."""
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{shop.origin}/rudder-beacon.html")
        page.wait_for_function(READY["rudderstack"], timeout=15_000)
        anonymous_id = page.evaluate(ANONYMOUS_ID["rudderstack"])
        page.evaluate(f"() => {{ {WALKS['rudderstack']} }}")
        page.wait_for_timeout(1_000)
        page.goto("about:blank")  # pagehide: the beacon queue flushes
    finally:
        context.close()
    got = wait_rows(pipeline, "rudder_beacon", EXPECTED["rudderstack"])
    assert {r[2] for r in got} == {anonymous_id}


def test_snowplow_page_pings_are_engaged_time(browser, shop, pipeline):
    """enableActivityTracking({minimumVisitLength: 10, heartbeatDelay: 10}) of the README
    snippet: after 10 s of activity the tracker pings; each ping is a Page Ping of
    CLICKSTREAM_SNOWPLOW_HEARTBEAT_SECONDS (10) engaged seconds, as tracker.js's are.
    The page runs on Playwright's clock, moved by the test: 12.6 s of activity take no
    more real time than the mouse moves (with 7.5 s there is no ping)."""
    context = browser.new_context()
    page = context.new_page()
    pings: list[str] = []  # the tracker's requests carrying a page ping, once answered

    def answered(request) -> None:
        if '"e":"pp"' in (request.post_data or "") or "e=pp" in request.url:
            pings.append(request.url)

    page.on("requestfinished", answered)
    page.clock.install()
    try:
        page.goto(f"{shop.origin}/snowplow.html")
        page.wait_for_function(READY["snowplow"], timeout=15_000)
        anonymous_id = page.evaluate(ANONYMOUS_ID["snowplow"])
        x = 0
        for _ in range(84):  # 12.6 s of page time, the mouse moving every 150 ms
            x = (x + 37) % 400
            page.mouse.move(100 + x, 200 + x // 2)
            page.clock.run_for(150)
        deadline = time.monotonic() + 10
        while not pings and time.monotonic() < deadline:  # real time: the ping's request
            page.wait_for_timeout(100)
    finally:
        context.close()
    pipeline.wait_for(
        "SELECT event, JSONExtractFloat(properties, 'engaged_seconds') FROM clickstream.events "
        f"FINAL WHERE source = 'snowplow' AND anonymous_id = '{anonymous_id}' "
        "AND event = 'Page Ping' LIMIT 1",
        [["Page Ping", 10]],
    )
