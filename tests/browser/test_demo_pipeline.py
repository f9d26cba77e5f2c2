"""A scripted shopper on the demo store, served by a real pipeline, read back from ClickHouse.

Headless Chromium loads /demo/ from the collector of a real `clickstream run`
(embedded broker + embedded ClickHouse), browses, adds to cart, checks out, gives an
e-mail (identify), places the order and leaves a review. Everything tracker.js sent
must then be in clickstream.events under one anonymous id, in order, and the journey
processor must have taken the visitor to `purchase` or beyond.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest

from tests.support.pipeline import Pipeline, prestart

pytestmark = pytest.mark.browser

DEMO_SOURCE = "demo"  # the source behind the demo pages' data-write-key="dev-write-key"
EMAIL = "Shopper@Example.com"
PRODUCT = "p-1001"
# What the demo sends for this walk (stream/static/demo/demo.js), Page Pings aside.
EXPECTED_TRACKS = [
    "Product List Viewed",  # home
    "Product Viewed",  # product page
    "Product Added",
    "Cart Viewed",  # cart page
    "Checkout Started",
    "Checkout Step Completed",  # checkout page, on "Place order"
    "Payment Info Entered",
    "Order Completed",
    "Product List Viewed",  # back to the shop
    "Product Viewed",
    "Product Reviewed",
]
EXPECTED_PATHS = [
    "/demo/index.html",
    "/demo/product.html",
    "/demo/cart.html",
    "/demo/checkout.html",
    "/demo/index.html",
    "/demo/product.html",
]
STAGES = ("awareness", "consideration", "decision", "purchase", "retention", "advocacy")
PAST_PURCHASE = STAGES[3:]


def fnv1a(text: str) -> str:
    """demo.js's user id hash (32-bit FNV-1a over UTF-16 code units; ASCII here)."""
    h = 0x811C9DC5
    for ch in text:
        h ^= ord(ch)
        h = (h * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


EXPECTED_USER = "user-" + fnv1a(EMAIL.strip().lower())


PIPELINE = prestart(
    __name__, "demo-pipeline", CLICKSTREAM_WRITE_KEYS="test-write-key:test,dev-write-key:demo"
)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    running = PIPELINE.take(tmp_path_factory)
    yield running
    running.stop_later()


@dataclass
class Visit:
    anonymous_id: str
    base: str
    landed_from_root: str  # where the browser was after opening /demo/
    page_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def linger(page, seconds: float) -> None:
    """Move the mouse around for a while: engaged time for the tracker's Page Pings."""
    deadline = time.monotonic() + seconds
    x = 0
    while time.monotonic() < deadline:
        x = (x + 37) % 400
        page.mouse.move(100 + x, 200 + x // 2)
        page.wait_for_timeout(150)


def tracker_ready(page) -> None:
    page.wait_for_function("window.clickstream && window.clickstream._loaded === true")


def go(page, click: str, path: str) -> None:
    """Click a link (or button) that navigates, and wait for the next demo page."""
    with page.expect_navigation(url=f"**{path}*"):
        page.click(click)
    tracker_ready(page)


@pytest.fixture(scope="module")
def visit(browser, pipeline: Pipeline) -> Visit:
    context = browser.new_context()
    page = context.new_page()
    errors, warnings = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: warnings.append(msg.text) if "[clickstream]" in msg.text else None,
    )
    base = pipeline.collector
    try:
        page.goto(f"{base}/demo/")
        landed = page.url
        if not landed.endswith("/demo/index.html"):  # see test_demo_root_opens_the_store
            page.goto(f"{base}/demo/index.html")
        page.wait_for_selector(f"#product-link-{PRODUCT}")
        tracker_ready(page)
        anonymous_id = page.evaluate("clickstream.anonymousId()")
        linger(page, 2.5)  # engaged time on the home page, reported when it is left
        go(page, f"#product-link-{PRODUCT}", "/demo/product.html")
        page.click("#add-to-cart")
        page.wait_for_function("document.getElementById('cart-count').textContent === '1'")
        linger(page, 1.2)
        go(page, "#go-to-cart", "/demo/cart.html")
        go(page, "#checkout", "/demo/checkout.html")
        page.fill("#email", EMAIL)
        page.press("#email", "Tab")  # change event: identify
        page.fill("#name", "Sam Shopper")
        page.fill("#address", "1 Data Street")
        page.fill("#card-number", "4242 4242 4242 4242")
        page.click("#place-order")
        page.wait_for_selector("#order-confirmation", state="visible")
        go(page, "#back-to-shop", "/demo/index.html")
        go(page, f"#product-link-{PRODUCT}", "/demo/product.html")
        page.select_option("#review-rating", "5")
        page.fill("#review-body", "Keeps late-night queries warm. ☕")
        page.click("#submit-review")
        page.wait_for_selector("#reviews li")
        # everything queued is delivered (acknowledged) before the browser goes away
        page.wait_for_function(
            "() => { clickstream.flush(); return localStorage.getItem('_cs_q') === null; }",
            polling=250,
            timeout=20_000,
        )
        assert page.evaluate("clickstream.anonymousId()") == anonymous_id
    finally:
        context.close()
    return Visit(anonymous_id, base, landed, errors, warnings)


def events(pipeline: Pipeline, where: str, columns: str) -> list[list]:
    """The demo's events in the order they happened, one row per messageId: tracker.js
    resends a batch whose answer it missed (a navigation during the fetch), and such a
    copy can survive FINAL (see test_segment_sdk.py, RESEND_DUPLICATES)."""
    return pipeline.sql(
        f"SELECT {columns} FROM clickstream.events FINAL "
        f"WHERE source = '{DEMO_SOURCE}' AND ({where}) "
        "ORDER BY ts, _partition, _offset LIMIT 1 BY message_id"
    )


@pytest.fixture(scope="module")
def tracks(pipeline: Pipeline, visit: Visit) -> list[list]:
    """The visitor's track events, once all the calls of the walk are in ClickHouse.

    Beacons sent while a page unloads are invisible to Playwright, so the wait counts
    what the walk must have produced: every page view, the identify, every track
    event; then it gives the Page Pings (sent alongside) a moment to settle."""
    expected = len(EXPECTED_PATHS) + 1 + len(EXPECTED_TRACKS)
    visitor = f"anonymous_id = '{visit.anonymous_id}'"
    pipeline.wait_for(
        "SELECT uniqExact(message_id) FROM clickstream.events FINAL "
        f"WHERE source = '{DEMO_SOURCE}' AND {visitor} AND event != 'Page Ping'",
        [[expected]],
    )
    settled, last = time.monotonic() + 1.0, None
    while time.monotonic() < settled:
        now = pipeline.sql(
            f"SELECT uniqExact(message_id) FROM clickstream.events FINAL WHERE {visitor}"
        )
        if now != last:
            settled, last = time.monotonic() + 1.0, now
        time.sleep(0.2)
    return events(pipeline, f"{visitor} AND type = 'track'", "event, properties, path")


def test_demo_root_opens_the_store(visit):
    assert visit.landed_from_root == f"{visit.base}/demo/index.html"


def test_the_page_itself_raised_nothing(visit):
    assert not visit.page_errors, visit.page_errors
    assert not visit.warnings, visit.warnings


def test_every_event_of_the_visit_shares_one_anonymous_id(pipeline, visit, tracks):
    rows = pipeline.sql(
        "SELECT anonymous_id, count() FROM clickstream.events FINAL "
        f"WHERE source = '{DEMO_SOURCE}' GROUP BY anonymous_id"
    )
    assert [row[0] for row in rows] == [visit.anonymous_id], rows
    [[visitors]] = pipeline.sql(
        f"SELECT uniqExact(visitor_id) FROM clickstream.events FINAL WHERE source = '{DEMO_SOURCE}'"
    )
    assert visitors == 1


def test_page_views_have_the_urls_and_paths_visited(pipeline, visit, tracks):
    rows = events(
        pipeline,
        f"anonymous_id = '{visit.anonymous_id}' AND type = 'page'",
        "url, path, title, referrer",
    )
    assert [row[1] for row in rows] == EXPECTED_PATHS, rows
    for url, path, _title, _referrer in rows:
        expected = f"{visit.base}{path}"
        if path == "/demo/product.html":
            expected += f"?id={PRODUCT}"
        assert url == expected, rows
    assert rows[0][3] == ""  # the first page view has no referrer...
    assert rows[1][3] == f"{visit.base}/demo/index.html"  # ...the next ones name the page before
    # demo.js names the product in document.title on DOMContentLoaded, which may come
    # before or after the async tracker's first page view
    assert rows[1][2] in ("Product · Clickstream Shop", "Midnight Mug · Clickstream Shop"), rows


def test_track_events_arrive_in_the_order_they_happened(tracks):
    rows = tracks
    names = [row[0] for row in rows if row[0] != "Page Ping"]
    assert names == EXPECTED_TRACKS, names
    order = next(json.loads(row[1]) for row in rows if row[0] == "Order Completed")
    assert order["products"][0]["product_id"] == PRODUCT
    review = next(json.loads(row[1]) for row in rows if row[0] == "Product Reviewed")
    assert (review["product_id"], review["rating"]) == (PRODUCT, 5)


def test_engaged_time_is_reported_in_page_pings(tracks):
    pings = [
        (json.loads(props)["engaged_seconds"], path)
        for event, props, path in tracks
        if event == "Page Ping"
    ]
    assert pings, "no Page Ping"
    assert all(seconds > 0 for seconds, _ in pings), pings
    home = [seconds for seconds, path in pings if path == "/demo/index.html"]
    assert home and home[0] >= 2, pings  # 2.5 s of mouse moves before leaving the home page


def test_identify_carries_the_user_id_and_later_events_too(pipeline, visit, tracks):
    rows = events(
        pipeline, f"anonymous_id = '{visit.anonymous_id}' AND type = 'identify'", "user_id, traits"
    )
    assert [row[0] for row in rows] == [EXPECTED_USER], rows  # once: not again on submit
    assert json.loads(rows[0][1])["email"] == EMAIL.lower()
    after = events(
        pipeline,
        f"anonymous_id = '{visit.anonymous_id}' AND event IN ('Order Completed', 'Product Reviewed')",
        "event, user_id",
    )
    assert after == [["Order Completed", EXPECTED_USER], ["Product Reviewed", EXPECTED_USER]]


def test_journey_reaches_purchase_with_a_trail_of_stage_changes(pipeline, visit, tracks):
    deadline = time.monotonic() + 30
    stage, trail = None, []
    while time.monotonic() < deadline:
        rows = pipeline.sql(
            f"SELECT stage FROM clickstream.visitors FINAL WHERE visitor_id = '{visit.anonymous_id}'"
        )
        stage = rows[0][0] if rows else None
        trail = pipeline.sql(
            "SELECT from_stage, to_stage FROM clickstream.stage_transitions FINAL "
            f"WHERE visitor_id = '{visit.anonymous_id}' "
            f"ORDER BY ts, indexOf({list(STAGES)}, to_stage)"
        )
        if stage == "advocacy" and trail and trail[-1][1] == stage:
            break
        time.sleep(0.5)
    if stage is None and not trail:
        [[visitors]] = pipeline.sql("SELECT count() FROM clickstream.visitors FINAL")
        [[changes]] = pipeline.sql("SELECT count() FROM clickstream.stage_transitions FINAL")
        if visitors == 0 and changes == 0:
            pytest.xfail(
                "clickstream.visitors and clickstream.stage_transitions stayed empty for 30 s: "
                "the journey processor's output does not reach ClickHouse yet"
            )
    assert stage in PAST_PURCHASE, (stage, trail)
    assert stage == "advocacy", (stage, trail)  # the review (schemas/journey/stages.json)
    reached = [to_stage for _, to_stage in trail]
    assert "purchase" in reached, trail
    assert len(reached) == len(set(reached)), trail  # no stage entered twice
    for (_, previous), (from_stage, _) in zip(trail, trail[1:], strict=False):
        assert from_stage == previous, trail  # each change starts where the last one ended
