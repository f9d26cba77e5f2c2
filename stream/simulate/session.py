"""One visit written out as Segment calls: pages, e-commerce events, engaged-time pings.

A `Visit` keeps an event-time clock (epoch ms) that only moves forward. Every call
is stamped at the clock; while a page is open, each 10 seconds of it emit a
"Page Ping" with the engaged seconds (the tracker's heartbeat; none when the
visitor was idle), and leaving the page sends the remainder, so a visit's calls
come out in time order.

The scripts at the bottom (`bounce`, `browse`, ... `purchase`, `crawl`) are what a
visitor does in a session of each kind; `model.py` decides which kind.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from stream.simulate.catalog import (
    BY_CATEGORY,
    CATEGORIES,
    COUPONS,
    CURRENCY,
    LIBRARY,
    PRODUCTS,
    SEARCH_WORDS,
    SHOP_NAME,
    SITE,
    STATIC_PAGES,
    Channel,
    Product,
    title,
)
from stream.simulate.personas import Visitor

PING_MS = 10_000
TAX_RATE = 0.08
FREE_SHIPPING_FROM = 75.0
SHIPPING = 6.95
Timed = tuple[int, dict[str, Any]]  # (event time ms, Segment call)


def iso(ms: int) -> str:
    """Epoch ms -> '2024-05-01T12:00:00.123Z'."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def uuid4(rng: random.Random) -> str:
    """A random (version 4) UUID drawn from `rng`: the same as uuid.UUID(int=..., version=4)."""
    bits = (
        rng.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
    )
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def slug(text: str) -> str:
    return text.lower().replace(" ", "-")


