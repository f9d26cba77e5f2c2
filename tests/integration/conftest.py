import pytest

from tests.support.pipeline import WRITE_KEY, prestart

# A second write key on the shared pipeline: a test that reads every row of a source
# posts under its own (tests/integration/test_metrics_consistency.py).
METRICS_KEY = "metrics-write-key"

# One real `clickstream run` (embedded broker + chdb) for the modules that only post and
# read their own ids (a start and a stop cost 15-20 s on 2 cores). A module that stops
# its pipeline, needs other settings, or reads tables whole starts its own.
SHARED = prestart(
    "shared", "pipeline", CLICKSTREAM_WRITE_KEYS=f"{WRITE_KEY}:test,{METRICS_KEY}:metrics"
)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    running = SHARED.take(tmp_path_factory)
    yield running
    running.stop_later()
