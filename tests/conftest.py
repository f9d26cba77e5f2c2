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
from tests.support.pipeline import PRESTARTS, Prestart, reap_stopped

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


# How many prestarted pipelines (tests/support/pipeline.py, `prestart`) start at the
# first test, while the unit tests leave a core idle; each idles at a third of a core.
PRESTART_FIRST = 3
_DUE: dict[str, list[Prestart]] = {}  # node id -> the prestarts to start at its set-up
_DONE: dict[str, list[Prestart]] = {}  # node id -> the prestarts to stop after it


def _uses(item) -> list[Prestart]:
    """The prestarts a test's module declared, or the shared pipeline if it takes that."""
    module = getattr(item, "module", None)
    name = getattr(module, "__name__", "")
    if (
        "pipeline" in getattr(item, "fixturenames", ())
        and not hasattr(module, "pipeline")  # no fixture of its own: the shared one
        and name.startswith("tests.integration.")
    ):
        return PRESTARTS.get("shared", [])  # tests/integration/conftest.py
    return PRESTARTS.get(name, [])[:1]  # a module's next one starts as one is taken


@pytest.fixture(scope="session", autouse=True)
def _prestart_pipelines(request, tmp_path_factory) -> Iterator[None]:
    """Start the first pipelines the selected tests declared now, and plan the others: each
    starts when the module before its first test's begins. The shared one stops after
    its last test."""
    items = request.session.items
    module_start: dict[str, int] = {}
    first: dict[Prestart, int] = {}
    last: dict[Prestart, int] = {}
    for index, item in enumerate(items):
        module_start.setdefault(item.nodeid.split("::")[0], index)
        for pipeline in _uses(item):
            first.setdefault(pipeline, index)
            last[pipeline] = index
    for n, (pipeline, index) in enumerate(sorted(first.items(), key=lambda kv: kv[1])):
        pipeline.factory = tmp_path_factory
        before = module_start[items[index - 1].nodeid.split("::")[0]] if index else 0
        if n < PRESTART_FIRST or before == 0:
            pipeline.spawn(tmp_path_factory)
        else:
            _DUE.setdefault(items[before].nodeid, []).append(pipeline)
        if pipeline.module == "shared":
            _DONE.setdefault(items[last[pipeline]].nodeid, []).append(pipeline)
    yield
    for declared in PRESTARTS.values():
        for pipeline in declared:
            if pipeline.started is not None:  # never taken: its test was skipped
                pipeline.release()


def pytest_runtest_setup(item):
    for pipeline in _DUE.pop(item.nodeid, []):
        pipeline.spawn(pipeline.factory)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    for pipeline in _DONE.pop(item.nodeid, []):
        pipeline.release()
    return result


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
