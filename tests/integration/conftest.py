import pytest

from tests.support.pipeline import start_pipeline


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One real `clickstream run` per test module (embedded broker + chdb)."""
    running = start_pipeline(tmp_path_factory.mktemp("pipeline"))
    yield running
    running.stop()
