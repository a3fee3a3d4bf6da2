"""Broker unreachable: the registry keeps accepting, the outbox drains once it is back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from shared.events import topic_name
from shared.kit.outbox import OutboxRelay
from tests.support.kafka import TopicReader
from tests.support.poll import eventually
from tests.support.records import authority, permit
from tests.support.registry import government_users, publish, registry_settings, running_registry
from tools.broker import EmbeddedBroker
from tools.ports import free_port


async def test_publications_made_while_the_broker_is_down_are_all_delivered_after(
    topic_prefix: str, db_url, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet
    settings = registry_settings(
        kafka=f"127.0.0.1:{port}", prefix=topic_prefix, db=await db_url("registry"), tmp=tmp_path
    )
    async with running_registry(settings) as client:
        users = await government_users(client, "mx")
        cna = authority("mx", ["cna@mx.example"])
        await publish(client, users["pa"], cna)
        uids = [
            (await publish(client, users["pa"], permit("mx", cna["header"]["identifier"])))["uid"]
            for _ in range(5)
        ]
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"] is False
        relay = client.app.state.ctx.relay  # type: ignore[attr-defined]
        assert await relay.backlog() == 6

        with EmbeddedBroker(port):
            async with TopicReader(
                f"127.0.0.1:{port}", topic_name("absch.ircc.v1", topic_prefix)
            ) as reader:
                events = await reader.read_until(lambda evs: len(evs) >= 5, timeout=60)
            assert await eventually(_drained(relay), timeout=30, what="outbox drained")
        # Each IRCC is its own key (partition order only holds per key): compare as sets,
        # and count to be sure nothing was lost or sent twice.
        assert sorted(e.subject for e in events) == sorted(uids)
        assert len(events) == 5


def _drained(relay: OutboxRelay) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await relay.backlog() == 0

    return probe
