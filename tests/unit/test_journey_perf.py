"""What one apply() costs, measured on a typical event mix (printed with -s).

Speed targets are benchmarks' business (benchmarks/, BENCHMARKS.md); this test only
catches a gross regression, with a bound relative to work measured in the same run
(a state's encode + decode), so a loaded or slow machine does not fail it.
"""

from __future__ import annotations

import time

import pytest

from stream.journey import StageMachine, apply, decode_state, encode_state
from stream.sessionize.rules import SessionRules
from tests.golden.script import event
from tests.unit.test_journey_state import active_visitor

pytestmark = pytest.mark.unit

T0 = 1_709_287_200_000 + 120_000


def typical_events(n: int) -> list:
    """Pages, pings and product views, a second apart, in one live session."""
    kinds = [
        {"url": "https://shop.example/p/lamp-1"},
        {"event": "Page Ping", "properties": {"engaged_seconds": 10}},
        {
            "event": "Product Viewed",
            "properties": {"product_id": "SKU-1", "name": "Lamp", "price": 9.5},
        },
        {"event": "Page Ping", "properties": {"engaged_seconds": 10}},
    ]
    return [event(ts=T0 + i * 1000, message_id=f"m{i}", **kinds[i % 4]) for i in range(n)]


def best_us_per_call(fn, n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def test_apply_cost_per_typical_event() -> None:
    machine, rules, start = StageMachine.load(), SessionRules(), active_visitor()
    events = typical_events(2000)

    def run() -> None:
        state = start
        for offset, e in enumerate(events, 100):
            state = apply(state, e, offset, rules, machine).state

    us = best_us_per_call(run, len(events))
    blob = encode_state(start)
    codec_us = best_us_per_call(
        lambda: [decode_state(encode_state(start)) for _ in range(2000)], 2000
    )
    print(
        f"\napply(): {us:.1f} µs per event; encode+decode: {codec_us:.1f} µs; state: {len(blob)} B"
    )
    assert us < 4 * codec_us, "apply() costs far more than a state's encode + decode"
