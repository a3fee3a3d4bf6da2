"""Event contracts: envelope, payload models, catalogue, codec and topic names."""

from shared.events.catalog import CATALOG, EventSpec, spec_for
from shared.events.codec import DecodeError, UnknownEventType, decode_event, new_event
from shared.events.envelope import CloudEvent, EventData
from shared.events.topics import Topic, all_topics, dlq_name, topic_name

__all__ = [
    "CATALOG",
    "CloudEvent",
    "DecodeError",
    "EventData",
    "EventSpec",
    "Topic",
    "UnknownEventType",
    "all_topics",
    "decode_event",
    "dlq_name",
    "new_event",
    "spec_for",
    "topic_name",
]