class Visit:
    def __init__(
        self,
        rng: random.Random,
        ids: random.Random,
        visitor: Visitor,
        start_ms: int,
        channel: Channel | None,
        *,
        pings: bool = True,
    ) -> None:
        self.rng, self.ids, self.visitor = rng, ids, visitor
        self.t = start_ms
        self.calls: list[Timed] = []
        self.pings = pings
        self.page: dict[str, str] | None = None  # context.page of the open page
        self.last_url = ""
        self.read = (3.0, 20.0)  # seconds spent on the open page after its last action
        self.ping_from = self.next_ping = 0
        self.campaign: dict[str, str] | None = None  # context.campaign while on the landing page
        self.listing: list[Product] = []  # products of the open list page
        self.list_again: Callable[[], None] | None = None
        self.viewed: list[Product] = []
        self.cart: dict[Product, int] = {}
        self.cart_id = self.hex(12)
        self.referrer, self.query, self.landing_campaign = self._arrival(channel)

    # ---- identifiers and the clock

    def uuid(self) -> str:
        return uuid4(self.ids)

    def hex(self, digits: int) -> str:
        return f"{self.ids.getrandbits(4 * digits):0{digits}x}"

    def wait(self, low: float, high: float) -> None:
        """Move the clock on, pinging at each 10 s of the open page on the way."""
        end = self.t + int(self.rng.uniform(low, high) * 1000)
        if self.page is not None and self.pings:
            while self.next_ping <= end:
                self.t = self.ping_from = self.next_ping
                r = self.rng.random()
                if r < 0.55:
                    self._ping(10)
                elif r < 0.75:
                    self._ping(self.rng.randint(2, 9))  # partly idle
                # else idle (tab hidden, no input): the tracker sends nothing
                self.next_ping += PING_MS
        self.t = end

    def leave(self) -> None:
        """Finish reading the open page; the tracker sends the rest of the engaged time."""
        if self.page is None:
            return
        self.wait(*self.read)
        rest = (self.t - self.ping_from) // 1000
        if self.pings and rest >= 1:
            self._ping(rest)
        self.page = None

    # ---- calls

    def visit(
        self,
        path: str,
        heading: str,
        name: str,
        *,
        query: str = "",
        properties: dict[str, Any] | None = None,
        read: tuple[float, float] = (3.0, 20.0),
    ) -> None:
        """Open a page: a `page` call, its context on every call until the next one."""
        landing = not self.calls
        if self.page is not None:
            self.leave()
            self.t += int(self.rng.uniform(0.3, 2.5) * 1000)  # the next page loads
        if landing and self.query:
            query = f"{query}&{self.query}" if query else self.query
        url = SITE + path + (f"?{query}" if query else "")
        self.page = {
            "path": path,
            "referrer": self.referrer if landing else self.last_url,
            "search": f"?{query}" if query else "",
            "title": title(heading),
            "url": url,
        }
        self.last_url = url
        self.campaign = self.landing_campaign if landing else None
        self.ping_from, self.next_ping = self.t, self.t + PING_MS
        patience = self.visitor.persona.patience
        self.read = (read[0] * patience, read[1] * patience)
        self.listing, self.list_again = [], None
        self._emit(
            {"type": "page", "name": name, "properties": {**self.page, **(properties or {})}}
        )

    def track(
        self, event: str, properties: dict[str, Any], after: tuple[float, float] = (1.0, 6.0)
    ) -> None:
        self.wait(*after)
        self._emit({"type": "track", "event": event, "properties": properties})

    def identify(self, traits: dict[str, Any], after: tuple[float, float] = (0.5, 3.0)) -> None:
        self.wait(*after)
        self._emit({"type": "identify", "traits": traits})

    def _ping(self, seconds: int) -> None:
        self._emit(
            {"type": "track", "event": "Page Ping", "properties": {"engaged_seconds": seconds}}
        )

    def _emit(self, call: dict[str, Any]) -> None:
        v = self.visitor
        call["anonymousId"] = v.anonymous_id
        if v.user_id:
            call["userId"] = v.user_id
        call["messageId"] = self.uuid()
        call["timestamp"] = iso(self.t)
        context: dict[str, Any] = {
            "page": dict(self.page or {}),
            "userAgent": v.agent.user_agent,
            "ip": v.ip,
            "locale": v.locale[0],
            "timezone": v.locale[1],
            "library": dict(LIBRARY),
        }
        if self.campaign:
            context["campaign"] = dict(self.campaign)
        call["context"] = context
        self.calls.append((self.t, call))

    def _arrival(self, channel: Channel | None) -> tuple[str, str, dict[str, str] | None]:
        """(referrer, landing query, context.campaign) of the channel the visit came by."""
        if channel is None:
            return "", "", None
        referrer = self.rng.choice(channel.referrers)
        if not channel.utm:
            return referrer, "", None
        name = self.rng.choice(channel.campaigns)
        params = [*channel.utm, ("utm_campaign", name)]
        if channel.click_id:
            params.append((channel.click_id, self.hex(16)))
        campaign = {key.removeprefix("utm_"): value for key, value in channel.utm}
        campaign["name"] = name
        return referrer, urlencode(params), campaign

    # ---- storefront pages

    def interest(self) -> str:
        """The category this visitor looks at next: mostly their favorite."""
        if self.rng.random() < 0.6:
            return self.visitor.favorite
        return self.rng.choice(CATEGORIES)

    def home(self) -> None:
        self.visit("/", "Outdoor gear for every trail", "Home", read=(3.0, 20.0))

    def category(self, category: str) -> None:
        items = list(BY_CATEGORY[category])
        path = f"/c/{slug(category)}"
        self.visit(path, category, "Category", properties={"category": category}, read=(3.0, 25.0))
        self._list(f"category-{slug(category)}", category, items)
        self.list_again = lambda: self.category(category)

    def search(self, category: str) -> None:
        words = self.rng.choice(SEARCH_WORDS[category])
        self.track("Products Searched", {"query": words}, after=(2.0, 8.0))
        items = self.rng.sample(BY_CATEGORY[category], self.rng.randint(2, 5))
        self._results(words, urlencode({"q": words}), category, items)

    def _results(self, words: str, query: str, category: str, items: list[Product]) -> None:
        self.visit(
            "/search",
            f"Search: {words}",
            "Search Results",
            query=query,
            properties={"query": words},
        )
        self._list("search-results", category, items)
        self.list_again = lambda: self._results(words, query, category, items)

    def _list(self, list_id: str, category: str, items: list[Product]) -> None:
        self.listing = items
        products = [p.properties(position=i) for i, p in enumerate(items, start=1)]
        self.track(
            "Product List Viewed",
            {"list_id": list_id, "category": category, "products": products},
            after=(0.2, 1.0),
        )

    def product(self, product: Product, read: tuple[float, float] = (5.0, 35.0)) -> None:
        if product in self.listing:
            position = self.listing.index(product) + 1
            self.track("Product Clicked", product.properties(position=position), after=(2.0, 10.0))
        self.visit(
            product.path,
            product.name,
            "Product",
            properties={"category": product.category},
            read=read,
        )
        self.track(
            "Product Viewed",
            product.properties(currency=CURRENCY, value=product.price),
            after=(0.2, 1.0),
        )
        self.viewed.append(product)

    def reviews(self, product: Product) -> None:
        heading = f"Reviews: {product.name}"
        self.visit(f"{product.path}/reviews", heading, "Product Reviews", read=(10.0, 60.0))

    def static_page(self) -> None:
        path, heading, name = self.rng.choice(STATIC_PAGES)
        self.visit(path, heading, name, read=(5.0, 40.0))

    def look_around(
        self, category: str, products: int, *, search: bool = False, read=(5.0, 35.0)
    ) -> None:
        """A list page (category or search results), then products clicked from it."""
        (self.search if search else self.category)(category)
        back = self.list_again
        for i in range(products):
            if i and back is not None:
                back()  # back to the list
            self.product(self.rng.choice(self.listing), read=read)

    # ---- cart and checkout

    def add(self, product: Product, quantity: int = 1) -> None:
        self.cart[product] = self.cart.get(product, 0) + quantity
        value = round(product.price * quantity, 2)
        props = product.properties(
            quantity=quantity, cart_id=self.cart_id, currency=CURRENCY, value=value
        )
        self.track("Product Added", props, after=(3.0, 20.0))

    def remove(self, product: Product) -> None:
        quantity = self.cart.pop(product)
        value = round(product.price * quantity, 2)
        props = product.properties(
            quantity=quantity, cart_id=self.cart_id, currency=CURRENCY, value=value
        )
        self.track("Product Removed", props, after=(2.0, 10.0))

    def lines(self) -> list[dict[str, Any]]:
        return [
            p.properties(quantity=q, position=i)
            for i, (p, q) in enumerate(self.cart.items(), start=1)
        ]

    def subtotal(self) -> float:
        return round(sum(p.price * q for p, q in self.cart.items()), 2)

    def view_cart(self) -> None:
        self.visit("/cart", "Your cart", "Cart", read=(5.0, 30.0))
        props = {
            "cart_id": self.cart_id,
            "products": self.lines(),
            "value": self.subtotal(),
            "currency": CURRENCY,
        }
        self.track("Cart Viewed", props, after=(0.2, 1.0))

    def apply_coupon(self) -> tuple[str, float]:
        code, rate = self.rng.choice(COUPONS)
        discount = round(self.subtotal() * rate, 2)
        props = {
            "cart_id": self.cart_id,
            "coupon_id": code,
            "coupon_name": code,
            "discount": discount,
        }
        self.track("Coupon Applied", props, after=(5.0, 20.0))
        return code, rate

    def checkout(
        self, coupon: tuple[str, float] | None, stop_after: int | None
    ) -> dict[str, Any] | None:
        """The checkout; `stop_after` 0, 1 or 2 leaves after that step, None places the order."""
        checkout_id, order_id = self.hex(16), f"ORD-{self.hex(10).upper()}"
        subtotal = self.subtotal()
        discount = round(subtotal * coupon[1], 2) if coupon else 0.0
        revenue = round(subtotal - discount, 2)
        free = revenue >= FREE_SHIPPING_FROM or (coupon is not None and coupon[0] == "FREESHIP")
        shipping = 0.0 if free else SHIPPING
        tax = round(revenue * TAX_RATE, 2)
        amounts = {
            "subtotal": subtotal,
            "discount": discount,
            "revenue": revenue,
            "currency": CURRENCY,
        }
        if coupon:
            amounts["coupon"] = coupon[0]
        ids = {"checkout_id": checkout_id, "order_id": order_id}
        self.visit("/checkout/shipping", "Checkout: shipping", "Checkout", read=(5.0, 25.0))
        self.track(
            "Checkout Started",
            {**ids, "value": subtotal, **amounts, "products": self.lines()},
            after=(0.2, 1.0),
        )
        if not self.visitor.email:  # a guest checkout asks for the e-mail address
            self.visitor.email = f"guest-{self.hex(10)}@example.com"
            self.identify({"email": self.visitor.email}, after=(10.0, 40.0))
        if stop_after == 0:
            return None
        shipping_method = self.rng.choice(("ground", "ground", "express", "store pickup"))
        step = {"checkout_id": checkout_id, "step": 1, "shipping_method": shipping_method}
        self.track("Checkout Step Completed", step, after=(15.0, 60.0))
        if stop_after == 1:
            return None
        payment = self.rng.choice(("card", "card", "card", "paypal", "apple pay"))
        self.visit("/checkout/payment", "Checkout: payment", "Checkout", read=(5.0, 30.0))
        self.track(
            "Payment Info Entered",
            {**ids, "step": 2, "payment_method": payment},
            after=(20.0, 90.0),
        )
        if stop_after == 2:
            return None
        step = {"checkout_id": checkout_id, "step": 2, "payment_method": payment}
        self.track("Checkout Step Completed", step, after=(1.0, 5.0))
        self.visit(
            "/checkout/confirmation",
            "Thank you for your order",
            "Order Confirmation",
            read=(5.0, 30.0),
        )
        total = round(revenue + shipping + tax, 2)
        order = {
            **ids,
            "affiliation": SHOP_NAME,
            "total": total,
            **amounts,
            "shipping": shipping,
            "tax": tax,
        }
        order["products"] = self.lines()
        self.track("Order Completed", order, after=(0.2, 1.0))
        self.visitor.purchases.extend(self.cart)
        self.cart = {}
        return order

    def refund(self, order: dict[str, Any]) -> None:
        self.visit("/account/orders", "Your orders", "Orders", read=(5.0, 30.0))
        props = {
            "order_id": order["order_id"],
            "total": order["total"],
            "revenue": order["revenue"],
            "currency": CURRENCY,
            "products": order["products"],
        }
        self.track("Order Refunded", props, after=(10.0, 40.0))

    # ---- the visitor as a person

    def sign_up(self) -> None:
        method = self.rng.choice(("email", "email", "google", "apple"))
        self.visit("/account/signup", "Create an account", "Sign Up", read=(3.0, 10.0))
        user_id = f"user_{self.hex(12)}"
        email = self.visitor.email or f"{user_id}@example.com"
        self.track(
            "Signed Up", {"method": method, "type": "customer", "email": email}, after=(20.0, 60.0)
        )
        self.visitor.user_id, self.visitor.email = user_id, email
        self.identify({"email": email, "created_at": iso(self.t)})

    def log_in(self) -> None:
        self.identify({"email": self.visitor.email})

    def subscribe(self) -> None:
        email = self.visitor.email or f"reader-{self.hex(10)}@example.com"
        self.visitor.email = email
        props = {"list_id": "weekly-deals", "list_name": "Weekly deals", "email": email}
        self.track("Newsletter Subscribed", props, after=(5.0, 20.0))

    def wishlist(self, product: Product) -> None:
        props = product.properties(
            wishlist_id=f"wl-{self.visitor.anonymous_id[:8]}", wishlist_name="Favorites"
        )
        self.track("Product Added to Wishlist", props, after=(2.0, 10.0))

    def share(self, product: Product) -> None:
        via = self.rng.choice(("facebook", "email", "copy link", "whatsapp", "pinterest"))
        self.track("Product Shared", product.properties(share_via=via), after=(2.0, 10.0))

    def review(self, product: Product) -> None:
        self.reviews(product)
        rating = self.rng.choices((5, 4, 3, 2, 1), (45, 30, 12, 6, 7))[0]
        body = REVIEW_BODIES[rating]
        props = {
            "product_id": product.product_id,
            "review_id": self.hex(12),
            "review_body": body,
            "rating": rating,
        }
        self.track("Product Reviewed", props, after=(30.0, 120.0))

    def feedback(self, promoter: bool) -> None:
        nps = self.rng.randint(9, 10) if promoter else self.rng.choices(range(11), NPS_WEIGHTS)[0]
        props: dict[str, Any] = {"nps": nps, "feedback_type": "nps"}
        if self.rng.random() < 0.3:
            props["rating"] = max(1, min(5, round(nps / 2)))
        self.track("Feedback Submitted", props, after=(5.0, 20.0))


