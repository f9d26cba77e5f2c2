"""Fixtures shared by the test suites.

Real components only in integration tests. Two constraints shape these fixtures:
- chdb hosts ONE engine (one data directory) per process: `ch_client` is session-wide,
  and each test works in its own database (`isolated_settings`).
- the embedded broker keeps topics in memory: one broker per session, each test on its
  own topic prefix.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream import config
from stream.broker import EmbeddedBroker
from tests.support.examples import load_profile
from tests.support.pipeline import PRESTARTS, line_up, reap_stopped, stop_lineup

_names = itertools.count(1)
load_profile()  # property tests: a share of their examples, CLICKSTREAM_HYPOTHESIS says which


def _free_port() -> int:
    from tests.support.pipeline import free_port

    return free_port()


@pytest.fixture
def free_port() -> int:
    """A TCP port nothing listens on right now."""
    return _free_port()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The session's data directory (the chdb engine lives in `clickhouse/` under it)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def chdb_url(data_dir: Path) -> str:
    return f"chdb://{data_dir / 'clickhouse'}"


@pytest.fixture(scope="session")
def ch_client(chdb_url: str):
    """The test process's chdb client (one engine per process: use it, don't open another)."""
    from stream.sink.clickhouse import open_client

    client = open_client(chdb_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[str]:
    """A Tansu broker for the session; yields its bootstrap servers."""
    broker = EmbeddedBroker(_free_port())
    broker.start()
    yield f"127.0.0.1:{broker.port}"
    broker.stop()


@pytest.fixture
def isolated_settings(request, chdb_url: str, data_dir: Path) -> Callable[..., config.Settings]:
    """Build Settings for this test: its own ClickHouse database and topic prefix on the
    session engine (and broker, when given), free ports; keyword overrides are env vars."""
    number = next(_names)
    name = "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]

    def build(bootstrap: str | None = None, **env: str) -> config.Settings:
        values = {
            "CLICKHOUSE_DSN": chdb_url,
            "CLICKSTREAM_DATABASE": f"t{number}_{name}",
            "CLICKSTREAM_TOPIC_PREFIX": f"t{number}.",
            "CLICKSTREAM_DATA_DIR": str(data_dir),
            "CLICKSTREAM_HTTP_PORT": str(_free_port()),
            "CLICKSTREAM_API_PORT": str(_free_port()),
            "CLICKSTREAM_PROCESSOR_PORT": str(_free_port()),
        }
        if bootstrap:
            values["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        values.update(env)
        return config.load(values)

    return build


# Pipelines started ahead of the tests that take them (tests/support/pipeline.py,
# `prestart`): each is 0.5-1 GB of memory while it waits.
PRESTART_AHEAD = 3


@pytest.fixture(scope="session", autouse=True)
def _prestart_pipelines(request, tmp_path_factory) -> Iterator[None]:
    """Line up the pipelines the selected tests declared, in the order of the tests, and
    start the first few now: they come up while the unit tests run."""
    queue: list = []
    for item in request.session.items:
        module = getattr(item, "module", None)
        name = getattr(module, "__name__", "")
        found = PRESTARTS.get(name, [])
        if (
            "pipeline" in getattr(item, "fixturenames", ())
            and not hasattr(module, "pipeline")  # no fixture of its own: the shared one
            and name.startswith("tests.integration.")
        ):
            found = PRESTARTS.get("shared", [])  # tests/integration/conftest.py
        queue += [p for p in found if p not in queue]
    line_up(queue, tmp_path_factory, PRESTART_AHEAD)
    yield
    stop_lineup()


_ORDER = {"unit": 0, "integration": 1, "browser": 2}


def pytest_collection_modifyitems(config, items):
    """Fast feedback first: unit, then integration, then browser tests (Playwright's sync
    API runs an event loop of its own, kept away from the asyncio tests)."""

    def rank(item) -> int:
        for name, position in _ORDER.items():
            if item.get_closest_marker(name):
                return position
        return 1

    items.sort(key=rank)


def pytest_sessionfinish(session, exitstatus):
    """The pipelines fixtures stopped without waiting have exited (or are killed)."""
    reap_stopped()
