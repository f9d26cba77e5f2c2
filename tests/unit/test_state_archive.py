"""The processor-state archive: rebase(), the version rule, the row, the setting."""

from __future__ import annotations

import random

import pytest

from stream import config, topics
from stream.journey.state import SessionState, VisitorState, decode_state, encode_state
from stream.processor.rebase import rebase
from stream.sink import rows
from stream.sink.rows import Record

pytestmark = pytest.mark.unit

BASE_MS = 1_767_225_600_000


def visitor() -> VisitorState:
    return VisitorState(
        "v1",
        anonymous_id="v1",
        source="web",
        first_seen=BASE_MS,
        last_seen=BASE_MS + 60_000,
        offsets={0: 41, 3: 7},
        sessions=[SessionState("s1", BASE_MS, BASE_MS + 60_000, events=3, is_new=True)],
        session_count=1,
        orders=1,
        revenue=42.5,
        stage="purchase",
        max_stage="purchase",
        history=[("awareness", BASE_MS), ("purchase", BASE_MS + 60_000)],
        version=4,
    )


def test_rebase_empties_a_visitors_offsets_and_keeps_everything_else():
    before = visitor()
    after = decode_state(rebase("visitors", encode_state(before)))
    assert after.offsets == {}
    before.offsets = {}
    assert after == before


def test_rebase_keeps_a_value_without_offsets_as_it_is():
    state = visitor()
    state.offsets = {}
    raw = encode_state(state)
    assert rebase("visitors", raw) is raw


def test_rebase_leaves_other_tables_alone():
    for table in ("windows", "people", "some-future-table"):
        assert rebase(table, b"\x00anything") == b"\x00anything"
        assert rebase(table, b"\x00anything", b"some key") == b"\x00anything"


def test_rebase_forgets_a_partition_records_last_tick_and_keeps_its_clock():
    from stream.metrics.windows import MetricRow, PartitionRecord, partition_key, row_key

    key = partition_key(3)
    raw = PartitionRecord(clock=BASE_MS, published=7, tick_offset=512).encode()
    assert PartitionRecord.decode(rebase("windows", raw, key)) == PartitionRecord(BASE_MS, 7, -1)
    fresh = PartitionRecord(clock=BASE_MS).encode()
    assert rebase("windows", fresh, key) is fresh
    row = MetricRow().encode()  # pending increments: no offsets
    assert rebase("windows", row, row_key(3, BASE_MS, ("web",))) == row
    with pytest.raises(ValueError):
        rebase("windows", b"garbage", key)


@pytest.mark.parametrize("bad", [b"", b"not json", b"[99, 1]", b"{}", b"[1]"])
def test_rebase_raises_value_error_on_a_value_it_cannot_decode(bad):
    with pytest.raises(ValueError):
        rebase("visitors", bad)


def test_state_row_holds_raw_bytes_and_a_tombstone_is_deleted():
    origin = Record("clickstream-processor-visitors-changelog", 3, 17, BASE_MS)
    live = rows.state_row("visitors", b"v1", b"\xff\x00state", origin, epoch=2)
    assert live == ("visitors", 3, b"v1", b"\xff\x00state", 0, (2 << 40) | 17, BASE_MS)
    gone = rows.state_row("visitors", b"v1", None, origin, epoch=2)
    assert gone[3:5] == (b"", 1)


def test_epoch_grows_past_every_archived_version():
    assert rows.epoch_after(None) == 1
    assert rows.epoch_after(0) == 1
    assert rows.epoch_after(rows.state_version(1, 0)) == 2
    assert rows.epoch_after(rows.state_version(7, 10**12)) == 8
    # any offset of a later epoch beats any offset of an earlier one
    assert rows.state_version(2, 0) > rows.state_version(1, rows.OFFSET_MASK)


def test_the_newest_record_wins_across_broker_restarts_and_sink_restarts():
    """Simulate the archive: broker lives (offsets restart at 0), several sink instances
    per life (each replays from the last commit, with a new epoch), inserts that were
    not committed before a crash. The row with the highest version of every key must
    hold the key's newest value."""
    rng = random.Random(12)
    archive: dict[bytes, tuple[int, bytes]] = {}  # key -> (version, value): max wins
    newest: dict[bytes, bytes] = {}
    keys = [f"v{i}".encode() for i in range(30)]
    counter = 0
    for _life in range(4):  # each a fresh broker: one partition, offsets from 0
        log: list[tuple[bytes, bytes]] = []
        committed = 0
        for _sink in range(rng.randint(1, 4)):
            epoch = rows.epoch_after(max((v for v, _ in archive.values()), default=None))
            position = committed
            for _step in range(rng.randint(1, 40)):
                for _ in range(rng.randint(0, 5)):  # the processor appends
                    counter += 1
                    key = rng.choice(keys)
                    log.append((key, b"value-%d" % counter))
                    newest[key] = log[-1][1]
                end = rng.randint(position, len(log))  # the sink inserts a batch
                for offset in range(position, end):
                    key, value = log[offset]
                    version = rows.state_version(epoch, offset)
                    if version > archive.get(key, (-1, b""))[0]:
                        archive[key] = (version, value)
                position = end
                if rng.random() < 0.5:
                    committed = position  # commit after the insert
        # the last sink of the life reads everything before the broker stops
        epoch = rows.epoch_after(max((v for v, _ in archive.values()), default=None))
        for offset in range(committed, len(log)):
            key, value = log[offset]
            version = rows.state_version(epoch, offset)
            if version > archive.get(key, (-1, b""))[0]:
                archive[key] = (version, value)
    assert {k: v for k, (_, v) in archive.items()} == newest


def test_archive_setting():
    assert config.load({}).archives_state  # embedded broker: on
    assert not config.load({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}).archives_state
    assert config.load(
        {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "CLICKSTREAM_STATE_ARCHIVE": "on"}
    ).archives_state
    assert not config.load({"CLICKSTREAM_STATE_ARCHIVE": "OFF"}).archives_state
    with pytest.raises(config.SettingsError, match="CLICKSTREAM_STATE_ARCHIVE"):
        config.load({"CLICKSTREAM_STATE_ARCHIVE": "sometimes"})


def test_changelog_topics_follow_the_table_list():
    settings = config.load({"CLICKSTREAM_TOPIC_PREFIX": "x."})
    assert topics.changelog_topics(settings) == {
        f"x.{topics.PROCESSOR_APP_ID}-{t}-changelog": t for t in topics.TABLES
    }
    assert set(topics.changelog_topics(settings)) <= {s.name for s in topics.specs(settings)}
