"""The built-in journey page on a real pipeline: scripted journeys in, numbers on screen.

A real `clickstream run` gets thirteen shoppers' visits (and a crawler's), most of them
a few hours old so their sessions close and their metric windows complete at once; one
shopper is browsing now (an open session). Headless Chromium then opens `/` of the query
API and must show the funnel, the flow, the rates, revenue and the top lists with the
figures those journeys imply, bots left out. The screenshot lands in the test's tmp dir.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlencode

import pytest

from tests.support.pipeline import Pipeline, http, prestart

pytestmark = pytest.mark.browser

HOUR_MS = 3_600_000
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
CRAWLER = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PRODUCTS = {
    "p1": {"name": "Ceramic Mug", "price": 12.5, "quantity": 2},
    "p2": {"name": "Espresso Beans 1kg", "price": 24.0, "quantity": 1},
    "p3": {"name": "Pour-over Kettle", "price": 49.0, "quantity": 1},
    "p9": {"name": "Gift Card", "price": 10.0, "quantity": 1},
}
BUY = ["page", "Product List Viewed", "Product Viewed", "Product Added", "Cart Viewed",
       "Checkout Started", "Order Completed"]  # fmt: skip
JOURNEYS = {
    "buy": BUY,
    "advocate": [*BUY, "Product Reviewed"],
    "abandon": ["page", "Product Viewed", "Product Added"],
    "browse": ["page", "Product Viewed", "Products Searched"],
    "bounce": ["page"],
}
# (hours ago, journey, product): 12 closed visits over four hours
VISITS = [
    (5.0, "buy", "p1"), (4.8, "abandon", "p2"), (4.6, "bounce", "p1"),
    (4.0, "browse", "p3"), (3.8, "advocate", "p2"), (3.6, "abandon", "p1"),
    (3.0, "buy", "p3"), (2.8, "bounce", "p2"), (2.6, "browse", "p1"),
    (2.0, "buy", "p1"), (1.8, "abandon", "p3"), (1.6, "browse", "p2"),
]  # fmt: skip
ORDERS = 4
REVENUE = 25.0 + 24.0 + 49.0 + 25.0  # p1 x2, p2, p3, p1 x2
HUMANS = len(VISITS) + 1  # and one browsing now


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def visit(visitor: str, start_ms: int, names: list[str], sku: str, agent: str = CHROME):
    item = {"product_id": sku, **PRODUCTS[sku], "currency": "USD"}
    total = item["price"] * item["quantity"]
    calls = []
    for i, name in enumerate(names):
        call = {
            "messageId": f"{visitor}-{i}",
            "anonymousId": visitor,
            "timestamp": iso(start_ms + i * 15_000),
            "context": {
                "userAgent": agent,
                "page": {"url": f"https://shop.example/{sku}?utm_source=news&utm_campaign=spring"},
            },
        }
        if name == "page":
            call.update(type="page", name="Home")
        elif name in ("Cart Viewed", "Checkout Started"):
            products = {"products": [item], "value": total, "currency": "USD"}
            call.update(type="track", event=name, properties=products)
        elif name == "Order Completed":
            order = {"order_id": f"o-{visitor}", "revenue": total, "currency": "USD"}
            call.update(type="track", event=name, properties={**order, "products": [item]})
        elif name == "Product List Viewed":
            call.update(type="track", event=name, properties={"list_id": "coffee"})
        elif name == "Products Searched":
            call.update(type="track", event=name, properties={"query": "coffee"})
        elif name == "Product Reviewed":
            call.update(type="track", event=name, properties={"product_id": sku, "rating": 5})
        else:
            call.update(type="track", event=name, properties=item)
        calls.append(call)
    return calls


PIPELINE = prestart(__name__, "journey-page")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    running = PIPELINE.take(tmp_path_factory)
    yield running
    running.stop_later()


@pytest.fixture(scope="module")
def journeys(pipeline: Pipeline) -> dict[str, float]:
    now = int(time.time() * 1000)
    batch = []
    for n, (hours_ago, kind, sku) in enumerate(VISITS):
        batch += visit(f"{kind}-{n}", now - int(hours_ago * HOUR_MS), JOURNEYS[kind], sku)
    batch += visit("crawler", now - 2 * HOUR_MS, ["page", "Product Viewed"], "p9", CRAWLER)
    batch += visit("live-shopper", now - 20_000, ["page", "Product Viewed"], "p2")
    status, answer = pipeline.post("/v1/batch", {"batch": batch})
    assert status == 200 and answer["accepted"] == len(batch), answer

    # The live shopper keeps reading (a ping a second): sessions close after 3 s of
    # silence on the arrival clock in test pipelines, the historic ones at once.
    stop = threading.Event()

    def keep_reading() -> None:
        while not stop.wait(1.0):
            ping = {
                "type": "track",
                "event": "Page Ping",
                "anonymousId": "live-shopper",
                "properties": {"engaged_seconds": 0},
                "context": {"userAgent": CHROME},
            }
            pipeline.post("/v1/batch", {"batch": [ping]})

    reader = threading.Thread(target=keep_reading, daemon=True)
    reader.start()
    pipeline.wait_for("SELECT count() FROM clickstream.visitors FINAL", [[HUMANS + 1]], 40)
    pipeline.wait_for(
        "SELECT countIf(closed), sum(orders) FROM clickstream.sessions FINAL WHERE NOT is_bot",
        [[len(VISITS), ORDERS]],
        30,
    )
    pipeline.wait_for(
        "SELECT sum(sessions), sum(orders) FROM clickstream.journey_metrics_1m FINAL",
        [[HUMANS, ORDERS]],  # live metrics: the open session counts where it started
        30,
    )
    yield {"now": now}
    stop.set()
    reader.join()


def page_json(pipeline: Pipeline, name: str, **query) -> dict:
    status, answer = http("GET", f"{pipeline.api}/api/v1/page/{name}?{urlencode(query)}")
    assert status == 200, answer
    return answer


def test_page_endpoints_leave_bots_out(pipeline, journeys):
    summary = page_json(pipeline, "summary")
    assert summary["sessions"] == HUMANS
    assert summary["active_sessions"] == 1
    assert summary["orders"] == ORDERS
    assert summary["revenue"] == pytest.approx(REVENUE)
    assert summary["average_order_value"] == pytest.approx(REVENUE / ORDERS)
    assert summary["cart_abandonment_rate"] == pytest.approx(3 / 7)

    funnel = page_json(pipeline, "funnel")
    reached = {s["stage"]: s["visitors"] for s in funnel["stages"]}
    assert reached == {
        "awareness": HUMANS, "consideration": 11, "decision": 7,
        "purchase": 4, "retention": 1, "advocacy": 1,
    }  # fmt: skip
    now = {c["stage"]: c["visitors"] for c in funnel["current"]}
    assert now == {
        "awareness": 2, "consideration": 4, "decision": 3,
        "purchase": 3, "retention": 0, "advocacy": 1, "lapsed": 0,
    }  # fmt: skip

    rates = page_json(pipeline, "rates", bucket="hour")
    assert sum(p["orders"] for p in rates["points"]) == ORDERS
    assert sum(p["sessions"] for p in rates["points"]) == HUMANS

    top = page_json(pipeline, "top")
    products = {p["product_id"]: p for p in top["products"]}
    assert "p9" not in products  # the crawler's
    assert products["p1"]["orders"] == 2 and products["p1"]["units"] == 4
    assert products["p1"]["revenue"] == pytest.approx(50.0)

    status, answer = http("GET", f"{pipeline.api}/api/v1/page/rates?bucket=day")
    assert status == 400 and "bucket" in answer["error"]


def test_journey_page_shows_the_journeys(browser, pipeline, journeys, tmp_path):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(pipeline.api + "/")
        page.wait_for_function(
            "document.body.dataset.loaded >= 1 && "
            "document.querySelector('#funnel .count[data-stage=awareness]')?.textContent !== '0'",
            timeout=20_000,
        )

        def text(selector: str) -> str:
            return page.inner_text(selector).strip()

        assert text("#funnel .count[data-stage=awareness]") == str(HUMANS)
        assert text("#funnel .count[data-stage=purchase]") == str(ORDERS)
        assert text("#funnel .conv[data-stage=purchase]") == "→ 57%"  # 4 of 7 deciders
        assert text("#funnel .now[data-stage=decision]") == "3"
        assert text("#kpi-orders .value") == str(ORDERS)
        assert text("#kpi-revenue .value") == f"{REVENUE:.2f}"
        assert text("#kpi-aov .value") == f"{REVENUE / ORDERS:.2f}"
        assert text("#kpi-active .value") == "1"
        assert text("#kpi-abandonment .value") == "43%"
        assert text("#flow td[data-from=''][data-to=awareness]") == str(HUMANS)
        assert text("#flow td[data-from=purchase][data-to=advocacy]") == "1"
        assert page.locator("#rates circle.point").count() >= 3 * 2  # 3 rates, several hours
        assert page.locator("#revenue rect").count() >= 2
        assert text("#products tr[data-product=p1] td:nth-child(4)") == "2"
        assert page.locator("#products tr[data-product=p9]").count() == 0
        assert "Product Viewed" in text("#events")
        assert page.locator("#recent li").count() >= 10
        assert "error" not in (page.get_attribute("#status", "class") or "")
        assert errors == []
        page.screenshot(path=str(tmp_path / "journey-page.png"), full_page=True)
    finally:
        context.close()