REVIEW_BODIES = {
    5: "Exactly what I needed, held up great on the trail.",
    4: "Good quality, a bit heavier than expected.",
    3: "Does the job. Sizing runs small.",
    2: "Seams started fraying after two trips.",
    1: "Arrived damaged and support was slow.",
}
NPS_WEIGHTS = (2, 1, 1, 2, 2, 5, 6, 12, 18, 22, 29)


# ---- scripts: what a visitor does in one session of each kind


def land(v: Visit, channel: Channel) -> None:
    if channel.landing == "home":
        v.home()
    elif channel.landing == "category":
        v.category(v.interest())
    else:
        v.product(v.rng.choice(BY_CATEGORY[v.interest()]))


def bounce(v: Visit) -> None:
    v.read = (2.0, 30.0)  # one page, then gone


def browse(v: Visit) -> None:
    rng = v.rng
    for _ in range(rng.randint(1, 3)):
        v.look_around(v.interest(), rng.randint(1, 3), search=rng.random() < 0.25)
        if rng.random() < 0.08:
            v.wishlist(v.viewed[-1])
    if rng.random() < 0.1:
        v.static_page()
    if rng.random() < 0.03:
        v.subscribe()


def research(v: Visit) -> None:
    rng = v.rng
    for _ in range(rng.randint(1, 3)):
        v.look_around(v.interest(), rng.randint(2, 4), search=True, read=(15.0, 80.0))
        if rng.random() < 0.5:
            v.reviews(v.viewed[-1])
    if rng.random() < 0.2:
        v.wishlist(rng.choice(v.viewed))


