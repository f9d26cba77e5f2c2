"""The consent matrix through tracker.js in Chromium, into a real pipeline.

A shop on another origin (CORS enforced) loads tracker.js from the collector of a
real `clickstream run` with `data-consent-required="true"`, states a choice through
the consent API (or none), logs in and buys. Per choice: what the browser stores,
what reaches ClickHouse under which ids, and whether a trigger is published.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.pipeline import free_port, prestart

pytestmark = pytest.mark.browser

KEYS = {"_cs_aid", "_cs_uid", "_cs_q"}
CHOICES = {  # case -> consent() argument, None = never asked (consent required)
    "none": None,
    "analytics": {"analytics": True, "marketing": False},
    "both": {"analytics": True, "marketing": True},
}
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Consent shop</title>
<script>
  window.clickstream = window.clickstream || [];
  ["track", "identify", "page", "alias", "consent"].forEach(function (m) {
    clickstream[m] = clickstream[m] || function () {
      clickstream.push([m].concat([].slice.call(arguments)));
    };
  });
  var p = new URLSearchParams(location.search);
  // The site's consent tool: states the stored choice on every page, before load.
  if (p.get("choice")) clickstream.consent(JSON.parse(p.get("choice")));
  clickstream.identify("user-" + p.get("case") + "-" + p.get("run"), {email: "a@example.com"});
</script>
<script src="COLLECTOR/tracker.js" data-write-key="test-write-key"
        data-consent-required="true" data-ping-seconds="0" async></script>
</head><body>Consent shop</body></html>"""
BUY = """run => {
  clickstream.track("Product Added", {product_id: "p1", price: 20, quantity: 1});
  clickstream.track("Order Completed", {order_id: "o-" + run, revenue: 20, currency: "EUR"});
  clickstream.flush();
}"""


class Shop:
    """The storefront: another origin than the collector, one page."""

    def __init__(self) -> None:
        port = free_port()
        self.origin = f"http://localhost:{port}"
        self.page = ""  # set once the collector's address is known
        shop = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/shop.html"):
                    body = shop.page.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


SHOPS: list[Shop] = []  # the shop, opened when its pipeline starts (it names its origin)


def open_shop() -> dict[str, str]:
    SHOPS.append(Shop())
    return {"CLICKSTREAM_CORS_ORIGINS": SHOPS[-1].origin}


PIPELINE = prestart(__name__, "consent-browser", more=open_shop)


@pytest.fixture(scope="module")
def shop_and_pipeline(tmp_path_factory):
    running = PIPELINE.take(tmp_path_factory)
    shop = SHOPS[-1]
    shop.page = PAGE.replace("COLLECTOR", running.collector)
    yield shop, running
    running.stop_later()
    shop.stop()


def stored(context, page) -> set[str]:
    """Our keys in the shop's cookies and localStorage."""
    cookies = {c["name"] for c in context.cookies()}
    local = set(page.evaluate("Object.keys(localStorage)"))
    return (cookies | local) & KEYS


def rows(pipeline, run: str, case: str, expected: int, timeout: float = 30.0) -> list[list]:
    query = (
        "SELECT type, event, visitor_id, anonymous_id, user_id, "
        "JSONExtractRaw(context, 'consent', 'categoryPreferences') "
        f"FROM clickstream.events WHERE url LIKE '%run={run}&case={case}%' ORDER BY ts, type"
    )
    deadline = time.monotonic() + timeout
    while True:
        got = pipeline.sql(query)
        if len(got) >= expected:
            return got
        assert time.monotonic() < deadline, (case, got, pipeline.log_tail())
        time.sleep(0.25)


def visit(browser, shop, run: str, case: str):
    """A fresh browser profile on the shop page; returns (context, page) after buying."""
    choice = CHOICES[case]
    url = f"{shop.origin}/shop.html?run={run}&case={case}"
    if choice is not None:
        url += "&choice=" + urllib.parse.quote(json.dumps(choice))
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_function("window.clickstream && window.clickstream._loaded")
    page.evaluate(BUY, run)
    assert not errors, errors
    return context, page


def test_the_consent_matrix(browser, shop_and_pipeline):
    shop, pipeline = shop_and_pipeline
    run = uuid.uuid4().hex[:8]
    seen = {}
    for case in CHOICES:
        context, page = visit(browser, shop, run, case)
        # page, (identify), Product Added, Order Completed
        got = rows(pipeline, run, case, 3 if case == "none" else 4)
        seen[case] = (stored(context, page), got)
        context.close()

    keys, got = seen["none"]
    assert keys == set()  # no cookie, no localStorage
    assert [r[0] for r in got] == ["page", "track", "track"]  # identify not even sent
    assert {r[2] for r in got} == {got[0][3]} and got[0][2].startswith("cl-"), got
    assert {r[4] for r in got} == {""}
    assert {r[5] for r in got} == {'{"analytics":false,"marketing":false}'}

    for case in ("analytics", "both"):
        keys, got = seen[case]
        assert keys == {"_cs_aid", "_cs_uid"}, case  # the queue key is gone once sent
        assert sorted(r[0] for r in got) == ["identify", "page", "track", "track"], got
        assert len({r[2] for r in got}) == 1 and not got[0][2].startswith("cl-"), got
        # The first page view comes before the (queued) identify: no user id yet.
        assert {r[4] for r in got if r[0] != "page"} == {f"user-{case}-{run}"}, got
    assert {r[5] for r in seen["both"][1]} == {'{"analytics":true,"marketing":true}'}

    # Triggers follow marketing consent; every visitor's journey reached purchase.
    visitors = {case: seen[case][1][0][2] for case in CHOICES}
    quoted = ", ".join(f"'{v}'" for v in visitors.values())
    pipeline.wait_for(
        "SELECT count() FROM clickstream.visitors FINAL "
        f"WHERE visitor_id IN ({quoted}) AND stage = 'purchase'",
        [[3]],
        timeout=40,
    )
    pipeline.wait_for(
        "SELECT visitor_id, trigger FROM clickstream.triggers FINAL "
        f"WHERE visitor_id IN ({quoted})",
        [[visitors["both"], "first_purchase"]],
        timeout=40,
    )


def test_granting_and_withdrawing_change_storage_from_the_next_event(browser, shop_and_pipeline):
    shop, pipeline = shop_and_pipeline
    run = uuid.uuid4().hex[:8]
    context, page = visit(browser, shop, run, "none")
    assert stored(context, page) == set()
    page.evaluate(
        """() => {
          clickstream.consent({analytics: true, marketing: true});
          clickstream.track("Granted");
          clickstream.flush();
        }"""
    )
    aid = page.evaluate("clickstream.anonymousId()")
    assert aid and {c["name"]: c["value"] for c in context.cookies()}["_cs_aid"] == aid
    rows(pipeline, run, "none", 4)
    page.evaluate(
        """() => {
          clickstream.consent({analytics: false, marketing: false});
          clickstream.track("Withdrawn");
          clickstream.flush();
        }"""
    )
    assert stored(context, page) == set()  # deleted at once
    assert page.evaluate("clickstream.anonymousId()") is None
    got = rows(pipeline, run, "none", 5)
    by_event = {r[1]: r for r in got if r[0] == "track"}
    assert by_event["Granted"][2] == aid
    assert by_event["Granted"][5] == '{"analytics":true,"marketing":true}'
    withdrawn = by_event["Withdrawn"]
    assert withdrawn[2].startswith("cl-") and withdrawn[4] == ""
    # Same browser and network, same day: the cookieless id is the one it had before.
    assert withdrawn[2] == by_event["Product Added"][2]
    context.close()
