"""Deterministic replay: the same log gives the same outputs whatever the batch boundaries
and the crash points.

A generated log (two partitions, several visitors, out-of-order and late events, ticks
of the arrival clock) is cut into random batches; at random batches the worker
"crashes" after publishing the batch's outputs, either before its state is stored or
after the state and before the offsets are committed (the step's order: outputs,
state, offsets), and a fresh engine (a new worker) replays the batch. Every output record must be one the uninterrupted
run emitted, in the same order once the repeats of the crashed batches are dropped.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream import partitioning
from stream.processor.engine import Engine
from tests.support.engine_shell import Shell
from tests.support.examples import examples

pytestmark = pytest.mark.unit

MIN = 60_000
T0 = 1_709_287_200_000
VISITORS = ["ann", "bob", "cyd", "dee", "eve"]
NAMES = [
    "",
    "",
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Page Ping",
]
PROPS = {
    "Product Viewed": {"product_id": "p1"},
    "Product Added": {"product_id": "p1", "price": 5, "quantity": 1},
    "Order Completed": {"order_id": "o1", "revenue": 5},
    "Page Ping": {"engaged_seconds": 10},
}


@st.composite
def logs(draw) -> list[tuple]:
    """("event", visitor, ts, arrival, name, utm) / ("tick", partition, now), by arrival."""
    steps, arrival = [], T0
    ts = dict.fromkeys(VISITORS, T0)
    for _ in range(draw(st.integers(5, 60))):
        arrival += draw(st.sampled_from([0, 1000, 30_000, 10 * MIN, 40 * MIN]))
        if draw(st.integers(0, 4)) == 0:
            steps.append(("tick", draw(st.integers(0, 1)), arrival))
            continue
        visitor = draw(st.sampled_from(VISITORS))
        ts[visitor] += draw(st.sampled_from([1000, 60_000, 31 * MIN, 3 * 3600_000]))
        late = draw(st.sampled_from([0, 0, 0, 2 * MIN, 20 * MIN, 2 * 3600_000]))
        name = draw(st.sampled_from(NAMES))
        utm = draw(st.sampled_from(["", "", "", "spring"]))
        steps.append(("event", visitor, ts[visitor] - late, arrival, name, utm))
    return steps


def records(shell: Shell, steps: list[tuple]) -> list:
    out = []
    for i, step in enumerate(steps):
        if step[0] == "tick":
            out.append(shell.tick_record(step[2], partition=step[1]))
            continue
        _, visitor, ts, arrival, name, utm = step
        fields = {"visitor": visitor, "ts": ts, "message_id": f"m{i}", "utm_campaign": utm}
        if name:
            fields.update(event=name, properties=PROPS.get(name, {}))
        partition = partitioning.partition_of(visitor.encode(), 2)
        out.append(shell.event_record(partition=partition, arrival=arrival, **fields))
    return out


def run(steps: list[tuple], cuts: list[int], crashes: set[int]) -> list[bytes]:
    shell = Shell(CLICKSTREAM_PARTITIONS="2")
    log = records(shell, steps)
    outputs: list[bytes] = []
    start, batch = 0, 0
    bounds = sorted({c % (len(log) + 1) for c in cuts} | {len(log)})
    while start < len(log):
        end = next(b for b in bounds if b > start)
        result = shell.engine.run(log[start:end], shell.visitors.get, shell.rows.get, shell.scan)
        outputs += [
            orjson.dumps([o.topic, o.key.decode("latin-1"), o.value.decode()])
            for o in result.outputs
        ]
        batch += 1
        if batch in crashes:  # a new worker replays the batch from the last commit
            if batch % 2:  # crashed after the outputs, before the state was stored
                pass
            else:  # crashed after the state was stored, before the offsets were committed
                shell.store(result)
            shell.engine = Engine(shell.settings)
            crashes.discard(batch)
            continue
        shell.store(result)
        start = end
    return outputs


def without_repeats(outputs: list[bytes]) -> list[bytes]:
    return list(dict.fromkeys(outputs))


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(), st.lists(st.integers(0, 200), max_size=12), st.sets(st.integers(1, 12), max_size=3))
def test_batches_and_crashes_change_no_output(steps, cuts, crashes) -> None:
    reference = run(steps, [], set())
    got = run(steps, cuts, set(crashes))
    assert without_repeats(got) == without_repeats(reference)
    assert set(got) == set(reference)
