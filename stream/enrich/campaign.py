"""Campaign parameters: UTM tags and ad click ids from the landing page's URL.

The page URL's query wins; Segment's `context.campaign` (analytics.js copies the
UTM tags there as source/medium/name/term/content) fills what the URL lacks.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

# Ad platforms' click ids, first found wins; the order puts the unambiguous ones first.
CLICK_IDS = (
    "gclid", "gbraid", "wbraid", "dclid", "msclkid", "fbclid", "ttclid", "li_fat_id", "twclid"
)  # fmt: skip
_MAY_TAG = re.compile(r"utm_|clid|clkid|braid|li_fat_id")
# URL parameter -> its key in Segment's context.campaign.
_UTM = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}


class Campaign(NamedTuple):
    source: str = ""
    medium: str = ""
    name: str = ""
    term: str = ""
    content: str = ""
    click_id: str = ""
    click_id_type: str = ""  # which parameter carried click_id: gclid, fbclid...

    @property
    def tagged(self) -> bool:
        """True when UTM tags say where the visit came from."""
        return bool(self.source or self.medium)


NO_CAMPAIGN = Campaign()


def extract_campaign(url: str, fallback: dict[str, Any] | None = None) -> Campaign:
    """'https://shop.example/?utm_source=news&gclid=abc' -> Campaign(source='news', click_id='abc', click_id_type='gclid')."""
    if not isinstance(fallback, dict) or not fallback:
        return _url_campaign(url)
    return _campaign(_params(url), fallback)


@lru_cache(maxsize=8192)
def _url_campaign(url: str) -> Campaign:
    """The campaign of a URL alone: landing URLs repeat (one link per ad, per newsletter)."""
    return _campaign(_params(url), {})


def _campaign(params: dict[str, str], fallback: dict[str, Any]) -> Campaign:
    if not params and not fallback:
        return NO_CAMPAIGN
    tags = {}
    for param, key in _UTM.items():
        value = params.get(param) or fallback.get(key)
        tags[key] = value.strip() if isinstance(value, str) else ""
    for param in CLICK_IDS:
        if params.get(param):
            return Campaign(**tags, click_id=params[param], click_id_type=param)
    return Campaign(**tags)


def _params(url: str) -> dict[str, str]:
    return dict(parse_qsl(query)) if (query := _query(url)) else {}


def _query(url: str) -> str:
    query = url.partition("?")[2].partition("#")[0]
    # Most queries carry no campaign parameter: skip parsing those.
    return query if _MAY_TAG.search(query) else ""
