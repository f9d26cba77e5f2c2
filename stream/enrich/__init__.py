"""Enrichment: derive the analysis fields of an EventRecord from what the client sent.

Each part is a pure function of one input, cached where inputs repeat:
user agent -> device (`useragent`), URL query -> campaign (`campaign`),
referrer + campaign -> source/medium (`referrer`), IP -> anonymized IP (`ip`).
`Enricher` (`enricher`) puts them together for one record.
"""

from stream.enrich.enricher import ENRICHED, Enricher

__all__ = ["ENRICHED", "Enricher"]
