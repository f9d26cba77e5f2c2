"""Enrichment: derive the analysis fields of an EventRecord from what the client sent.

Each part is a pure function of one input, cached where inputs repeat:
user agent -> device (`useragent`), URL query -> campaign (`campaign`),
referrer + campaign -> source/medium (`referrer`), IP -> anonymized IP (`ip`).
"""

from __future__ import annotations

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

        agent = parse_user_agent(record.get("user_agent") or "", self.headless_is_bot)
        record["browser"], record["os"] = agent.browser, agent.os
        record["device_type"], record["is_bot"] = agent.device_type, agent.is_bot

        url = record.get("url") or ""
        context = record.get("context") or {}
        page = context.get("page") if isinstance(context.get("page"), dict) else {}
        query_source = url if "?" in url else _text(page.get("search"))  # Segment's page.search
        campaign = extract_campaign(query_source, context.get("campaign"))
        record["utm_source"], record["utm_medium"] = campaign.source, campaign.medium
        record["utm_campaign"], record["utm_term"] = campaign.name, campaign.term
        record["utm_content"], record["click_id"] = campaign.content, campaign.click_id

        source = attribute(record.get("referrer") or "", url, campaign)
        record["ref_source"], record["ref_medium"] = source.source, source.medium
        record["search_engine"] = source.search_engine


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
