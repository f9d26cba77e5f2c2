"""The Faust patches install on the pinned version only, and can be switched off."""

from __future__ import annotations

import pytest
from faust.transport import consumer as consumer_module
from faust.transport.drivers import aiokafka as driver

from stream.processor import faust_internals

pytestmark = pytest.mark.unit


@pytest.fixture
def pristine(monkeypatch):
    """Restore Faust's classes and the module's flag after the test."""
    for owner, name in (
        (consumer_module.Consumer, "_drain_messages"),
        (driver.AIOKafkaConsumerThread, "_highwaters"),
        (driver.AIOKafkaConsumerThread, "_create_worker_consumer"),
    ):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    monkeypatch.setattr(faust_internals, "_applied", False)
    monkeypatch.delenv("CLICKSTREAM_FAUST_PATCHES", raising=False)
    monkeypatch.delenv("CLICKSTREAM_FAUST_INLINE", raising=False)
    return monkeypatch


def test_the_patches_install_on_the_pinned_version(pristine) -> None:
    original = consumer_module.Consumer._drain_messages
    faust_internals.apply()
    assert consumer_module.Consumer._drain_messages is faust_internals._drain_messages
    assert consumer_module.Consumer._drain_messages is not original


def test_switched_off_faust_stays_as_it_is(pristine) -> None:
    pristine.setenv("CLICKSTREAM_FAUST_PATCHES", "0")
    original = consumer_module.Consumer._drain_messages
    faust_internals.apply()
    assert consumer_module.Consumer._drain_messages is original


def test_inline_delivery_alone_can_be_switched_off(pristine) -> None:
    pristine.setenv("CLICKSTREAM_FAUST_INLINE", "0")
    original = consumer_module.Consumer._drain_messages
    faust_internals.apply()
    assert consumer_module.Consumer._drain_messages is original
    assert faust_internals._applied


def test_another_faust_version_is_left_alone(pristine) -> None:
    import faust

    pristine.setattr(faust, "__version__", "0.99.0")
    original = consumer_module.Consumer._drain_messages
    faust_internals.apply()
    assert consumer_module.Consumer._drain_messages is original and not faust_internals._applied


def test_the_processor_refuses_the_embedded_broker_without_the_end_offset_fix(pristine) -> None:
    from stream import config
    from stream.processor.app import create_app

    pristine.setenv("CLICKSTREAM_FAUST_PATCHES", "0")
    embedded = config.load(
        {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092", "CLICKSTREAM_BROKER_PORT": "19092"}
    )
    with pytest.raises(config.SettingsError, match="Faust patches"):
        create_app(embedded)


def test_faust_empties_its_stream_queues_when_its_flow_resumes() -> None:
    """Why both sources go past Faust's stream queues (patch 4): Faust resumes its flow
    control once more at the end of a rebalance, after the partitions were resumed and
    read, and every stream queue is emptied then (records lost at a restart)."""
    import faust

    app = faust.App("pin-flow-control", broker="kafka://127.0.0.1:1")
    queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)  # what streams use
    app.flow_control.resume()
    queue.put_nowait("fetched before the last resume")
    app.flow_control.resume()  # already running: resumed again all the same
    assert queue.empty()


def test_the_processor_delivers_both_sources_in_batches(pristine) -> None:
    from stream import config, topics
    from stream.processor.app import create_app

    pristine.setattr(faust_internals, "_batch_queues", {})
    settings = config.load({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    create_app(settings)
    assert set(faust_internals._batch_queues) == {
        settings.topic(topics.EVENTS),
        settings.topic(topics.IDENTITIES),
    }


def test_the_store_reader_reads_what_the_table_holds() -> None:
    """store_reader: the memory store's dict, as Table.get gives it (written here as
    write_store writes it: into the store, past Faust's sensors)."""
    import faust

    app = faust.App("pin-store-reader", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("t", default=None, key_type=bytes, value_type=bytes)
    read = faust_internals.store_reader(table)
    assert read(b"k") is None and table.get(b"k") is None
    table.data[b"k"] = b"v"
    assert read(b"k") == table.get(b"k") == b"v"
    table.data.pop(b"k")
    assert read(b"k") is None and table.get(b"k") is None
