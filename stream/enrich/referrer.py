"""Where a visit came from: (source, medium, search engine), the way web analytics reports it.

Precedence: UTM tags, then an ad click id, then the referrer. Referrers are
classified by host: search engines -> "search", social networks -> "social",
webmail -> "email", the page's own host -> "internal", any other host ->
"referral" with the host as source, no referrer -> ("(direct)", "(none)").
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

from stream.enrich.campaign import Campaign

# Exact hosts (and their subdomains), checked first: they beat the brand rule below.
_HOSTS: dict[str, tuple[str, str]] = {
    "mail.google.com": ("gmail", "email"),
    "com.google.android.gm": ("gmail", "email"),  # android-app:// referrer of the Gmail app
    "outlook.live.com": ("outlook", "email"),
    "outlook.office.com": ("outlook", "email"),
    "outlook.office365.com": ("outlook", "email"),
    "mail.yahoo.com": ("yahoo mail", "email"),
    "mail.aol.com": ("aol mail", "email"),
    "mail.proton.me": ("proton mail", "email"),
    "mail.yandex.ru": ("yandex mail", "email"),
    "e.mail.ru": ("mail.ru", "email"),
    "mail.zoho.com": ("zoho mail", "email"),
    "com.google.android.googlequicksearchbox": ("google", "search"),
    "search.brave.com": ("brave", "search"),
    "t.co": ("twitter", "social"),
    "x.com": ("twitter", "social"),
    "fb.com": ("facebook", "social"),
    "fb.me": ("facebook", "social"),
    "youtu.be": ("youtube", "social"),
    "lnkd.in": ("linkedin", "social"),
    "pin.it": ("pinterest", "social"),
    "redd.it": ("reddit", "social"),
}
# Brands matched on the name before the public suffix, so google.de and google.co.uk match.
_SEARCH_BRANDS = (
    "google bing duckduckgo yahoo baidu yandex ecosia qwant startpage naver seznam sogou so ask aol"
)
_SOCIAL_BRANDS = (
    "facebook instagram twitter linkedin pinterest reddit youtube tiktok threads bsky mastodon"
)
_BRANDS = {
    **dict.fromkeys(_SEARCH_BRANDS.split(), "search"),
    **dict.fromkeys(_SOCIAL_BRANDS.split(), "social"),
}
# Second-level labels of country suffixes like co.uk, com.au: the brand is one label further left.
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or"})
# Ad click ids, when no UTM tags say otherwise. fbclid marks organic Facebook links too.
_CLICK_SOURCES = {
    "gclid": ("google", "paid"),
    "gbraid": ("google", "paid"),
    "wbraid": ("google", "paid"),
    "dclid": ("google", "paid"),
    "msclkid": ("bing", "paid"),
    "fbclid": ("facebook", "social"),
    "ttclid": ("tiktok", "paid"),
    "li_fat_id": ("linkedin", "paid"),
    "twclid": ("twitter", "paid"),
}
_PAID = frozenset({"cpc", "ppc", "cpm", "cpv", "cpa", "paid", "retargeting"})
_EMAIL = frozenset({"email", "e-mail", "e_mail", "newsletter"})


class Source(NamedTuple):
    source: str
    medium: str
    search_engine: str  # set whenever the referrer is a search engine, even under UTM tags


DIRECT = Source("(direct)", "(none)", "")


@lru_cache(maxsize=8192)
def attribute(referrer: str, page_url: str, campaign: Campaign) -> Source:
    """The visit's source: UTM tags win, then ad click ids, then the referrer."""
    by_referrer = classify_referrer(referrer, page_url)
    if campaign.tagged:
        medium = utm_medium(campaign.medium)
        return Source(campaign.source.lower() or "(not set)", medium, by_referrer.search_engine)
    if campaign.click_id_type:
        source, medium = _CLICK_SOURCES[campaign.click_id_type]
        # Paid click ids are proof of an ad click; fbclid rides on organic links too.
        if medium == "paid" or by_referrer.medium in ("(none)", "internal", "referral"):
            return Source(source, medium, by_referrer.search_engine)
    return by_referrer


def utm_medium(medium: str) -> str:
    """Normalize utm_medium: cpc/ppc/paid... -> 'paid', email synonyms -> 'email', else lowercased."""
    lowered = medium.strip().lower()
    if not lowered:
        return "(not set)"
    if lowered in _PAID or lowered.startswith("paid"):
        return "paid"
    if lowered in _EMAIL:
        return "email"
    return lowered


def classify_referrer(referrer: str, page_url: str = "") -> Source:
    """'https://www.google.co.uk/' -> Source('google', 'search', 'google')."""
    host = _host(referrer)
    if not host:
        return DIRECT
    if host == _host(page_url):
        return Source(host, "internal", "")
    return _classify_host(host)


@lru_cache(maxsize=4096)
def _classify_host(host: str) -> Source:
    labels = host.split(".")
    for i in range(len(labels) - 1):  # the host, then each parent domain
        known = _HOSTS.get(".".join(labels[i:]))
        if known:
            return Source(known[0], known[1], known[0] if known[1] == "search" else "")
    brand = _brand(labels)
    medium = _BRANDS.get(brand)
    if medium:
        return Source(brand, medium, brand if medium == "search" else "")
    return Source(host, "referral", "")


def _brand(labels: list[str]) -> str:
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return labels[-3]
    return labels[-2] if len(labels) >= 2 else ""


@lru_cache(maxsize=8192)
def _host(url: str) -> str:
    """Lowercased host without 'www.'; '' when the URL has none."""
    if not url:
        return ""
    if "//" not in url:
        if ":" in url.split("/", 1)[0]:  # about:blank, android-app:com.x, data:...
            return ""
        url = "//" + url  # "google.com/search", as some clients send it
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")
