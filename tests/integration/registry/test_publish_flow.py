"""Registry: a published IRCC reaches Kafka as a CloudEvent through the outbox."""

from __future__ import annotations

from pathlib import Path

from shared.events import topic_name
from tests.support.kafka import TopicReader
from tests.support.records import authority, permit
from tests.support.registry import (
    government_users,
    publish,
    registry_settings,
    running_registry,
)


async def test_published_ircc_goes_out_on_the_ircc_topic(
    kafka_bootstrap: str, topic_prefix: str, db_url, tmp_path: Path
) -> None:
    settings = registry_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("registry"), tmp=tmp_path
    )
    async with running_registry(settings) as client:
        users = await government_users(client, "mx")
        cna = authority("mx", ["cna@mx.example"])
        await publish(client, users["pa"], cna)
        ircc = permit("mx", cna["header"]["identifier"])
        result = await publish(client, users["pa"], ircc)
        assert result["status"] == "published"
        assert result["uid"].startswith("ABSCH-IRCC-MX-")
        assert result["uid"].endswith("-1")

        async with TopicReader(kafka_bootstrap, topic_name("absch.ircc.v1", topic_prefix)) as r:
            events = await r.read_until(lambda evs: len(evs) >= 1)
        event = events[0]
        assert event.type == "ircc.published"
        assert event.subject == result["uid"]
        assert event.source == "/absch/registry"
        assert event.data.record["header"]["identifier"] == ircc["header"]["identifier"]
        assert r.raw[0].key.decode() == result["uid"].rsplit("-", 1)[0]
