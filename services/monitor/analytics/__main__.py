"""``python -m services.monitor.analytics``: run the analytics worker until SIGTERM/SIGINT.

Creates the input and alert topics when ``KAFKA_CREATE_TOPICS`` allows (faust creates its
own internal topics), then runs one faust worker with the app of ``app.py``.
"""

from __future__ import annotations

import asyncio

import faust

from services.monitor.analytics.app import build_app
from services.monitor.analytics.settings import AnalyticsSettings
from shared.events import Topic, topic_name
from shared.kafka.admin import ensure_topics

INPUTS = (Topic.IRCC, Topic.CPC, Topic.DISCREPANCY, Topic.UTILIZATION)


def main() -> None:
    """Build the app from the environment and run its worker."""
    settings = AnalyticsSettings()
    if settings.kafka_create_topics:
        asyncio.run(
            ensure_topics(
                settings.kafka_bootstrap,
                [topic_name(t, settings.kafka_topic_prefix) for t in INPUTS],
                partitions=settings.kafka_partitions,
                replication=settings.kafka_replication,
            )
        )
    app = build_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
