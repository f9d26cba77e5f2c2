"""The simulated storefront's fixed data: products, user agents, traffic channels, IPs.

Nothing here is random; `model.py` draws from these tables with its seeded RNG.
Hosts and addresses are reserved for documentation (example.com, 203.0.113.0/24,
198.51.100.0/24, 2001:db8::/32), so simulated traffic can never point at anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SITE = "https://shop.example.com"
SHOP_NAME = "Example Outfitters"
CURRENCY = "USD"
LIBRARY = {"name": "clickstream-simulator", "version": "1.0.0"}


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    sku: str
    name: str
    category: str
    brand: str
    price: float

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "-").replace("'", "")

    @property
    def path(self) -> str:
        return f"/p/{self.slug}"

    def properties(self, **extra: Any) -> dict[str, Any]:
        """Segment e-commerce product fields, plus any extra ones (quantity, position...)."""
        return {
            "product_id": self.product_id,
            "sku": self.sku,
            "name": self.name,
            "category": self.category,
            "brand": self.brand,
            "price": self.price,
            "currency": CURRENCY,
            "url": SITE + self.path,
            **extra,
        }


# category -> (brand, [(name, price)]); ids and SKUs are derived from the position.
_CATALOG: dict[str, tuple[str, list[tuple[str, float]]]] = {
    "Tents": ("Ridgeline", [("Summit 2 Tent", 249.0), ("Meadow 4 Tent", 389.0), ("Ultralight Solo Tent", 329.0), ("Family Dome Tent", 459.0), ("Trail Tarp", 79.0)]),
    "Sleeping Bags": ("Ridgeline", [("Down 20 Bag", 289.0), ("Synthetic 30 Bag", 119.0), ("Kids Bag", 59.0), ("Quilt 40", 179.0), ("Liner Silk", 49.0)]),
    "Backpacks": ("Packwell", [("Daypack 24", 89.0), ("Trek 55 Pack", 229.0), ("Expedition 70 Pack", 319.0), ("Hydration Pack 12", 69.0), ("Camera Pack", 149.0)]),
    "Jackets": ("Northline", [("Rain Shell", 159.0), ("Puffer Jacket", 199.0), ("Fleece Midlayer", 89.0), ("Softshell Jacket", 139.0), ("Wind Vest", 69.0)]),
    "Footwear": ("Stridex", [("Trail Runner", 129.0), ("Hiking Boot Mid", 179.0), ("Approach Shoe", 149.0), ("Camp Sandal", 49.0), ("Wool Socks 3-Pack", 29.0)]),
    "Cooking": ("Campfire Co", [("Canister Stove", 59.0), ("Titanium Pot", 45.0), ("Spork Set", 12.0), ("French Press Mug", 34.0), ("Dehydrated Meal Pack", 39.0)]),
    "Lighting": ("Lumen", [("Headlamp 400", 39.0), ("Lantern Mini", 29.0), ("Solar Light", 35.0), ("Rechargeable Headlamp", 59.0), ("String Lights", 24.0)]),
    "Water": ("Clearflow", [("Water Filter Squeeze", 39.0), ("Gravity Filter 4L", 99.0), ("Insulated Bottle", 32.0), ("Collapsible Bottle", 15.0), ("Purification Tablets", 9.5)]),
    "Navigation": ("Waypoint", [("GPS Watch", 349.0), ("Baseplate Compass", 29.0), ("Map Case", 19.0), ("Satellite Messenger", 299.0), ("Altimeter", 89.0)]),
    "Accessories": ("Packwell", [("Trekking Poles", 119.0), ("Camp Chair", 79.0), ("First Aid Kit", 34.0), ("Dry Bag 20L", 25.0), ("Multi Tool", 49.0)]),
}


def _build() -> tuple[Product, ...]:
    products = []
    for c, (category, (brand, items)) in enumerate(_CATALOG.items(), start=1):
        for i, (name, price) in enumerate(items, start=1):
            code = category[:3].upper()
            products.append(Product(f"P{c:02d}{i:02d}", f"SKU-{code}-{c:02d}{i:02d}", name, category, brand, price))
    return tuple(products)


PRODUCTS: tuple[Product, ...] = _build()
CATEGORIES: tuple[str, ...] = tuple(_CATALOG)
BY_CATEGORY: dict[str, tuple[Product, ...]] = {
    c: tuple(p for p in PRODUCTS if p.category == c) for c in CATEGORIES
}
SEARCH_WORDS: dict[str, tuple[str, ...]] = {
    "Tents": ("tent", "2 person tent", "ultralight tent", "tarp"),
    "Sleeping Bags": ("sleeping bag", "down bag", "quilt", "sleping bag"),
    "Backpacks": ("backpack", "55l pack", "daypack", "hydration"),
    "Jackets": ("rain jacket", "puffer", "fleece", "waterproof jacket"),
    "Footwear": ("hiking boots", "trail shoes", "socks", "sandals"),
    "Cooking": ("stove", "pot", "coffee", "camp food"),
    "Lighting": ("headlamp", "lantern", "solar"),
    "Water": ("water filter", "bottle", "purification"),
    "Navigation": ("gps", "compass", "satellite"),
    "Accessories": ("trekking poles", "chair", "first aid", "dry bag"),
}
COUPONS: tuple[tuple[str, float], ...] = (("SPRING10", 0.10), ("WELCOME15", 0.15), ("FREESHIP", 0.0))


@dataclass(frozen=True, slots=True)
class Agent:
    user_agent: str
    device: str  # desktop | mobile | tablet | bot
    weight: float


HUMAN_AGENTS: tuple[Agent, ...] = (
    Agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "desktop", 22),
    Agent("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "desktop", 8),
    Agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", "desktop", 6),
    Agent("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "desktop", 2),
    Agent("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15", "desktop", 8),
    Agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "mobile", 26),
    Agent("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36", "mobile", 12),
    Agent("Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Mobile Safari/537.36", "mobile", 8),
    Agent("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "tablet", 5),
)
BOT_AGENTS: tuple[Agent, ...] = (
    Agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot", 6),
    Agent("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot", 2),
    Agent("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bot", 4),
)


@dataclass(frozen=True, slots=True)
class Channel:
    """How a session arrives: its referrer, its campaign (utm_*) and where it lands."""

    name: str
    weight_new: float
    weight_returning: float
    referrers: tuple[str, ...]  # "" = none (direct, e-mail apps)
    landing: str  # home | category | product | search
    utm: tuple[tuple[str, str], ...] = ()  # fixed utm_source / utm_medium
    campaigns: tuple[str, ...] = ()
    click_id: str = ""  # gclid, fbclid...


CHANNELS: tuple[Channel, ...] = (
    Channel("direct", 22, 40, ("",), "home"),
    Channel("google organic", 26, 16, ("https://www.google.com/",), "product"),
    Channel("bing organic", 4, 3, ("https://www.bing.com/",), "category"),
    Channel(
        "google ads", 10, 5, ("https://www.google.com/",), "product",
        (("utm_source", "google"), ("utm_medium", "cpc")), ("spring-sale", "brand-search", "tents-generic"), "gclid",
    ),
    Channel("facebook", 7, 4, ("https://www.facebook.com/", "https://m.facebook.com/"), "product"),
    Channel(
        "facebook ads", 9, 4, ("https://l.facebook.com/",), "product",
        (("utm_source", "facebook"), ("utm_medium", "paid_social")), ("spring-sale", "retargeting-carts"), "fbclid",
    ),
    Channel(
        "newsletter", 8, 22, ("", "https://mail.google.com/"), "category",
        (("utm_source", "newsletter"), ("utm_medium", "email")), ("weekly-deals", "new-arrivals", "back-in-stock"),
    ),
    Channel("referral", 6, 3, ("https://blog.example.org/best-hiking-gear", "https://forum.example.net/t/which-tent"), "product"),
    Channel("internal search", 8, 3, ("https://www.google.com/",), "search"),
)

STATIC_PAGES: tuple[tuple[str, str, str], ...] = (  # path, title, name
    ("/about", "About us", "About"),
    ("/shipping", "Shipping & returns", "Shipping"),
    ("/journal/packing-list", "The ultimate packing list", "Journal"),
    ("/stores", "Find a store", "Stores"),
)


def title(text: str) -> str:
    return f"{text} | {SHOP_NAME}"
