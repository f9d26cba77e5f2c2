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

from tests.support.pipeline import Pipeline, free_port, start_pipeline

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NPM = Path(__file__).resolve().parent / "npm" / "node_modules"
SEGMENT_KEY, RUDDER_KEY, SNOWPLOW_APP = "segment-write-key", "rudder-write-key", "shop-web"
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


@pytest.fixture(scope="module")
def shop(npm_packages):
    running = Shop({})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, shop):
    running = start_pipeline(
        tmp_path_factory.mktemp("sdk-dropin"),
        CLICKSTREAM_WRITE_KEYS=f"{SEGMENT_KEY}:segment,{RUDDER_KEY}:rudderstack",
        CLICKSTREAM_SNOWPLOW_APP_IDS=f"{SNOWPLOW_APP}:snowplow",
        CLICKSTREAM_CORS_ORIGINS=shop.origin,
    )
    for sdk in WALKS:
        shop.pages[f"/{sdk}.html"] = page_html(sdk, running.collector, shop.origin)
    yield running
    running.stop()


class Visit:
    def __init__(self, sdk: str) -> None:
        self.sdk = sdk
        self.anonymous_id = ""
        self.errors: list[str] = []
        self.console: list[str] = []
        self.failed: list[str] = []


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


def walk(browser, shop: Shop, sdk: str) -> Visit:
    visit = Visit(sdk)
    context = browser.new_context()
    page = context.new_page()
    page.on("pageerror", lambda exc: visit.errors.append(str(exc)))
    page.on("console", lambda msg: visit.console.append(f"{msg.type}: {msg.text}"))
    page.on("requestfailed", lambda r: visit.failed.append(f"{r.url} {r.failure}"))
    try:
        page.goto(f"{shop.origin}/{sdk}.html")
        page.wait_for_function(READY[sdk], timeout=15_000)
        visit.anonymous_id = page.evaluate(ANONYMOUS_ID[sdk])
        page.evaluate(f"() => {{ {WALKS[sdk]} }}")
        page.wait_for_timeout(3_000)  # let the SDK's queue deliver before the context closes
    finally:
        context.close()
    return visit


@pytest.fixture(scope="module")
def visits(browser, shop, pipeline) -> dict[str, Visit]:
    return {sdk: walk(browser, shop, sdk) for sdk in WALKS}


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
