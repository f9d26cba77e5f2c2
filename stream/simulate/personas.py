"""Who visits: personas (how a kind of shopper behaves) and visitors (one person's state).

A persona does not fix what happens in a session. The population model first draws
the session's outcome from the configured rates (browse, cart left behind, order)
and then who has it, weighting each persona by how likely it is to have that
outcome (`odds`). So the rates hold exactly in expectation whatever the personas,
and personas still shape who buys, who leaves carts and who only looks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.simulate.catalog import Agent, Product

BROWSE, CART, ORDER = 0, 1, 2  # session outcomes: no cart, cart left behind, order placed


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    share: float  # of new visitors, before weighting by the session's outcome
    loyalty: float  # weight of its visitors when a returning session picks one
    odds: tuple[float, float, float]  # relative odds of a BROWSE, CART and ORDER session
    browse: tuple[tuple[str, float], ...]  # what its sessions without a cart look like
    reaches_checkout: float  # share of its abandoned carts that get into the checkout
    signs_up: float  # chance per session to create an account while anonymous
    patience: float = 1.0  # multiplies reading times


PERSONAS: tuple[Persona, ...] = (
    Persona(
        "bouncer",
        share=0.34,
        loyalty=0.3,
        odds=(1.0, 0.01, 0.002),
        browse=(("bounce", 0.85), ("browse", 0.15)),
        reaches_checkout=0.2,
        signs_up=0.01,
        patience=0.6,
    ),
    Persona(
        "browser",
        share=0.26,
        loyalty=1.0,
        odds=(1.0, 0.4, 0.1),
        browse=(("browse", 0.6), ("research", 0.3), ("bounce", 0.1)),
        reaches_checkout=0.3,
        signs_up=0.03,
        patience=1.0,
    ),
    Persona(
        "comparison shopper",
        share=0.15,
        loyalty=1.5,
        odds=(1.0, 1.0, 0.4),
        browse=(("compare", 0.7), ("research", 0.2), ("bounce", 0.1)),
        reaches_checkout=0.4,
        signs_up=0.05,
        patience=1.3,
    ),
    Persona(
        "cart abandoner",
        share=0.11,
        loyalty=1.2,
        odds=(1.0, 6.0, 0.6),
        browse=(("browse", 0.5), ("compare", 0.3), ("bounce", 0.2)),
        reaches_checkout=0.5,
        signs_up=0.05,
        patience=1.0,
    ),
    Persona(
        "buyer",
        share=0.08,
        loyalty=1.5,
        odds=(1.0, 3.0, 6.0),
        browse=(("browse", 0.6), ("research", 0.2), ("bounce", 0.2)),
        reaches_checkout=0.5,
        signs_up=0.3,
        patience=1.0,
    ),
    Persona(
        "loyal buyer",
        share=0.04,
        loyalty=4.0,
        odds=(1.0, 3.0, 12.0),
        browse=(("browse", 0.5), ("bounce", 0.3), ("engage", 0.2)),
        reaches_checkout=0.4,
        signs_up=0.6,
        patience=0.8,
    ),
    Persona(
        "advocate",
        share=0.02,
        loyalty=3.0,
        odds=(1.0, 2.0, 8.0),
        browse=(("engage", 0.6), ("browse", 0.3), ("bounce", 0.1)),
        reaches_checkout=0.4,
        signs_up=0.6,
        patience=1.0,
    ),
)
BOT = Persona(
    "bot",
    share=0.0,
    loyalty=0.0,
    odds=(1.0, 0.0, 0.0),
    browse=(("crawl", 1.0),),
    reaches_checkout=0.0,
    signs_up=0.0,
)
LOCALES: tuple[tuple[str, str], ...] = (
    ("en-US", "America/New_York"),
    ("en-US", "America/Chicago"),
    ("en-US", "America/Denver"),
    ("en-US", "America/Los_Angeles"),
    ("en-CA", "America/Toronto"),
    ("en-GB", "Europe/London"),
)


@dataclass(slots=True)
class Visitor:
    """One person on one device: the anonymous id is kept across their sessions."""

    persona: Persona
    anonymous_id: str
    agent: Agent
    ip: str
    favorite: str  # product category they come back to
    locale: tuple[str, str]  # (locale, timezone)
    user_id: str = ""  # set once they sign up
    email: str = ""  # set at sign-up or guest checkout
    sessions: int = 0
    purchases: list[Product] = field(default_factory=list)
    refund: dict[str, Any] | None = None  # an order to refund at their next visit
