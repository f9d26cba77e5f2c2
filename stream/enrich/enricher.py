"""The Enricher: the parts of `stream.enrich` put together for one record (compiled with
the collector's per-event work, stream/compiled.py; a module of its own because a
package's `__init__` is not)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from stream.enrich import ip
from stream.enrich.campaign import extract_campaign
from stream.enrich.referrer import attribute
from stream.enrich.useragent import parse_user_agent

# The fields the enricher derives, in the order an EventRecord holds them.
ENRICHED = (
    "browser",
    "os",
    "device_type",
    "is_bot",
    "ref_source",
    "ref_medium",
    "search_engine",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "click_id",
)


class Enricher:
    def __init__(self, anonymize_ip: bool = True, headless_is_bot: bool = False) -> None:
        self.anonymize_ip = anonymize_ip
        self.headless_is_bot = headless_is_bot
        self.ip: Callable[[str], str] = ip.anonymize_ip if anonymize_ip else ip.normalize_ip

    def enrich(self, record: dict[str, Any]) -> None:
        """Fill the enrichment fields of `record` in place from its ip, user_agent, url, referrer, context."""
        record["ip"] = self.ip(record.get("ip") or "")
        derived = self.fields(
            record.get("user_agent") or "",
            record.get("url") or "",
            record.get("referrer") or "",
            record.get("context") or {},
        )
        record.update(zip(ENRICHED, derived, strict=True))

    def fields(
        self, user_agent: str, url: str, referrer: str, context: dict[str, Any]
    ) -> tuple[Any, ...]:
        """The values of the ENRICHED fields, in that order (`to_record` builds the record
        with them in place: no placeholders to overwrite)."""
        if "?" in url:
            query_source = url
        else:  # Segment's page.search
            page = context.get("page")
            query_source = _text(page.get("search")) if isinstance(page, dict) else ""
        fallback = context.get("campaign")
        if isinstance(fallback, dict) and fallback:  # not hashable: the parts' own caches only
            return _derive(user_agent, self.headless_is_bot, url, query_source, referrer, fallback)
        # the same agent on the same page from the same referrer: one look-up
        return _derived(user_agent, self.headless_is_bot, url, query_source, referrer)


@lru_cache(maxsize=8192)
def _derived(
    user_agent: str, headless_is_bot: bool, url: str, query_source: str, referrer: str
) -> tuple[Any, ...]:
    """The fields `_derive` gives without a context.campaign (a tuple: never mutated)."""
    return _derive(user_agent, headless_is_bot, url, query_source, referrer, None)


def _derive(
    user_agent: str,
    headless_is_bot: bool,
    url: str,
    query_source: str,
    referrer: str,
    fallback: dict[str, Any] | None,
) -> tuple[Any, ...]:
    agent = parse_user_agent(user_agent, headless_is_bot)
    campaign = extract_campaign(query_source, fallback)
    source = attribute(referrer, url, campaign)
    return (  # ENRICHED's order
        agent.browser,
        agent.os,
        agent.device_type,
        agent.is_bot,
        source.source,
        source.medium,
        source.search_engine,
        campaign.source,
        campaign.medium,
        campaign.name,
        campaign.term,
        campaign.content,
        campaign.click_id,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
