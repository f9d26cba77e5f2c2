"""Enrichment: derive the analysis fields of an EventRecord from what the client sent.

Each part is a pure function of one input, cached where inputs repeat:
user agent -> device (`useragent`), URL query -> campaign (`campaign`),
referrer + campaign -> source/medium (`referrer`), IP -> anonymized IP (`ip`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from stream.enrich import ip
from stream.enrich.campaign import extract_campaign
from stream.enrich.referrer import attribute
from stream.enrich.useragent import parse_user_agent


class Enricher:
    def __init__(self, anonymize_ip: bool = True, headless_is_bot: bool = False) -> None:
        self.anonymize_ip = anonymize_ip
        self.headless_is_bot = headless_is_bot
        self._ip = ip.anonymize_ip if anonymize_ip else ip.normalize_ip

    def enrich(self, record: dict[str, Any]) -> None:
        """Fill the enrichment fields of `record` in place from its ip, user_agent, url, referrer, context."""
        record["ip"] = self._ip(record.get("ip") or "")
        user_agent = record.get("user_agent") or ""
        url = record.get("url") or ""
        referrer = record.get("referrer") or ""
        context = record.get("context") or {}
        page = context.get("page") if isinstance(context.get("page"), dict) else {}
        query_source = url if "?" in url else _text(page.get("search"))  # Segment's page.search
        fallback = context.get("campaign")
        if isinstance(fallback, dict) and fallback:  # not hashable: the parts' own caches only
            record.update(
                _derive(user_agent, self.headless_is_bot, url, query_source, referrer, fallback)
            )
        else:  # the same agent on the same page from the same referrer: one look-up
            record.update(_derived(user_agent, self.headless_is_bot, url, query_source, referrer))


@lru_cache(maxsize=8192)
def _derived(
    user_agent: str, headless_is_bot: bool, url: str, query_source: str, referrer: str
) -> dict[str, Any]:
    """The fields `_derive` gives without a context.campaign; shared, never mutated."""
    return _derive(user_agent, headless_is_bot, url, query_source, referrer, None)


def _derive(
    user_agent: str,
    headless_is_bot: bool,
    url: str,
    query_source: str,
    referrer: str,
    fallback: dict[str, Any] | None,
) -> dict[str, Any]:
    agent = parse_user_agent(user_agent, headless_is_bot)
    campaign = extract_campaign(query_source, fallback)
    source = attribute(referrer, url, campaign)
    return {
        "browser": agent.browser,
        "os": agent.os,
        "device_type": agent.device_type,
        "is_bot": agent.is_bot,
        "utm_source": campaign.source,
        "utm_medium": campaign.medium,
        "utm_campaign": campaign.name,
        "utm_term": campaign.term,
        "utm_content": campaign.content,
        "click_id": campaign.click_id,
        "ref_source": source.source,
        "ref_medium": source.medium,
        "search_engine": source.search_engine,
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