def compare(v: Visit) -> None:
    rng = v.rng
    v.look_around(v.interest(), rng.randint(3, 6), read=(10.0, 60.0))
    if rng.random() < 0.3:
        v.reviews(rng.choice(v.viewed))
    if rng.random() < 0.3:
        v.wishlist(rng.choice(v.viewed))
    if rng.random() < 0.05:
        v.share(rng.choice(v.viewed))


def engage(v: Visit) -> None:
    """An advocate's visit: reviews what they bought, shares, answers the NPS survey."""
    rng = v.rng
    bought = v.visitor.purchases
    product = rng.choice(bought) if bought else rng.choice(PRODUCTS)
    v.product(product)
    if bought and rng.random() < 0.7:
        v.review(product)
    if rng.random() < 0.5:
        v.share(product)
    if rng.random() < 0.4:
        v.feedback(promoter=v.visitor.persona.name == "advocate")
    if rng.random() < 0.4:
        v.look_around(v.interest(), 1)


def fill_cart(v: Visit, lines: int) -> None:
    rng = v.rng
    if v.page is not None and v.page["path"].startswith("/p/") and v.viewed:
        v.add(v.viewed[-1])  # landed on a product and took it
        lines -= 1
    for _ in range(lines):
        v.look_around(v.interest(), rng.randint(1, 2))
        v.add(v.viewed[-1], 2 if rng.random() < 0.15 else 1)


