"""The traffic model, pure and deterministic: the same seed gives the same calls and ids.

Sessions start as a Poisson process in event time. Each one is, in order:

1. a bot visit (`Mix.bots` of sessions: Googlebot/bingbot crawling pages), else
2. new or returning: returning sessions go to a visitor whose last session ended
   more than 30 minutes earlier (same anonymous id; some signed up, so they also
   carry a userId). A small controller keeps the running share at `Mix.returning`
   (at first nobody can return yet);
3. its outcome, drawn from the configured rates: an order (`Mix.conversion` of
   human sessions), a cart left behind (so that `Mix.cart_abandonment` of sessions
   with a cart end without an order), or neither;
4. who: a persona weighted by how likely it is to have that outcome, then a new
   visitor of that persona or a resting one;
5. the kind of visit (bounce, browse, research, compare, engage, abandon,
   purchase) and the calls of it (`session.py`), merged with the other sessions'
   calls in event-time order.

`generate()` ends once `visitors` distinct (human) visitors have come and enough
of them came back to reach the returning share (a small population runs on with
returning sessions only); with `endless` it never ends, and `visitors` bounds the
pool of visitors who may come back.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stream.simulate import session
from stream.simulate.catalog import BOT_AGENTS, CATEGORIES, CHANNELS, HUMAN_AGENTS, Agent, Channel
from stream.simulate.personas import BOT, BROWSE, CART, LOCALES, ORDER, PERSONAS, Persona, Visitor
from stream.simulate.session import Timed, Visit, uuid4

REST_MS = 31 * 60 * 1000  # a visitor comes back no sooner: > 30 min of inactivity ends a session
LATE_MS = (301_000, 900_000)  # how far behind the stream a late event is delivered
SHUFFLE_MS = (500, 5_000)  # how far behind an out-of-order one is


@dataclass(frozen=True, slots=True)
class Mix:
    """The traffic's rates. Conversion and bots are shares of sessions, abandonment of carts."""

    conversion: float = 0.02  # human sessions that place an order
    cart_abandonment: float = 0.70  # sessions with a cart that end without an order
    bots: float = 0.02  # sessions by crawlers
    returning: float = 0.50  # human sessions by a visitor who came before
    refunds: float = 0.05  # orders refunded at the buyer's next visit
    session_interval_s: float = 3.0  # mean event time between two session starts

    def __post_init__(self) -> None:
        for name in ("conversion", "cart_abandonment", "bots", "returning", "refunds"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Mix.{name}={value} must be between 0 and 1")
        if self.cart_abandonment >= 1.0 and self.conversion > 0:
            raise ValueError("Mix.cart_abandonment=1 leaves no cart to convert")
        if self.carts > 1.0:
            raise ValueError(
                f"Mix: conversion {self.conversion} with {self.cart_abandonment} of carts abandoned "
                "needs more carts than sessions"
            )
        if self.session_interval_s <= 0:
            raise ValueError("Mix.session_interval_s must be positive")

    @property
    def carts(self) -> float:
        """Share of human sessions with a cart."""
        if self.conversion == 0:
            return 0.0
        return self.conversion / (1.0 - self.cart_abandonment)


def generate(
    seed: int,
    visitors: int,
    *,
    mix: Mix | None = None,
    base_time_ms: int | None = None,
    out_of_order: float = 0.0,
    late: float = 0.0,
    endless: bool = False,
) -> Iterator[dict[str, Any]]:
    """Segment calls (track, page, identify) of `visitors` visitors, in delivery order.

    `base_time_ms` is when the first session starts (default: now; pass it for
    reproducible timestamps and for historic traffic). `out_of_order` is the share
    of events delivered a few seconds late, `late` the share delivered more than 5
    minutes of event time after the stream passed them (held events still pending
    when a finite stream ends are delivered at its end).
    """
    for _, call in generate_timed(
        seed,
        visitors,
        mix=mix,
        base_time_ms=base_time_ms,
        out_of_order=out_of_order,
        late=late,
        endless=endless,
    ):
        yield call


def generate_timed(
    seed: int,
    visitors: int,
    *,
    mix: Mix | None = None,
    base_time_ms: int | None = None,
    out_of_order: float = 0.0,
    late: float = 0.0,
    endless: bool = False,
) -> Iterator[Timed]:
    """`generate()` with each call's event time in ms: (ts, call)."""
    if not (0.0 <= out_of_order <= 1.0 and 0.0 <= late <= 1.0 and out_of_order + late <= 1.0):
        raise ValueError("out_of_order and late must be shares between 0 and 1, together at most 1")
    base = time.time_ns() // 1_000_000 if base_time_ms is None else base_time_ms
    stream = _ordered(Population(seed, visitors, mix or Mix(), endless), base)
    if out_of_order or late:
        return _disorder(stream, random.Random(f"disorder:{seed}"), out_of_order, late)
    return stream


def _ordered(population: Population, base_ms: int) -> Iterator[Timed]:
    pending: list[tuple[int, int, dict[str, Any]]] = []  # (ts, seq, call) of started sessions
    seq = 0
    t = base_ms
    rng = population.rng
    mean_gap_ms = population.mix.session_interval_s * 1000
    while not population.done:
        for ts, call in population.session(t):
            heapq.heappush(pending, (ts, seq, call))
            seq += 1
        t += max(1, round(rng.expovariate(1.0 / mean_gap_ms)))
        while pending and pending[0][0] <= t:
            ts, _, call = heapq.heappop(pending)
            yield ts, call
    while pending:
        ts, _, call = heapq.heappop(pending)
        yield ts, call


def _disorder(
    stream: Iterator[Timed], rng: random.Random, shuffled: float, late: float
) -> Iterator[Timed]:
    """Hold some events back and deliver them once the stream's event time passed their due."""
    held: list[tuple[int, int, int, dict[str, Any]]] = []  # (due, seq, ts, call)
    seq = 0
    for ts, call in stream:
        r = rng.random()
        if r < late + shuffled:
            delay = rng.randint(*LATE_MS) if r < late else rng.randint(*SHUFFLE_MS)
            heapq.heappush(held, (ts + delay, seq, ts, call))
            seq += 1
        else:
            yield ts, call
        while held and held[0][0] <= ts:
            _, _, held_ts, held_call = heapq.heappop(held)
            yield held_ts, held_call
    while held:
        _, _, held_ts, held_call = heapq.heappop(held)
        yield held_ts, held_call


class Population:
    """Visitors who came, who may come back, and the sessions they have."""

    def __init__(self, seed: int, visitors: int, mix: Mix, endless: bool) -> None:
        self.rng = random.Random(seed)
        self.ids = random.Random(f"ids:{seed}")  # ids apart: the traffic does not depend on them
        self.capacity = max(visitors, 0)
        self.mix = mix
        self.endless = endless
        self.created = self.human = self.returning = 0
        self.pools: dict[str, list[Visitor]] = {p.name: [] for p in PERSONAS}  # may come back now
        self.pooled = 0
        self.resting: list[tuple[int, int, Visitor]] = []  # (may come back at, seq, visitor)
        self.rested = 0
        self.human_agents = _weights(HUMAN_AGENTS)
        self.bot_agents = _weights(BOT_AGENTS)

    @property
    def full(self) -> bool:
        """Every visitor of a finite run has come: only returning sessions are left."""
        return not self.endless and self.created >= self.capacity

    @property
    def done(self) -> bool:
        if not self.full:
            return False
        reached = self.returning >= self.mix.returning * self.human
        return reached or not (self.pooled or self.resting)

    def session(self, start_ms: int) -> list[Timed]:
        """The calls of the session starting at `start_ms` (none when nobody may come)."""
        self._wake(start_ms)
        if self.full and not self.pooled:
            return []
        if self.rng.random() < self.mix.bots:
            return self._bot(start_ms)
        outcome = self._outcome()
        visitor, returning = self._visitor(outcome)
        self.human += 1
        self.returning += returning
        visitor.sessions += 1
        if returning and self.rng.random() < 0.3:
            visitor.ip = _ip(self.rng)  # another network (mobile, work)
        channel = self._channel(returning)
        visit = Visit(self.rng, self.ids, visitor, start_ms, channel)
        session.land(visit, channel)
        if returning and visitor.user_id and self.rng.random() < 0.4:
            visit.log_in()
        if visitor.refund is not None:
            order, visitor.refund = visitor.refund, None
            visit.refund(order)
        elif returning and visitor.purchases and self.rng.random() < 0.1:
            visit.review(self.rng.choice(visitor.purchases))  # answering a review request
        if outcome == ORDER:
            session.purchase(visit, self.mix.refunds)
        elif outcome == CART:
            session.abandon(visit)
        else:
            kind = _choose(self.rng, visitor.persona.browse)
            session.BROWSE_SCRIPTS[kind](visit)
            if not visitor.user_id and self.rng.random() < visitor.persona.signs_up / 3:
                visit.sign_up()
        visit.leave()
        self._rest(visitor, visit.t)
        return visit.calls

    def _outcome(self) -> int:
        r = self.rng.random()
        if r < self.mix.conversion:
            return ORDER
        return CART if r < self.mix.carts else BROWSE

    def _visitor(self, outcome: int) -> tuple[Visitor, bool]:
        if self._comes_back():
            weights = [len(self.pools[p.name]) * p.loyalty * p.odds[outcome] for p in PERSONAS]
            persona = self.rng.choices(PERSONAS, weights)[0]
            return self._take(self.pools[persona.name]), True
        persona = self.rng.choices(PERSONAS, [p.share * p.odds[outcome] for p in PERSONAS])[0]
        return self._new(persona), False

    def _comes_back(self) -> bool:
        if not self.pooled:
            return False
        if self.full:
            return True
        target = self.mix.returning
        share = self.returning / self.human if self.human else 0.0
        chance = min(max(target + 2.0 * (target - share), 0.0), 1.0)
        return self.rng.random() < chance

    def _new(self, persona: Persona) -> Visitor:
        self.created += 1
        rng = self.rng
        return Visitor(
            persona=persona,
            anonymous_id=uuid4(self.ids),
            agent=rng.choices(HUMAN_AGENTS, self.human_agents)[0],
            ip=_ip(rng),
            favorite=rng.choice(CATEGORIES),
            locale=rng.choice(LOCALES),
        )

    def _take(self, pool: list[Visitor]) -> Visitor:
        i = self.rng.randrange(len(pool))
        pool[i], pool[-1] = pool[-1], pool[i]
        self.pooled -= 1
        return pool.pop()

    def _rest(self, visitor: Visitor, end_ms: int) -> None:
        self.rested += 1
        heapq.heappush(self.resting, (end_ms + REST_MS, self.rested, visitor))

    def _wake(self, now_ms: int) -> None:
        """Visitors rested long enough may come back; the pool keeps at most `capacity`."""
        while self.resting and self.resting[0][0] <= now_ms:
            visitor = heapq.heappop(self.resting)[2]
            self.pools[visitor.persona.name].append(visitor)
            self.pooled += 1
        while self.pooled > self.capacity:  # endless: forget someone
            sizes = [len(self.pools[p.name]) for p in PERSONAS]
            persona = self.rng.choices(PERSONAS, sizes)[0]
            self._take(self.pools[persona.name])

    def _channel(self, returning: bool) -> Channel:
        weights = [c.weight_returning if returning else c.weight_new for c in CHANNELS]
        return self.rng.choices(CHANNELS, weights)[0]

    def _bot(self, start_ms: int) -> list[Timed]:
        """A crawler visit: no cookies kept, so a new anonymous id each time."""
        bot = Visitor(
            persona=BOT,
            anonymous_id=uuid4(self.ids),
            agent=self.rng.choices(BOT_AGENTS, self.bot_agents)[0],
            ip=_ip(self.rng),
            favorite=CATEGORIES[0],
            locale=LOCALES[0],
        )
        visit = Visit(self.rng, self.ids, bot, start_ms, None, pings=False)
        session.crawl(visit)
        visit.leave()
        return visit.calls


def _ip(rng: random.Random) -> str:
    """An address from the documentation ranges: 203.0.113.0/24, 198.51.100.0/24, 2001:db8::/32."""
    r = rng.random()
    if r < 0.45:
        return f"203.0.113.{rng.randint(1, 254)}"
    if r < 0.8:
        return f"198.51.100.{rng.randint(1, 254)}"
    return f"2001:db8:{rng.randrange(0x10000):x}:{rng.randrange(0x10000):x}::{rng.randrange(1, 0x10000):x}"


def _weights(agents: tuple[Agent, ...]) -> list[float]:
    return [a.weight for a in agents]


def _choose(rng: random.Random, options: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([name for name, _ in options], [weight for _, weight in options])[0]
