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


# (category, brand, name, price); ids and SKUs follow the position.
_ITEMS: tuple[tuple[str, str, str, float], ...] = (
    ("Tents", "Ridgeline", "Summit 2 Tent", 249.0),
    ("Tents", "Ridgeline", "Meadow 4 Tent", 389.0),
    ("Tents", "Ridgeline", "Ultralight Solo Tent", 329.0),
    ("Tents", "Ridgeline", "Family Dome Tent", 459.0),
    ("Tents", "Ridgeline", "Trail Tarp", 79.0),
    ("Sleeping Bags", "Ridgeline", "Down 20 Bag", 289.0),
    ("Sleeping Bags", "Ridgeline", "Synthetic 30 Bag", 119.0),
    ("Sleeping Bags", "Ridgeline", "Kids Bag", 59.0),
    ("Sleeping Bags", "Ridgeline", "Quilt 40", 179.0),
    ("Sleeping Bags", "Ridgeline", "Liner Silk", 49.0),
    ("Backpacks", "Packwell", "Daypack 24", 89.0),
    ("Backpacks", "Packwell", "Trek 55 Pack", 229.0),
    ("Backpacks", "Packwell", "Expedition 70 Pack", 319.0),
    ("Backpacks", "Packwell", "Hydration Pack 12", 69.0),
    ("Backpacks", "Packwell", "Camera Pack", 149.0),
    ("Jackets", "Northline", "Rain Shell", 159.0),
    ("Jackets", "Northline", "Puffer Jacket", 199.0),
    ("Jackets", "Northline", "Fleece Midlayer", 89.0),
    ("Jackets", "Northline", "Softshell Jacket", 139.0),
    ("Jackets", "Northline", "Wind Vest", 69.0),
    ("Footwear", "Stridex", "Trail Runner", 129.0),
    ("Footwear", "Stridex", "Hiking Boot Mid", 179.0),
    ("Footwear", "Stridex", "Approach Shoe", 149.0),
    ("Footwear", "Stridex", "Camp Sandal", 49.0),
    ("Footwear", "Stridex", "Wool Socks 3-Pack", 29.0),
    ("Cooking", "Campfire Co", "Canister Stove", 59.0),
    ("Cooking", "Campfire Co", "Titanium Pot", 45.0),
    ("Cooking", "Campfire Co", "Spork Set", 12.0),
    ("Cooking", "Campfire Co", "French Press Mug", 34.0),
    ("Cooking", "Campfire Co", "Dehydrated Meal Pack", 39.0),
    ("Lighting", "Lumen", "Headlamp 400", 39.0),
    ("Lighting", "Lumen", "Lantern Mini", 29.0),
    ("Lighting", "Lumen", "Solar Light", 35.0),
    ("Lighting", "Lumen", "Rechargeable Headlamp", 59.0),
    ("Lighting", "Lumen", "String Lights", 24.0),
    ("Water", "Clearflow", "Water Filter Squeeze", 39.0),
    ("Water", "Clearflow", "Gravity Filter 4L", 99.0),
    ("Water", "Clearflow", "Insulated Bottle", 32.0),
    ("Water", "Clearflow", "Collapsible Bottle", 15.0),
    ("Water", "Clearflow", "Purification Tablets", 9.5),
    ("Navigation", "Waypoint", "GPS Watch", 349.0),
    ("Navigation", "Waypoint", "Baseplate Compass", 29.0),
    ("Navigation", "Waypoint", "Map Case", 19.0),
    ("Navigation", "Waypoint", "Satellite Messenger", 299.0),
    ("Navigation", "Waypoint", "Altimeter", 89.0),
    ("Accessories", "Packwell", "Trekking Poles", 119.0),
    ("Accessories", "Packwell", "Camp Chair", 79.0),
    ("Accessories", "Packwell", "First Aid Kit", 34.0),
    ("Accessories", "Packwell", "Dry Bag 20L", 25.0),
    ("Accessories", "Packwell", "Multi Tool", 49.0),
)


def _build() -> tuple[Product, ...]:
    products = []
    numbers: dict[str, int] = {}  # category -> its number
    counts: dict[str, int] = {}  # category -> products so far
    for category, brand, name, price in _ITEMS:
        c = numbers.setdefault(category, len(numbers) + 1)
        i = counts[category] = counts.get(category, 0) + 1
        code = f"{category[:3].upper()}-{c:02d}{i:02d}"
        products.append(Product(f"P{c:02d}{i:02d}", f"SKU-{code}", name, category, brand, price))
    return tuple(products)


