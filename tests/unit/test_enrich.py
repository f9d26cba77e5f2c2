"""Enrichment: user agents, referrers, campaigns, IP anonymization."""

from __future__ import annotations

from typing import Any

import pytest

from stream.enrich import Enricher
from stream.enrich.campaign import Campaign, extract_campaign
from stream.enrich.ip import anonymize_ip, normalize_ip
from stream.enrich.referrer import Source, attribute, classify_referrer, utm_medium
from stream.enrich.useragent import Agent, parse_user_agent

pytestmark = pytest.mark.unit

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"  # fmt: skip
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"  # fmt: skip
IPAD = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1"  # fmt: skip
ANDROID_TABLET = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"  # fmt: skip
ANDROID_PHONE = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"  # fmt: skip
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.28 Safari/537.36"  # fmt: skip


@pytest.mark.parametrize(
    ("ua", "agent"),
    [
        (CHROME, Agent("Chrome", "Windows", "desktop", False)),
        (IPHONE, Agent("Mobile Safari", "iOS", "mobile", False)),
        (IPAD, Agent("Mobile Safari", "iOS", "tablet", False)),
        (ANDROID_PHONE, Agent("Chrome Mobile", "Android", "mobile", False)),
        (ANDROID_TABLET, Agent("Chrome", "Android", "tablet", False)),
        (GOOGLEBOT, Agent("Googlebot", "Other", "bot", True)),
        (
            "Mozilla/5.0 (compatible; SomeNewCrawler/1.0)",
            Agent("SomeNewCrawler", "Other", "bot", True),
        ),
        (
            "Mozilla/5.0 (compatible; PriceWatchBot; +https://pw.example)",
            Agent("PriceWatchBot", "Other", "bot", True),
        ),
        # HTTP libraries carry server-side events: not bots, not a device either.
        ("curl/8.4.0", Agent("curl", "Other", "other", False)),
        ("analytics-python/2.4.0", Agent("Other", "Other", "other", False)),
        (HEADLESS, Agent("HeadlessChrome", "Linux", "desktop", False)),
        ("", Agent("", "", "other", False)),
    ],
)
def test_user_agents(ua: str, agent: Agent) -> None:
    assert parse_user_agent(ua) == agent


def test_headless_chrome_is_a_bot_only_when_asked() -> None:
    assert parse_user_agent(HEADLESS, headless_is_bot=True) == Agent(
        "HeadlessChrome", "Linux", "bot", True
    )
    assert Enricher(headless_is_bot=False).headless_is_bot is False


def test_cubot_phones_are_not_bots() -> None:
    ua = "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"  # fmt: skip
    assert parse_user_agent(ua).is_bot is False


def test_huge_user_agents_are_cut_before_parsing() -> None:
    assert parse_user_agent(CHROME + " x" * 10_000).browser == "Chrome"


PAGE = "https://www.shop.example.com/p/monopoly"


@pytest.mark.parametrize(
    ("referrer", "source"),
    [
        ("", Source("(direct)", "(none)", "")),
        ("about:blank", Source("(direct)", "(none)", "")),
        ("https://www.google.com/", Source("google", "search", "google")),
        ("https://www.google.co.uk/search?q=monopoly", Source("google", "search", "google")),
        ("https://www.bing.com/search?q=x", Source("bing", "search", "bing")),
        ("https://duckduckgo.com/", Source("duckduckgo", "search", "duckduckgo")),
        ("https://search.yahoo.co.jp/", Source("yahoo", "search", "yahoo")),
        ("https://www.baidu.com/link?url=x", Source("baidu", "search", "baidu")),
        ("https://yandex.ru/search/?text=x", Source("yandex", "search", "yandex")),
        ("https://www.ecosia.org/search?q=x", Source("ecosia", "search", "ecosia")),
        (
            "android-app://com.google.android.googlequicksearchbox/",
            Source("google", "search", "google"),
        ),
        ("https://l.facebook.com/l.php?u=x", Source("facebook", "social", "")),
        ("https://l.instagram.com/", Source("instagram", "social", "")),
        ("https://t.co/abc", Source("twitter", "social", "")),
        ("https://x.com/someone", Source("twitter", "social", "")),
        ("https://www.linkedin.com/feed/", Source("linkedin", "social", "")),
        ("https://www.pinterest.fr/pin/1", Source("pinterest", "social", "")),
        ("https://out.reddit.com/t3_x", Source("reddit", "social", "")),
        ("https://m.youtube.com/watch?v=x", Source("youtube", "social", "")),
        ("https://www.tiktok.com/@shop", Source("tiktok", "social", "")),
        ("https://mail.google.com/mail/u/0/", Source("gmail", "email", "")),
        ("https://outlook.live.com/mail/0/", Source("outlook", "email", "")),
        ("https://shop.example.com/cart", Source("shop.example.com", "internal", "")),
        ("https://blog.other.org/review", Source("blog.other.org", "referral", "")),
        ("http://[::1", Source("(direct)", "(none)", "")),
    ],
)
def test_referrers(referrer: str, source: Source) -> None:
    assert classify_referrer(referrer, PAGE) == source


