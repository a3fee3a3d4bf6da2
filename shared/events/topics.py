"""Kafka topic names (DESIGN.md §3). One topic per entity stream, keyed by record id."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    """Base topic names; a deployment may prefix them (``KAFKA_TOPIC_PREFIX``)."""

    DIRECTORY = "absch.directory.v1"
    IRCC = "absch.ircc.v1"
    CPC = "absch.cpc.v1"
    DISCREPANCY = "absch.discrepancy.v1"
    UTILIZATION = "absch.utilization.v1"
    NOTIFICATION = "absch.notification.v1"


DLQ_SUFFIX = ".dlq"


def topic_name(topic: Topic | str, prefix: str = "") -> str:
    """Full topic name with the deployment prefix (empty in production)."""
    return f"{prefix}{topic}"


def dlq_name(topic: str) -> str:
    """Dead-letter topic for a (full) topic name."""
    return f"{topic}{DLQ_SUFFIX}"


def all_topics(prefix: str = "", *, with_dlq: bool = True) -> list[str]:
    """Every topic the system uses, optionally with their dead-letter topics."""
    names = [topic_name(t, prefix) for t in Topic]
    if with_dlq:
        names += [dlq_name(n) for n in names]
    return names