PRODUCTS: tuple[Product, ...] = _build()
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(p.category for p in PRODUCTS))
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
COUPONS: tuple[tuple[str, float], ...] = (
    ("SPRING10", 0.10),
    ("WELCOME15", 0.15),
    ("FREESHIP", 0.0),
)


@dataclass(frozen=True, slots=True)
class Agent:
    user_agent: str
    device: str  # desktop | mobile | tablet | bot
    weight: float


CHROME_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
CHROME_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
SAFARI_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
SAFARI_IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
CHROME_PIXEL = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"
CHROME_GALAXY = "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Mobile Safari/537.36"
SAFARI_IPAD = "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_MOBILE = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"

HUMAN_AGENTS: tuple[Agent, ...] = (
    Agent(CHROME_WINDOWS, "desktop", 22),
    Agent(CHROME_MAC, "desktop", 8),
    Agent(FIREFOX_WINDOWS, "desktop", 6),
    Agent(FIREFOX_LINUX, "desktop", 2),
    Agent(SAFARI_MAC, "desktop", 8),
    Agent(SAFARI_IPHONE, "mobile", 26),
    Agent(CHROME_PIXEL, "mobile", 12),
    Agent(CHROME_GALAXY, "mobile", 8),
    Agent(SAFARI_IPAD, "tablet", 5),
)
BOT_AGENTS: tuple[Agent, ...] = (
    Agent(GOOGLEBOT, "bot", 6),
    Agent(GOOGLEBOT_MOBILE, "bot", 2),
    Agent(BINGBOT, "bot", 4),
)


@dataclass(frozen=True, slots=True)
class Channel:
    """How a session arrives: its referrer, its campaign (utm_*) and where it lands."""

    name: str
    weight_new: float
    weight_returning: float
    referrers: tuple[str, ...]  # "" = none (direct, e-mail apps)
    landing: str  # home | category | product
    utm: tuple[tuple[str, str], ...] = ()  # fixed utm_source / utm_medium
    campaigns: tuple[str, ...] = ()
    click_id: str = ""  # gclid, fbclid...


CHANNELS: tuple[Channel, ...] = (
    Channel("direct", weight_new=22, weight_returning=40, referrers=("",), landing="home"),
    Channel(
        "google organic",
        weight_new=26,
        weight_returning=16,
        referrers=("https://www.google.com/",),
        landing="product",
    ),
    Channel(
        "bing organic",
        weight_new=4,
        weight_returning=3,
        referrers=("https://www.bing.com/",),
        landing="category",
    ),
    Channel(
        "google ads",
        weight_new=10,
        weight_returning=5,
        referrers=("https://www.google.com/",),
        landing="product",
        utm=(("utm_source", "google"), ("utm_medium", "cpc")),
        campaigns=("spring-sale", "brand-search", "tents-generic"),
        click_id="gclid",
    ),
    Channel(
        "facebook",
        weight_new=7,
        weight_returning=4,
        referrers=("https://www.facebook.com/", "https://m.facebook.com/"),
        landing="product",
    ),
    Channel(
        "facebook ads",
        weight_new=9,
        weight_returning=4,
        referrers=("https://l.facebook.com/",),
        landing="product",
        utm=(("utm_source", "facebook"), ("utm_medium", "paid_social")),
        campaigns=("spring-sale", "retargeting-carts"),
        click_id="fbclid",
    ),
    Channel(
        "newsletter",
        weight_new=8,
        weight_returning=22,
        referrers=("", "https://mail.google.com/"),  # mail apps send none
        landing="category",
        utm=(("utm_source", "newsletter"), ("utm_medium", "email")),
        campaigns=("weekly-deals", "new-arrivals", "back-in-stock"),
    ),
    Channel(
        "referral",
        weight_new=6,
        weight_returning=3,
        referrers=(
            "https://blog.example.org/best-hiking-gear",
            "https://forum.example.net/t/which-tent",
        ),
        landing="product",
    ),
)

STATIC_PAGES: tuple[tuple[str, str, str], ...] = (  # path, title, name
    ("/about", "About us", "About"),
    ("/shipping", "Shipping & returns", "Shipping"),
    ("/journal/packing-list", "The ultimate packing list", "Journal"),
    ("/stores", "Find a store", "Stores"),
)


def title(text: str) -> str:
    return f"{text} | {SHOP_NAME}"