@pytest.mark.parametrize(
    ("url", "campaign"),
    [
        (
            "https://shop.example/?utm_source=Google&utm_medium=cpc&utm_campaign=spring%20sale&utm_term=board+games&utm_content=ad1",
            Campaign("Google", "cpc", "spring sale", "board games", "ad1"),
        ),
        (
            "https://shop.example/?gclid=Cj0KCQ&x=1",
            Campaign(click_id="Cj0KCQ", click_id_type="gclid"),
        ),
        ("https://shop.example/?fbclid=IwAR2", Campaign(click_id="IwAR2", click_id_type="fbclid")),
        ("https://shop.example/?msclkid=m1", Campaign(click_id="m1", click_id_type="msclkid")),
        ("https://shop.example/?ttclid=t1", Campaign(click_id="t1", click_id_type="ttclid")),
        ("https://shop.example/?dclid=d1", Campaign(click_id="d1", click_id_type="dclid")),
        ("https://shop.example/?li_fat_id=l1", Campaign(click_id="l1", click_id_type="li_fat_id")),
        ("https://shop.example/?twclid=w1", Campaign(click_id="w1", click_id_type="twclid")),
        ("https://shop.example/?page=2", Campaign()),
        ("https://shop.example/#utm_source=fragment", Campaign()),
        ("", Campaign()),
    ],
)
def test_campaign_from_url(url: str, campaign: Campaign) -> None:
    assert extract_campaign(url) == campaign


def test_context_campaign_fills_what_the_url_lacks() -> None:
    fallback = {"source": "newsletter", "medium": "email", "name": "may", "term": None}
    assert extract_campaign("https://shop.example/?utm_source=mailchimp", fallback) == Campaign(
        "mailchimp", "email", "may", "", ""
    )


@pytest.mark.parametrize(
    ("referrer", "url", "source"),
    [
        # UTM tags win over the referrer; cpc/ppc/paid mean paid.
        (
            "https://www.google.com/",
            "/?utm_source=Google&utm_medium=CPC",
            Source("google", "paid", "google"),
        ),
        ("https://www.facebook.com/", "/?utm_source=fb&utm_medium=ppc", Source("fb", "paid", "")),
        ("", "/?utm_source=newsletter&utm_medium=email", Source("newsletter", "email", "")),
        ("", "/?utm_source=partner", Source("partner", "(not set)", "")),
        # Paid click ids without tags: the ad network, paid.
        ("https://www.google.com/", "/?gclid=abc", Source("google", "paid", "google")),
        ("", "/?msclkid=abc", Source("bing", "paid", "")),
        # fbclid also marks organic links: it only names the source when the referrer is lost.
        ("", "/?fbclid=abc", Source("facebook", "social", "")),
        ("https://l.instagram.com/", "/?fbclid=abc", Source("instagram", "social", "")),
        ("https://www.bing.com/", "/", Source("bing", "search", "bing")),
    ],
)
def test_attribution_precedence(referrer: str, url: str, source: Source) -> None:
    page = "https://shop.example.com" + url
    assert attribute(referrer, page, extract_campaign(page)) == source


@pytest.mark.parametrize(
    ("medium", "normalized"),
    [("cpc", "paid"), ("PPC", "paid"), ("paid", "paid"), ("paid_social", "paid"), ("e-mail", "email"),
     ("Social", "social"), ("", "(not set)")],
)  # fmt: skip
def test_utm_medium(medium: str, normalized: str) -> None:
    assert utm_medium(medium) == normalized


@pytest.mark.parametrize(
    ("raw", "anonymized", "normalized"),
    [
        ("203.0.113.42", "203.0.113.0", "203.0.113.42"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::", "2001:db8:abcd:12::1"),
        ("2001:DB8:ABCD:0012:0000:0000:0000:0001", "2001:db8:abcd::", "2001:db8:abcd:12::1"),
        ("::ffff:198.51.100.7", "198.51.100.0", "198.51.100.7"),
        ("fe80::1%eth0", "fe80::", "fe80::1"),
        (" 10.1.2.3 ", "10.1.2.0", "10.1.2.3"),
        ("1.2.3.4:8080", "", ""),
        ("999.1.1.1", "", ""),
        ("not an ip", "", ""),
        ("", "", ""),
    ],
)
def test_ip(raw: str, anonymized: str, normalized: str) -> None:
    assert anonymize_ip(raw) == anonymized
    assert normalize_ip(raw) == normalized


def _record(**fields: Any) -> dict[str, Any]:
    return {"ip": "", "user_agent": "", "url": "", "referrer": "", "context": {}, **fields}


def test_enricher_fills_every_field() -> None:
    record = _record(
        ip="203.0.113.42",
        user_agent=IPHONE,
        url="https://shop.example.com/?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=g1",
        referrer="https://www.google.com/",
    )
    Enricher().enrich(record)
    assert record == _record(
        ip="203.0.113.0",
        user_agent=IPHONE,
        url=record["url"],
        referrer="https://www.google.com/",
        browser="Mobile Safari",
        os="iOS",
        device_type="mobile",
        is_bot=False,
        ref_source="google",
        ref_medium="paid",
        search_engine="google",
        utm_source="google",
        utm_medium="cpc",
        utm_campaign="spring",
        utm_term="",
        utm_content="",
        click_id="g1",
    )


def test_enricher_reads_segment_page_search_and_campaign() -> None:
    context = {"page": {"search": "?utm_source=news&gclid=g2"}, "campaign": {"name": "may"}}
    record = _record(url="https://shop.example.com/", context=context)
    Enricher(anonymize_ip=False).enrich(record)
    assert (record["utm_source"], record["utm_campaign"], record["click_id"]) == (
        "news",
        "may",
        "g2",
    )
    assert (record["ref_source"], record["ref_medium"]) == ("news", "(not set)")
    assert record["ip"] == ""
