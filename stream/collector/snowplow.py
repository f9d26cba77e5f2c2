"""Snowplow's tracker protocol -> Segment calls, pure: the one table of the mapping.

Snowplow's JavaScript tracker (and its e-commerce plugin), pointed at the collector,
sends its events as flat string maps: POST `/com.snowplowanalytics.snowplow/tp2` with
a `payload_data` self-describing JSON (`{"schema": ..., "data": [event, ...]}`), or GET
`/i?e=pv&...` (the pixel). Each event becomes one Segment call, then goes through the
same validation, normalization and publishing as every other call.

Ids: the domain user id (`duid`, the tracker's first-party cookie) is the anonymous id,
`uid` (setUserId) the user id, the network user id (`nuid`/`tnuid`, else the
collector's `sp` cookie) is kept in `context.snowplow` and is the anonymous id only
when the event has no `duid` (anonymous tracking). `eid` is the message id, so a
retried event keeps its id. Times: `ttm` (true timestamp) else `dtm` (device created)
is the timestamp and `stm` (device sent) is `sentAt`: the clock-skew correction works
as for Segment's SDKs.

Authorisation: Snowplow sends no write key. A source is an allowed list of app ids
(`aid`, set by `newTracker(..., {appId})`): CLICKSTREAM_SNOWPLOW_APP_IDS=app-id:source.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

PAYLOAD_SCHEMA_PREFIX = "iglu:com.snowplowanalytics.snowplow/payload_data/"
ECOMMERCE = "iglu:com.snowplowanalytics.snowplow.ecommerce/"
MAX_PING_SECONDS = 3600  # the Page Ping schema's bound

# 1×1 transparent GIF: the answer to GET /i.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


class SnowplowError(ValueError):
    """One event cannot be translated: the reason goes to the dead letter."""


def entity_name(schema: str) -> str:
    """`iglu:vendor/name/jsonschema/1-0-0` -> `name`."""
    parts = schema.removeprefix("iglu:").split("/")
    return parts[1] if len(parts) >= 2 else schema


def vendor(schema: str) -> str:
    return schema.removeprefix("iglu:").split("/", 1)[0]


# ---------------------------------------------------------------------------------
# Property builders from Snowplow e-commerce entities (product, cart, transaction...).


def _product(data: Mapping[str, Any]) -> dict[str, Any]:
    """A Snowplow product entity -> Segment's product properties."""
    out = {
        "product_id": data.get("id"),
        "name": data.get("name"),
        "category": data.get("category"),
        "brand": data.get("brand"),
        "variant": data.get("variant"),
        "price": data.get("price"),
        "currency": data.get("currency"),
        "quantity": data.get("quantity"),
        "position": data.get("position"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _products(entities: Mapping[str, list[dict]]) -> list[dict[str, Any]]:
    return [_product(p) for p in entities.get("product", [])]


def _first(entities: Mapping[str, list[dict]], name: str) -> dict[str, Any]:
    found = entities.get(name) or [{}]
    return found[0]


def _single_product(action: dict, entities: Mapping[str, list[dict]]) -> dict[str, Any]:
    products = _products(entities)
    return products[0] if products else {}


def _cart_change(action: dict, entities: Mapping[str, list[dict]]) -> dict[str, Any]:
    props = _single_product(action, entities)
    cart = _first(entities, "cart")
    if cart.get("cart_id") is not None:
        props["cart_id"] = cart["cart_id"]
    if cart.get("total_value") is not None:
        props["value"] = cart["total_value"]
    if "currency" not in props and cart.get("currency") is not None:
        props["currency"] = cart["currency"]
    if len(entities.get("product", [])) > 1:
        props["products"] = _products(entities)
    return props


def _list(action: dict, entities: Mapping[str, list[dict]]) -> dict[str, Any]:
    props: dict[str, Any] = {"products": _products(entities)}
    if action.get("name") is not None:
        props["list_id"] = props["category"] = action["name"]
    return props


def _list_click(action: dict, entities: Mapping[str, list[dict]]) -> dict[str, Any]:
    props = _single_product(action, entities)
    if action.get("name") is not None:
        props["list_id"] = action["name"]
    return props


def _checkout(action: dict, entities: Mapping[str, list[dict]]) -> dict[str, Any]:
    step = _first(entities, "checkout_step")
    out = {
        "step": step.get("step"),
        "shipping_method": step.get("delivery_method") or step.get("delivery_provider"),
        "payment_method": step.get("payment_method"),
        "coupon": step.get("coupon_code"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _transaction(action: dict, entities: Mapping[str, list[dict]]) -> dict[str, Any]:
    t = _first(entities, "transaction")
    out = {
        "order_id": t.get("transaction_id"),
        "revenue": t.get("revenue"),
        "total": t.get("revenue"),
        "tax": t.get("tax"),
        "shipping": t.get("shipping"),
        "discount": t.get("discount_amount"),
        "coupon": t.get("discount_code"),
        "currency": t.get("currency"),
        "payment_method": t.get("payment_method"),
        "products": _products(entities) or None,
    }
    return {k: v for k, v in out.items() if v is not None}


def _refund(action: dict, entities: Mapping[str, list[dict]]) -> dict[str, Any]:
    r = _first(entities, "refund")
    out = {
        "order_id": r.get("transaction_id"),
        "total": r.get("refund_amount"),
        "currency": r.get("currency"),
        "reason": r.get("refund_reason"),
        "products": _products(entities) or None,
    }
    return {k: v for k, v in out.items() if v is not None}


def _promotion(action: dict, entities: Mapping[str, list[dict]]) -> dict[str, Any]:
    p = _first(entities, "promotion")
    out = {
        "promotion_id": p.get("id"),
        "name": p.get("name"),
        "creative": p.get("creative_id"),
        "position": p.get("slot"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _transaction_error(action: dict, entities: Mapping[str, list[dict]]) -> dict[str, Any]:
    e = _first(entities, "transaction_error")
    t = _first(entities, "transaction")
    out = {
        "order_id": t.get("transaction_id"),
        "error_code": e.get("error_code"),
        "error_description": e.get("error_description"),
    }
    return {k: v for k, v in out.items() if v is not None}


Props = Callable[[dict, Mapping[str, list[dict]]], dict[str, Any]]

# THE MAPPING: Snowplow e-commerce action type (snowplow_ecommerce_action.type) ->
# (our e-commerce event, properties from the action and its entities). Checkout steps
# are in CHECKOUT_STEPS: step 1 starts the checkout.
ECOMMERCE_ACTIONS: dict[str, tuple[str, Props]] = {
    "product_view": ("Product Viewed", _single_product),
    "list_view": ("Product List Viewed", _list),
    "list_click": ("Product Clicked", _list_click),
    "add_to_cart": ("Product Added", _cart_change),
    "remove_from_cart": ("Product Removed", _cart_change),
    "checkout_step": ("Checkout Step Completed", _checkout),
    "transaction": ("Order Completed", _transaction),
    "refund": ("Order Refunded", _refund),
    "promo_view": ("Promotion Viewed", _promotion),
    "promo_click": ("Promotion Clicked", _promotion),
    "trns_error": ("Transaction Error", _transaction_error),
}
CHECKOUT_STEPS = {1: "Checkout Started"}  # other steps: Checkout Step Completed

# Tracker protocol event types (`e`) -> (Segment call type, how the event is built).
EVENT_TYPES = {
    "pv": "page view -> page",
    "pp": "page ping -> track Page Ping (engaged_seconds = the heartbeat)",
    "se": "structured event -> track <se_ac> {category, label, property, value}",
    "ue": "self-describing event -> e-commerce mapping, else track <schema name> {data}",
    "tr": "legacy transaction -> track Order Completed",
    "ti": "legacy transaction item -> track Order Item",
}


# ---------------------------------------------------------------------------------


def parse_post_body(body: Any) -> list[Any]:
    """The events of a tp2 POST body: `payload_data` self-describing JSON."""
    if not isinstance(body, dict):
        raise SnowplowError("body must be a payload_data JSON object")
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.startswith(PAYLOAD_SCHEMA_PREFIX):
        raise SnowplowError(f"body.schema must be {PAYLOAD_SCHEMA_PREFIX}jsonschema/1-0-*")
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise SnowplowError("body.data must be a non-empty array of events")
    return data


def app_id(event: Any) -> str:
    value = event.get("aid") if isinstance(event, dict) else None
    return value if isinstance(value, str) else ""


def translate(
    event: Mapping[str, Any], *, heartbeat_s: float, network_user_id: str = ""
) -> dict[str, Any]:
    """One tracker-protocol event -> one Segment call (validated afterwards like any call)."""
    if not isinstance(event, Mapping):
        raise SnowplowError("event must be a JSON object")
    e = _s(event.get("e"))
    if not e:
        raise SnowplowError("e (the event type) is required")
    entities = _entities(event)
    nuid = _s(event.get("nuid")) or _s(event.get("tnuid")) or network_user_id
    call: dict[str, Any] = {
        "messageId": _s(event.get("eid")) or None,
        "anonymousId": _s(event.get("duid")) or nuid or None,
        "userId": _s(event.get("uid")) or None,
        "context": _context(event, e, nuid, entities),
    }
    stamp = event.get("ttm") or event.get("dtm")
    if stamp is not None:
        call["timestamp"] = _iso(stamp, "dtm")
    if event.get("stm") is not None:
        call["sentAt"] = _iso(event["stm"], "stm")

    if e == "pv":
        call["type"] = "page"
        call["name"] = _s(event.get("page")) or None
        call["properties"] = _page_properties(event)
    elif e == "pp":
        call.update(type="track", event="Page Ping")
        call["properties"] = {
            "engaged_seconds": min(max(heartbeat_s, 0), MAX_PING_SECONDS),
            **{
                k: _num(event.get(k))
                for k in ("pp_mix", "pp_max", "pp_miy", "pp_may")
                if k in event
            },
        }
    elif e == "se":
        action = _s(event.get("se_ac"))
        if not action:
            raise SnowplowError("se_ac (the structured event's action) is required")
        call.update(type="track", event=action)
        props = {
            "category": _s(event.get("se_ca")) or None,
            "label": _s(event.get("se_la")) or None,
            "property": _s(event.get("se_pr")) or None,
            "value": _num(event.get("se_va")),
        }
        call["properties"] = {k: v for k, v in props.items() if v is not None}
    elif e == "ue":
        name, props, schema = _self_describing(event, entities)
        call.update(type="track", event=name, properties=props)
        call["context"]["snowplow"]["schema"] = schema
    elif e == "tr":
        call.update(type="track", event="Order Completed")
        props = {
            "order_id": _s(event.get("tr_id")) or None,
            "affiliation": _s(event.get("tr_af")) or None,
            "revenue": _num(event.get("tr_tt")),
            "total": _num(event.get("tr_tt")),
            "tax": _num(event.get("tr_tx")),
            "shipping": _num(event.get("tr_sh")),
            "currency": _s(event.get("tr_cu")) or None,
        }
        call["properties"] = {k: v for k, v in props.items() if v is not None}
    elif e == "ti":
        call.update(type="track", event="Order Item")
        props = {
            "order_id": _s(event.get("ti_id")) or None,
            "sku": _s(event.get("ti_sk")) or None,
            "name": _s(event.get("ti_nm")) or None,
            "category": _s(event.get("ti_ca")) or None,
            "price": _num(event.get("ti_pr")),
            "quantity": _int(event.get("ti_qu")),
            "currency": _s(event.get("ti_cu")) or None,
        }
        call["properties"] = {k: v for k, v in props.items() if v is not None}
    else:
        raise SnowplowError(f"e={e!r} is not a tracker-protocol event type we map")
    return {k: v for k, v in call.items() if v is not None}


def _self_describing(
    event: Mapping[str, Any], entities: Mapping[str, list[dict]]
) -> tuple[str, dict[str, Any], str]:
    envelope = _json_field(event, "ue_pr", "ue_px")
    inner = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("schema"), str):
        raise SnowplowError("ue_pr/ue_px must hold an unstruct_event with data.schema")
    schema, data = inner["schema"], inner.get("data")
    data = data if isinstance(data, dict) else {}
    if schema.startswith(ECOMMERCE) and entity_name(schema) == "snowplow_ecommerce_action":
        kind = _s(data.get("type"))
        if kind not in ECOMMERCE_ACTIONS:
            raise SnowplowError(f"e-commerce action type {kind!r} is not one we map")
        name, build = ECOMMERCE_ACTIONS[kind]
        props = build(data, entities)
        if kind == "checkout_step":
            name = CHECKOUT_STEPS.get(props.get("step"), name)  # type: ignore[arg-type]
        return name, props, schema
    return entity_name(schema), dict(data), schema


def _entities(event: Mapping[str, Any]) -> dict[str, list[dict]]:
    """Context entities by name (`product` -> [data, ...]), from `co` or base64 `cx`."""
    if "co" not in event and "cx" not in event:
        return {}
    contexts = _json_field(event, "co", "cx")
    items = contexts.get("data") if isinstance(contexts, dict) else None
    if not isinstance(items, list):
        raise SnowplowError("co/cx must hold a contexts self-describing JSON with a data array")
    out: dict[str, list[dict]] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("schema"), str):
            data = item.get("data")
            out.setdefault(entity_name(item["schema"]), []).append(
                data if isinstance(data, dict) else {}
            )
    return out


def _context(
    event: Mapping[str, Any], e: str, nuid: str, entities: Mapping[str, list[dict]]
) -> dict[str, Any]:
    url = _s(event.get("url"))
    page = {
        "url": url or None,
        "path": _path(url),
        "referrer": _s(event.get("refr")) or None,
        "title": _s(event.get("page")) or None,
    }
    snowplow = {
        "event": e,
        "app_id": _s(event.get("aid")),
        "platform": _s(event.get("p")) or None,
        "namespace": _s(event.get("tna")) or None,
        "tracker_version": _s(event.get("tv")) or None,
        "domain_user_id": _s(event.get("duid")) or None,
        "network_user_id": nuid or None,
        "domain_session_id": _s(event.get("sid")) or None,
        "domain_session_index": _int(event.get("vid")),
        "page_view_id": _s(_first(entities, "web_page").get("id")) or None,
    }
    context: dict[str, Any] = {
        "page": {k: v for k, v in page.items() if v is not None},
        "library": {"name": "snowplow", "version": _s(event.get("tv"))},
        "snowplow": {k: v for k, v in snowplow.items() if v is not None},
    }
    if ua := _s(event.get("ua")):
        context["userAgent"] = ua
    if lang := _s(event.get("lang")):
        context["locale"] = lang
    if tz := _s(event.get("tz")):
        context["timezone"] = tz
    return context


def _page_properties(event: Mapping[str, Any]) -> dict[str, Any]:
    url = _s(event.get("url"))
    props = {
        "url": url or None,
        "path": _path(url),
        "referrer": _s(event.get("refr")) or None,
        "title": _s(event.get("page")) or None,
    }
    return {k: v for k, v in props.items() if v is not None}


def _json_field(event: Mapping[str, Any], plain: str, encoded: str) -> Any:
    if plain in event:
        raw = event[plain]
        if isinstance(raw, dict):
            return raw
        text = _s(raw).encode()
    else:
        value = _s(event.get(encoded))
        try:  # base64url, padding optional (the tracker strips it)
            text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise SnowplowError(f"{encoded} is not base64url") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise SnowplowError(f"{plain}/{encoded} is not JSON") from None


def _iso(value: Any, name: str) -> str:
    """Epoch milliseconds (number or digits) -> ISO-8601; anything else is kept as given,
    so the validator refuses it with its own reason."""
    try:
        ms = int(value)
        return (
            datetime.fromtimestamp(ms / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)


def _path(url: str) -> str | None:
    if not url:
        return None
    with contextlib.suppress(ValueError):
        return urlsplit(url).path or "/"
    return None


def _s(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, int | float):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and "." not in str(value) else number


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if isinstance(number, int | float) and float(number).is_integer() else None
