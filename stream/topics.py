"""Every Kafka topic the pipeline uses, with its role. Created explicitly at start-up
(the embedded broker would otherwise auto-create unknown topics with 4 partitions)."""

from __future__ import annotations

from dataclasses import dataclass

from stream.config import Settings

EVENTS = "clickstream.events"  # valid, enriched events, keyed by visitor id
INVALID = "clickstream.invalid"  # dead letters: original payload + reasons
CONTROL = "clickstream.control"  # session-timeout ticks, co-partitioned with EVENTS
STAGE_CHANGES = "journey.stage-changes"  # one record per stage transition
SESSIONS = "journey.sessions"  # session summaries (updates and close)
TRIGGERS = "journey.triggers"  # cart abandoned, first purchase, ...
VISITORS = "journey.visitors"  # visitor snapshots for clickstream.visitors
METRICS = "journey.metrics"  # completed 1-minute metric windows
IDENTITIES = "clickstream.identities"  # identified visitors' states, keyed by user id
CUSTOMERS = "journey.customers"  # one person across devices, keyed by user id

PROCESSOR_APP_ID = "clickstream-processor"
SINK_GROUP = "clickstream-sink"

ALL = (
    EVENTS,
    INVALID,
    CONTROL,
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
    return out


def changelog_topics(settings: Settings) -> dict[str, str]:
    """Changelog topic as named on the broker -> its table, for every table in TABLES."""
    return {settings.topic(f"{PROCESSOR_APP_ID}-{table}-changelog"): table for table in TABLES}
