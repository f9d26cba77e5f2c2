"""The visitor state's encoding: lossless, compact, versioned."""

from __future__ import annotations

import dataclasses
import hashlib

import lz4.block
import orjson
import pytest

from stream.journey import StageMachine, apply, decode_state, encode_state
from stream.journey.state import (
    _DICT_1,
    FORMAT,
    SessionState,
    VisitorState,
    copy_state,
    state_json,
    store_state,
)
from stream.sessionize.rules import SessionRules
from tests.golden.script import event

pytestmark = pytest.mark.unit

T0 = 1_709_287_200_000
LONG_URL = "https://shop.example/category/lighting/desk-lamps?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale_2024"


def active_visitor() -> VisitorState:
    """A typical active visitor: an ad landing, a product, two cart lines, one open session."""
    machine, rules, state = StageMachine.load(), SessionRules(), None
    events = [
        event(
            ts=T0,
            message_id="m0",
            url=LONG_URL,
            referrer="https://www.google.com/search?q=desk+lamp",
            ref_source="google",
            ref_medium="paid",
            utm_source="google",
            utm_medium="cpc",
            utm_campaign="spring_sale_2024",
            click_id="Cj0KCQjw-a-long-gclid-value-1234567890",
        ),
        event(
            ts=T0 + 20_000,
            message_id="m1",
            event="Product Viewed",
            url="https://shop.example/p/lamp-1",
            properties={"product_id": "SKU-10001", "name": "Brass Desk Lamp", "price": 79.9},
        ),
        event(
            ts=T0 + 40_000,
            message_id="m2",
            event="Product Added",
            user_id="customer-000123",
            properties={
                "product_id": "SKU-10001",
                "sku": "BDL-1",
                "name": "Brass Desk Lamp",
                "price": 79.9,
                "quantity": 1,
                "currency": "EUR",
            },
        ),
        event(
            ts=T0 + 50_000,
            message_id="m3",
            event="Product Added",
            properties={
                "product_id": "SKU-10002",
                "sku": "LB-2",
                "name": "LED Bulb E27 warm",
                "price": 6.5,
                "quantity": 2,
            },
        ),
        event(ts=T0 + 60_000, message_id="m4", url="https://shop.example/cart"),
    ]
    for offset, e in enumerate(events):
        state = apply(state, e, offset, rules, machine).state
    return state


def test_round_trip_is_lossless() -> None:
    state = active_visitor()
    assert decode_state(encode_state(state)) == state
    assert decode_state(encode_state(state)).sessions[0].campaign == state.sessions[0].campaign


def test_a_typical_active_visitor_encodes_under_2_kb() -> None:
    size = len(encode_state(active_visitor()))
    print(f"encoded state of a typical active visitor: {size} bytes")
    assert size < 2048


def test_an_older_row_decodes_with_defaults_and_a_newer_one_is_refused() -> None:
    row = orjson.loads(encode_state(VisitorState("v1")))
    assert decode_state(orjson.dumps(row[:-2])) == VisitorState("v1", is_bot=False, version=0)
    with pytest.raises(ValueError):
        decode_state(orjson.dumps([*row, "extra"]))
    with pytest.raises(ValueError):
        decode_state(orjson.dumps([FORMAT + 1, *row[1:]]))


def test_copy_shares_nothing_mutable() -> None:
    state = active_visitor()
    copy = copy_state(state)
    copy.sessions[0].events += 1
    copy.offsets[0] = 99
    copy.cart.clear()
    copy.history.append(("x", 0))
    assert state == decode_state(encode_state(active_visitor()))


def test_state_records_are_slotted() -> None:
    assert not hasattr(VisitorState("v"), "__dict__")
    assert not hasattr(SessionState("s", 0, 0), "__dict__")


def test_the_stored_state_decodes_and_is_smaller_with_the_dictionary() -> None:
    state = active_visitor()
    stored = store_state(state)
    assert stored[:1] == b"\x05"
    assert decode_state(stored) == state
    assert state_json(stored) == encode_state(state)
    assert store_state(state) == stored  # deterministic
    plain = b"\x04" + lz4.block.compress(encode_state(state))
    print(f"stored state: {len(stored)} B with the dictionary, {len(plain)} B without")
    assert len(stored) < 0.8 * len(plain)


def test_states_stored_by_earlier_versions_still_decode() -> None:
    """JSON (the first format, and the ClickHouse archive) and plain LZ4 (before the
    dictionary): both are in changelogs and archives."""
    state = active_visitor()
    assert decode_state(encode_state(state)) == state
    assert decode_state(b"\x04" + lz4.block.compress(encode_state(state))) == state
    assert state_json(b"\x04" + lz4.block.compress(b"[1]")) == b"[1]"


def test_the_dictionary_never_changes() -> None:
    """States stored with it need exactly these bytes to decode: a new dictionary is a
    new file under a new marker."""
    digest = hashlib.sha256(_DICT_1).hexdigest()
    assert digest == "67e5c72b960fdcbd7c3817b248600b07b9475fcdc373d8725deb1a20031b5184"


def _required(cls) -> list:
    return ["v"] if cls is VisitorState else ["s", 0, 0]


@pytest.mark.parametrize("cls", [SessionState, VisitorState])
def test_the_written_out_init_matches_the_fields(cls) -> None:
    """The __init__s are written out (compiled, a generated one is interpreted Python):
    the fields' order and defaults, a fresh list or dict per default factory."""
    fields = dataclasses.fields(cls)
    a, b = cls(*_required(cls)), cls(*_required(cls))
    for f in fields[len(_required(cls)) :]:
        if f.default_factory is not dataclasses.MISSING:
            assert getattr(a, f.name) == f.default_factory(), f.name
            assert getattr(a, f.name) is not getattr(b, f.name), f.name
        else:
            got = getattr(a, f.name)
            assert got == f.default and type(got) is type(f.default), f.name
    # Every field positionally, in declared order (decode_state builds states so).
    values = [getattr(a, f.name) for f in fields]
    values = [
        f"<{f.name}>" if isinstance(v, str) else v for f, v in zip(fields, values, strict=True)
    ]
    c = cls(*values)
    assert [getattr(c, f.name) for f in fields] == values
