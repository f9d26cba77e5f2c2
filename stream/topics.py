"""Every Kafka topic the pipeline uses, with its role. Created explicitly at start-up
(the embedded broker would otherwise auto-create unknown topics with 4 partitions)."""

from __future__ import annotations

from dataclasses import dataclass

from stream.config import Settings

EVENTS = "clickstream.events"  # valid, enriched events, keyed by visitor id
INVALID = "clickstream.invalid"  # dead letters: original payload + reasons
STAGE_CHANGES = "journey.stage-changes"  # one record per stage transition
SESSIONS = "journey.sessions"  # session summaries (updates and close)
TRIGGERS = "journey.triggers"  # cart abandoned, first purchase, ...
VISITORS = "journey.visitors"  # visitor snapshots for clickstream.visitors
METRICS = "journey.metrics"  # completed 1-minute metric windows
IDENTITIES = "clickstream.identities"  # identified visitors' states, keyed by user id
CUSTOMERS = "journey.customers"  # one person across devices, keyed by user id
# Erasure (stream/privacy/): the suppression list, compacted, keyed by the salted hash of
# an erased id (never the id), one partition so that "read to its end" is one offset;
# and the processor's acknowledgements of each erasure.
SUPPRESSIONS = "clickstream.suppressions"
ERASURE_ACKS = "clickstream.erasure-acks"

# Key of the tick records the processor writes into each EVENTS partition (its clock,
# in the log); never a visitor id, which the collector requires to be non-empty text.
TICK_KEY = b"\x00tick"

PROCESSOR_APP_ID = "clickstream-processor"
SINK_GROUP = "clickstream-sink"

ALL = (
    EVENTS,
    INVALID,
    STAGE_CHANGES,
    SESSIONS,
    TRIGGERS,
    VISITORS,
    METRICS,
    IDENTITIES,
    CUSTOMERS,
)
# Faust table changelogs: "<app id>-<table name>-changelog"; visitors and windows are
# co-partitioned with EVENTS, people with IDENTITIES.
TABLES = ("visitors", "windows", "people")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


def specs(settings: Settings) -> list[TopicSpec]:
    """Topics to create before any worker starts, all with the configured partitions."""
    out = [TopicSpec(settings.topic(name), settings.partitions) for name in ALL]
    out += [
        TopicSpec(
            settings.topic(f"{PROCESSOR_APP_ID}-{table}-changelog"),
            settings.partitions,
            compacted=True,
        )
        for table in TABLES
    ]
    out.append(TopicSpec(settings.topic(SUPPRESSIONS), 1, compacted=True))
    out.append(TopicSpec(settings.topic(ERASURE_ACKS), 1))
    return out


def changelog_topics(settings: Settings) -> dict[str, str]:
    """Changelog topic as named on the broker -> its table, for every table in TABLES."""
    return {settings.topic(f"{PROCESSOR_APP_ID}-{table}-changelog"): table for table in TABLES}
