"""drain.py's pure part: when a clean stop may go on (every accepted event processed
and stored), from the groups' commits and the topics' ends, round by round."""

from __future__ import annotations

import pytest
from aiokafka.structs import TopicPartition

from stream import config, topics
from stream.drain import Progress, groups_for, lag

pytestmark = pytest.mark.unit

EV0, EV1 = TopicPartition("clickstream.events", 0), TopicPartition("clickstream.events", 1)
CT0 = TopicPartition("clickstream.control", 0)
ID0 = TopicPartition("clickstream.identities", 0)
SE0 = TopicPartition("journey.sessions", 0)
VI0 = TopicPartition("journey.visitors", 0)
P, S = "clickstream-processor", "clickstream-sink"


def progress() -> Progress:
    return Progress(P, S, moving={"clickstream.control"})


def test_lag_counts_missing_and_negative_commits_as_nothing_committed():
    ends = {EV0: 10, EV1: 0, CT0: 5}
    assert lag(ends, {EV0: None, CT0: -1}) == {EV0: 10, EV1: 0, CT0: 5}
    assert lag(ends, {EV0: 12, EV1: 0, CT0: 5}) == {EV0: 0, EV1: 0, CT0: 0}


def test_idle_pipeline_is_drained_in_the_first_round():
    p = progress()
    commits = {P: {EV0: 10, CT0: 3, ID0: None}, S: {SE0: 4, VI0: None}}
    assert p.update(commits, {EV0: 10, CT0: 3, ID0: 0, SE0: 4, VI0: 0})
    assert p.left == {P: 0, S: 0}


def test_events_behind_means_not_drained_and_says_how_many():
    p = progress()
    assert not p.update({P: {EV0: 5, EV1: 0}, S: {SE0: 0}}, {EV0: 10, EV1: 3, SE0: 0})
    assert p.left == {P: 8, S: 0}


def test_ticks_moving_an_end_need_only_the_previous_rounds_end():
    p = progress()
    # Round 1: a tick just written (end 4, committed 3): strict on the first round.
    assert not p.update({P: {EV0: 10, CT0: 3}, S: {SE0: 2}}, {EV0: 10, CT0: 4, SE0: 2})
    # Round 2: the tick is committed, a newer one written: the previous end (4) counts.
    assert p.update({P: {EV0: 10, CT0: 4}, S: {SE0: 2}}, {EV0: 10, CT0: 5, SE0: 2})


def test_events_and_identities_get_no_tolerance():
    p = progress()
    assert not p.update({P: {EV0: 9, ID0: 0}, S: {}}, {EV0: 10, ID0: 0})
    # The events' end did not move; the processor still misses one: not drained.
    assert not p.update({P: {EV0: 9, ID0: 0}, S: {}}, {EV0: 10, ID0: 0})
    # An identity written by the last events' processing must be processed too.
    assert not p.update({P: {EV0: 10, ID0: 0}, S: {}}, {EV0: 10, ID0: 1})
    assert p.update({P: {EV0: 10, ID0: 1}, S: {}}, {EV0: 10, ID0: 1})


def test_sink_must_store_the_outputs_of_the_round_the_processor_caught_up():
    p = progress()
    # The processor caught up; its last outputs (sessions end 7) are not yet stored.
    assert not p.update({P: {EV0: 10}, S: {SE0: 5}}, {EV0: 10, SE0: 7})
    assert p.left == {P: 0, S: 2}
    # The sink stored them; a tick's output meanwhile (end 8) is not waited for.
    assert p.update({P: {EV0: 10}, S: {SE0: 7}}, {EV0: 10, SE0: 8})


def test_sink_target_is_not_fixed_before_the_processor_caught_up():
    p = progress()
    # Processor behind: the sink's target must not be fixed on these ends.
    assert not p.update({P: {EV0: 4}, S: {SE0: 3}}, {EV0: 10, SE0: 3})
    # Processor caught up: its outputs up to end 9 must be stored.
    assert not p.update({P: {EV0: 10}, S: {SE0: 3}}, {EV0: 10, SE0: 9})
    assert p.update({P: {EV0: 10}, S: {SE0: 9}}, {EV0: 10, SE0: 9})


def test_only_one_group_when_only_one_role_runs_here():
    sink_only = Progress(None, S)
    assert not sink_only.update({S: {SE0: 1}}, {SE0: 2})
    assert sink_only.update({S: {SE0: 2}}, {SE0: 3})  # its first target was 2
    processor_only = Progress(P, None, moving={"clickstream.control"})
    assert processor_only.update({P: {EV0: 1}}, {EV0: 1})


def test_groups_follow_the_roles_and_the_topic_prefix():
    settings = config.load({"CLICKSTREAM_TOPIC_PREFIX": "t1."})
    groups = {g.group_id: g for g in groups_for(settings, ("collector", "processor", "sink"))}
    processor = groups["t1.clickstream-processor"]
    assert {"t1.clickstream.events", "t1.clickstream.identities"} <= set(processor.topics)
    assert set(processor.topics) <= {f"t1.{t}" for t in topics.ALL}  # existing topics only
    assert "t1.clickstream.events" in processor.moving  # the ticks are in the events' log
    assert "t1.clickstream.identities" not in processor.moving
    sink = groups["clickstream-sink"]
    assert "t1.clickstream.events" in sink.topics and "t1.journey.sessions" in sink.topics
    assert groups_for(settings, ("collector",)) == []


def test_stop_drain_seconds_setting():
    assert config.load({}).stop_drain_s == 30.0
    assert config.load({"CLICKSTREAM_STOP_DRAIN_SECONDS": "0"}).stop_drain_s == 0.0
    for bad in ("-1", "soon", "99999"):
        with pytest.raises(config.SettingsError, match="CLICKSTREAM_STOP_DRAIN_SECONDS"):
            config.load({"CLICKSTREAM_STOP_DRAIN_SECONDS": bad})


def test_ticks_in_the_events_log_do_not_hold_the_drain():
    """The processor writes a tick into each events partition every 2 s: the end it
    must reach is the one of the round before, while identities stay strict."""
    p = Progress(P, S, moving={"clickstream.events"})
    assert not p.update({P: {EV0: 100, ID0: 3}, S: {SE0: 9}}, {EV0: 101, ID0: 3, SE0: 9})
    assert p.update({P: {EV0: 101, ID0: 3}, S: {SE0: 9}}, {EV0: 102, ID0: 3, SE0: 9})