def abandon(v: Visit) -> None:
    """A cart left behind: sometimes at the cart, sometimes in the checkout."""
    rng = v.rng
    fill_cart(v, rng.randint(1, 2))
    if rng.random() < 0.25:
        v.remove(rng.choice(list(v.cart)))
    if rng.random() < 0.6:
        v.view_cart()
    if v.cart and rng.random() < v.visitor.persona.reaches_checkout:
        if not v.visitor.user_id and rng.random() < v.visitor.persona.signs_up / 2:
            v.sign_up()
        v.checkout(None, stop_after=rng.choice((0, 0, 1, 2)))


def purchase(v: Visit, refunds: float) -> None:
    rng = v.rng
    persona = v.visitor.persona
    fill_cart(v, rng.randint(1, 3))
    if len(v.cart) >= 2 and rng.random() < 0.15:
        v.remove(rng.choice(list(v.cart)))
    v.view_cart()
    coupon = v.apply_coupon() if rng.random() < 0.25 else None
    if not v.visitor.user_id and rng.random() < persona.signs_up + 0.2:
        v.sign_up()
    order = v.checkout(coupon, stop_after=None)
    if order is not None and rng.random() < refunds:
        v.visitor.refund = order
    advocate = persona.name == "advocate"
    if advocate or rng.random() < 0.15:
        v.feedback(promoter=advocate)
    if advocate and rng.random() < 0.3:
        v.share(rng.choice(v.visitor.purchases))


def crawl(v: Visit) -> None:
    """A search engine crawler: page views only, quickly, no engagement."""
    rng = v.rng
    for _ in range(rng.randint(3, 25)):
        r = rng.random()
        if r < 0.5:
            p = rng.choice(PRODUCTS)
            v.visit(p.path, p.name, "Product", read=(0.5, 4.0))
        elif r < 0.8:
            category = rng.choice(CATEGORIES)
            v.visit(f"/c/{slug(category)}", category, "Category", read=(0.5, 4.0))
        elif r < 0.9:
            v.visit("/", "Outdoor gear for every trail", "Home", read=(0.5, 4.0))
        else:
            path, heading, name = rng.choice(STATIC_PAGES)
            v.visit(path, heading, name, read=(0.5, 4.0))


BROWSE_SCRIPTS: dict[str, Callable[[Visit], None]] = {
    "bounce": bounce,
    "browse": browse,
    "research": research,
    "compare": compare,
    "engage": engage,
    "crawl": crawl,
}
