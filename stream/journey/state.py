"""Journey state of one visitor, and its compact encoding for the Faust table.

Encoded as positional JSON arrays (orjson), `[FORMAT, field, field, ...]` in the
declared field order: about half the size of keyed JSON. Compatibility rule: add
fields only at the end, with a default; an older row decodes with those defaults.
Stages are stored by name, so reordering stages.json never corrupts a state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from importlib import resources
from operator import attrgetter
from typing import Any

import lz4.block
import orjson

from stream.sessionize.assign import Campaign

FORMAT = 1

# Bounds that keep one visitor's state small (< 2 KB for a typical active visitor).
MAX_OPEN_SESSIONS = 8
MAX_CLOSED_KEPT = 4  # closed sessions a late event can still amend; older ones set `floor`
MAX_COUNTED = 8  # recent metric rows the visitor was counted in (distinct visitors)
MAX_CART_LINES = 50
MAX_HISTORY = 16
MAX_ORDER_IDS = 8

CartLine = tuple[str, str, str, float, int]  # product_id, sku, name, price, quantity
Product = tuple[str, str, str]  # product_id, name, url
Step = tuple  # (stage, ts, event id, session id); older states hold (stage, ts)


# init=False, each __init__ written out: compiled, a dataclass's generated __init__ stays
# interpreted Python, and a state is made per visitor per batch (BENCHMARKS.md, seventh
# session). Keep them in step with the fields (test_journey_state.py checks).
@dataclass(slots=True, init=False)
class SessionState:
    id: str  # from (visitor, first-seen start): stays when `start` moves earlier
    start: int
    end: int  # latest event time in the session
    events: int = 0
    pageviews: int = 0
    interactions: int = 0  # track events other than Page Ping (bounce rule)
    engaged_s: float = 0.0
    stage: str = ""  # furthest stage matched by the session's events
    landing_page: str = ""
    landing_ts: int = 0
    exit_page: str = ""
    exit_ts: int = 0
    referrer: str = ""
    ref_source: str = ""
    ref_medium: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    click_id: str = ""
    device_type: str = ""
    browser: str = ""
    os: str = ""
    is_bot: bool = False
    orders: int = 0
    revenue: float = 0.0
    refunds: int = 0
    cart_touched: bool = False  # cart activity here: an abandonment can be ours
    checkout: bool = False
    is_new: bool = False  # the visitor's first session
    after_purchase: bool = False  # opened after the visitor's last order
    ended_by: str = ""  # why a later session was opened instead of extending this one
    # Metrics: the row (window start, key) the session was counted in, and what its
    # close added there (a reopened session takes it back before it closes again).
    window: int = 0
    dims: tuple | None = None
    closed_as: str = ""  # close reason, while kept closed
    counted_bounce: bool = False
    counted_stage: str = ""

    def __init__(
        self,
        id: str,
        start: int,
        end: int,
        events: int = 0,
        pageviews: int = 0,
        interactions: int = 0,
        engaged_s: float = 0.0,
        stage: str = "",
        landing_page: str = "",
        landing_ts: int = 0,
        exit_page: str = "",
        exit_ts: int = 0,
        referrer: str = "",
        ref_source: str = "",
        ref_medium: str = "",
        utm_source: str = "",
        utm_medium: str = "",
        utm_campaign: str = "",
        click_id: str = "",
        device_type: str = "",
        browser: str = "",
        os: str = "",
        is_bot: bool = False,
        orders: int = 0,
        revenue: float = 0.0,
        refunds: int = 0,
        cart_touched: bool = False,
        checkout: bool = False,
        is_new: bool = False,
        after_purchase: bool = False,
        ended_by: str = "",
        window: int = 0,
        dims: tuple | None = None,
        closed_as: str = "",
        counted_bounce: bool = False,
        counted_stage: str = "",
    ) -> None:
        self.id = id
        self.start = start
        self.end = end
        self.events = events
        self.pageviews = pageviews
        self.interactions = interactions
        self.engaged_s = engaged_s
        self.stage = stage
        self.landing_page = landing_page
        self.landing_ts = landing_ts
        self.exit_page = exit_page
        self.exit_ts = exit_ts
        self.referrer = referrer
        self.ref_source = ref_source
        self.ref_medium = ref_medium
        self.utm_source = utm_source
        self.utm_medium = utm_medium
        self.utm_campaign = utm_campaign
        self.click_id = click_id
        self.device_type = device_type
        self.browser = browser
        self.os = os
        self.is_bot = is_bot
        self.orders = orders
        self.revenue = revenue
        self.refunds = refunds
        self.cart_touched = cart_touched
        self.checkout = checkout
        self.is_new = is_new
        self.after_purchase = after_purchase
        self.ended_by = ended_by
        self.window = window
        self.dims = dims
        self.closed_as = closed_as
        self.counted_bounce = counted_bounce
        self.counted_stage = counted_stage

    @property
    def campaign(self) -> Campaign:
        return (self.utm_source, self.utm_medium, self.utm_campaign, self.click_id)


@dataclass(slots=True, init=False)
class VisitorState:
    visitor_id: str
    anonymous_id: str = ""
    user_id: str = ""
    source: str = ""
    first_seen: int = 0
    last_seen: int = 0  # latest applied event time: lateness and lapse measure from it
    last_event_id: str = ""  # message_id of that event (keys the lapse records)
    floor: int = 0  # events before this are late: closed sessions settled them
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> last applied
    sessions: list[SessionState] = field(default_factory=list)  # open, by start
    session_count: int = 0
    events: int = 0
    late: int = 0
    orders: int = 0
    revenue: float = 0.0
    refunded: float = 0.0
    refunds: int = 0
    last_order_ts: int = 0
    order_ids: list[str] = field(default_factory=list)  # recent, to count an order once
    stage: str = ""  # lifetime stage; "lapsed" is the only way back
    max_stage: str = ""  # furthest ever, lapses included (stage triggers fire once)
    history: list[Step] = field(default_factory=list)
    first_referrer: str = ""
    first_landing_page: str = ""
    first_utm_source: str = ""
    first_utm_medium: str = ""
    first_utm_campaign: str = ""
    cart: list[CartLine] = field(default_factory=list)
    currency: str = ""
    last_product: Product | None = None
    is_bot: bool = False  # of the latest event
    version: int = 0  # grows with every change: the snapshot's ReplacingMergeTree version
    # Collector clock (received_at) of the latest applied event: idle sessions close,
    # buyers lapse and state expires by how long the partition has not heard from
    # the visitor on this clock, never by a client's clock.
    last_arrival: int = 0
    closed: list[SessionState] = field(default_factory=list)  # recently closed, by start
    metric_dims: tuple | None = None  # latest metrics key (stage changes, triggers)
    counted: list[tuple[int, int]] = field(default_factory=list)  # (window, key hash)
    marketing: bool = True  # marketing consent of the latest event (journey/consent.py)

    def __init__(
        self,
        visitor_id: str,
        anonymous_id: str = "",
        user_id: str = "",
        source: str = "",
        first_seen: int = 0,
        last_seen: int = 0,
        last_event_id: str = "",
        floor: int = 0,
        offsets: dict[int, int] | None = None,
        sessions: list[SessionState] | None = None,
        session_count: int = 0,
        events: int = 0,
        late: int = 0,
        orders: int = 0,
        revenue: float = 0.0,
        refunded: float = 0.0,
        refunds: int = 0,
        last_order_ts: int = 0,
        order_ids: list[str] | None = None,
        stage: str = "",
        max_stage: str = "",
        history: list[Step] | None = None,
        first_referrer: str = "",
        first_landing_page: str = "",
        first_utm_source: str = "",
        first_utm_medium: str = "",
        first_utm_campaign: str = "",
        cart: list[CartLine] | None = None,
        currency: str = "",
        last_product: Product | None = None,
        is_bot: bool = False,
        version: int = 0,
        last_arrival: int = 0,
        closed: list[SessionState] | None = None,
        metric_dims: tuple | None = None,
        counted: list[tuple[int, int]] | None = None,
        marketing: bool = True,
    ) -> None:
        self.visitor_id = visitor_id
        self.anonymous_id = anonymous_id
        self.user_id = user_id
        self.source = source
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.last_event_id = last_event_id
        self.floor = floor
        self.offsets = {} if offsets is None else offsets
        self.sessions = [] if sessions is None else sessions
        self.session_count = session_count
        self.events = events
        self.late = late
        self.orders = orders
        self.revenue = revenue
        self.refunded = refunded
        self.refunds = refunds
        self.last_order_ts = last_order_ts
        self.order_ids = [] if order_ids is None else order_ids
        self.stage = stage
        self.max_stage = max_stage
        self.history = [] if history is None else history
        self.first_referrer = first_referrer
        self.first_landing_page = first_landing_page
        self.first_utm_source = first_utm_source
        self.first_utm_medium = first_utm_medium
        self.first_utm_campaign = first_utm_campaign
        self.cart = [] if cart is None else cart
        self.currency = currency
        self.last_product = last_product
        self.is_bot = is_bot
        self.version = version
        self.last_arrival = last_arrival
        self.closed = [] if closed is None else closed
        self.metric_dims = metric_dims
        self.counted = [] if counted is None else counted
        self.marketing = marketing


_SESSION = tuple(f.name for f in fields(SessionState))
_I_SESSION_DIMS = _SESSION.index("dims")
_VISITOR = tuple(f.name for f in fields(VisitorState))
_I_OFFSETS = _VISITOR.index("offsets")
_I_SESSIONS = _VISITOR.index("sessions")
_I_ORDER_IDS = _VISITOR.index("order_ids")
_I_HISTORY = _VISITOR.index("history")
_I_CART = _VISITOR.index("cart")
_I_PRODUCT = _VISITOR.index("last_product")
_I_CLOSED = _VISITOR.index("closed")
_I_DIMS = _VISITOR.index("metric_dims")
_I_COUNTED = _VISITOR.index("counted")


_session_row = attrgetter(*_SESSION)  # all fields as a tuple, in declared order
_visitor_row = attrgetter(*_VISITOR)


def copy_session(s: SessionState) -> SessionState:
    return SessionState(*_session_row(s))


def copy_state(state: VisitorState) -> VisitorState:
    """A copy sharing nothing mutable (tuples are shared: they never change)."""
    row = list(_visitor_row(state))
    row[_I_OFFSETS] = dict(state.offsets)
    row[_I_SESSIONS] = [copy_session(s) for s in state.sessions]
    row[_I_ORDER_IDS] = list(state.order_ids)
    row[_I_HISTORY] = list(state.history)
    row[_I_CART] = list(state.cart)
    # Closed sessions are shared: nothing changes one in place (a reopened session is
    # copied first, see process._reopen).
    row[_I_CLOSED] = list(state.closed)
    row[_I_COUNTED] = list(state.counted)
    return VisitorState(*row)


def encode_state(state: VisitorState) -> bytes:
    row = list(_visitor_row(state))
    row[_I_OFFSETS] = [[p, o] for p, o in state.offsets.items()]
    row[_I_SESSIONS] = [_session_row(s) for s in state.sessions]
    row[_I_CLOSED] = [_session_row(s) for s in state.closed]
    # Copied to an exact-size object: orjson's result keeps its ~8 KB write buffer
    # (measured: 8,245 B of RSS per 756-byte value, 885 B once copied), and this value
    # lives in the visitor table for as long as the visitor does.
    return bytes(memoryview(orjson.dumps([FORMAT, *row])))


_LZ4 = b"\x04"  # marks a compressed state; JSON never starts with it
_LZ4_DICT_1 = b"\x05"  # compressed against dictionary 1 (below)

# A frozen LZ4 dictionary: states compress against a sample of typical states, so the
# field layout, stage names and defaults every state repeats cost a few bytes each.
# Never edit the file: stored states need it to decode. A better dictionary is a new
# file under a new marker, the old one kept for decoding (BENCHMARKS.md, sixth session:
# `backports.zstd.train_dict(samples, 8192).dict_content` over 8,700 states of the
# traffic model, seed 11; the 8 KB size costs 5 µs per compression, 16 KB twice that).
# (Found through the package, not __file__: compiled, this module lives in build/core.)
_DICT_1 = resources.files("stream.journey").joinpath("state_dict_1.bin").read_bytes()


def store_state(state: VisitorState) -> bytes:
    """The visitors table's value: the encoding, LZ4-compressed against dictionary 1.
    A visitor's state lives in the processor's memory for as long as the visitor does:
    a one-page visitor's ~1,100 B of JSON become ~480 B with plain LZ4 and ~300 B with
    the dictionary, for 8 µs (BENCHMARKS.md, fourth and sixth sessions)."""
    return _LZ4_DICT_1 + lz4.block.compress(encode_state(state), dict=_DICT_1)


def state_json(b: bytes | str) -> bytes | str:
    """The JSON of encode_state's or store_state's bytes (of any earlier format too)."""
    if isinstance(b, bytes):
        marker = b[:1]
        if marker == _LZ4_DICT_1:
            return lz4.block.decompress(b[1:], dict=_DICT_1)
        if marker == _LZ4:
            return lz4.block.decompress(b[1:])
    return b


def decode_state(b: bytes) -> VisitorState:
    """A state from encode_state's or store_state's bytes."""
    return state_from_data(orjson.loads(state_json(b)))


def state_from_data(data: Any) -> VisitorState:
    """A state from its decoded JSON value (for states nested in other records)."""
    if not isinstance(data, list) or not data or data[0] != FORMAT:
        raise ValueError(f"not a visitor state of format {FORMAT}")
    row = data[1:]
    if len(row) > len(_VISITOR):
        raise ValueError("visitor state written by a newer format")
    row[_I_OFFSETS] = {int(p): int(o) for p, o in row[_I_OFFSETS]}
    row[_I_SESSIONS] = [_session(s) for s in row[_I_SESSIONS]]
    if len(row) > _I_CLOSED:
        row[_I_CLOSED] = [_session(s) for s in row[_I_CLOSED]]
    if len(row) > _I_DIMS and row[_I_DIMS] is not None:
        row[_I_DIMS] = tuple(row[_I_DIMS])
    if len(row) > _I_COUNTED:
        row[_I_COUNTED] = [tuple(c) for c in row[_I_COUNTED]]
    row[_I_HISTORY] = [tuple(h) for h in row[_I_HISTORY]]
    row[_I_CART] = [tuple(line) for line in row[_I_CART]]
    if row[_I_PRODUCT] is not None:
        row[_I_PRODUCT] = tuple(row[_I_PRODUCT])
    return VisitorState(*row)


def _session(data: list) -> SessionState:
    # JSON gives the dims as a list: a tuple before it reaches the (compiled) constructor
    if len(data) > _I_SESSION_DIMS and data[_I_SESSION_DIMS] is not None:
        data[_I_SESSION_DIMS] = tuple(data[_I_SESSION_DIMS])
    return SessionState(*data)
