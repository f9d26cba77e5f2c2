"""Reading an event defensively: client properties are untyped, so nothing here raises."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stream.journey.state import CartLine
from stream.records import EventRecord
from stream.sessionize.assign import Campaign


def num(value: Any, default: float = 0.0) -> float:
    """A finite float from a number or numeric string; `default` otherwise."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            return default
    else:
        return default
    return out if math.isfinite(out) else default


MAX_QUANTITY = 10_000
MAX_TEXT = 512  # longer strings are cut before they enter the state


def text(value: Any) -> str:
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if value is None or isinstance(value, bool | dict | list):
        return ""
    return str(value)[:MAX_TEXT]


def props(event: Mapping[str, Any]) -> dict[str, Any]:
    # Mapping, not EventRecord: compiled code would check that `properties` is a dict
    # before this test of it (a record can break the collector's contract)
    p = event.get("properties")
    return p if isinstance(p, dict) else {}


def campaign(event: EventRecord) -> Campaign:
    return (
        event.get("utm_source") or "",
        event.get("utm_medium") or "",
        event.get("utm_campaign") or "",
        event.get("click_id") or "",
    )


def page_of(event: EventRecord) -> str:
    """The page (or screen) an event was on: url, else path, else screen name."""
    return (event.get("url") or event.get("path") or event.get("name") or "")[:MAX_TEXT]


def line(p: dict[str, Any]) -> CartLine | None:
    """One product from Segment e-commerce properties; None without an id or sku."""
    product_id, sku = text(p.get("product_id")), text(p.get("sku"))
    if not product_id and not sku:
        return None
    quantity = int(min(max(num(p.get("quantity"), 1.0), 0.0), MAX_QUANTITY))
    return (product_id, sku, text(p.get("name")), round(max(num(p.get("price")), 0.0), 4), quantity)


def lines(p: dict[str, Any]) -> list[CartLine] | None:
    """`properties.products` as cart lines, or None when the event has no products list."""
    products = p.get("products")
    if not isinstance(products, list):
        return None
    out = []
    for item in products:
        if isinstance(item, dict) and (got := line(item)) is not None:
            out.append(got)
    return out
