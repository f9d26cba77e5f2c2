"""How many examples the property tests generate (Hypothesis).

Each property test names its full count, `examples(150)`; the suite runs a share of it,
chosen by CLICKSTREAM_HYPOTHESIS:

    quick     (default, `make test`)  a quarter of each count, at least 20
    full      each count as written
    thorough  five times each count, for a long hunt by hand:
              CLICKSTREAM_HYPOTHESIS=thorough .venv/bin/pytest -m unit

The same names are Hypothesis profiles (tests/conftest.py loads the chosen one), which
scale the tests that name no count (Hypothesis's 100) the same way.
"""

from __future__ import annotations

import os

from hypothesis import settings

SHARES = {"quick": 0.25, "full": 1.0, "thorough": 5.0}
MINIMUM = 20
PROFILE = os.environ.get("CLICKSTREAM_HYPOTHESIS", "quick")
if PROFILE not in SHARES:
    raise SystemExit(f"CLICKSTREAM_HYPOTHESIS must be one of {', '.join(SHARES)}, not {PROFILE!r}")


def examples(full: int, profile: str = PROFILE) -> int:
    """The number of examples to run of a test whose full count is `full`."""
    return max(min(MINIMUM, full), round(full * SHARES[profile]))


# How long Hypothesis may shrink a failing example before reporting it, per profile
# (Hypothesis's own bound is 300 s, pytest-timeout's too: a failure found in the default
# suite was reported as a timeout, its assertion lost, after 5 minutes).
SHRINK_SECONDS = {"quick": 30, "full": 120, "thorough": 300}


def load_profile() -> None:
    """Register the profiles and load the chosen one (from tests/conftest.py)."""
    # No per-example deadline: on a loaded 2-core machine one slow example (a GC pause, a
    # benchmark beside the suite) failed a correct test with DeadlineExceeded.
    for name in SHARES:
        settings.register_profile(name, max_examples=examples(100, name), deadline=None)
    settings.load_profile(PROFILE)
    from hypothesis.internal.conjecture import engine  # no public setting for this bound

    if hasattr(engine, "MAX_SHRINKING_SECONDS"):
        engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS[PROFILE]
