"""The kit's directory view: two instances on one database each learn every record, and
a change reaches the listeners once, in the transaction that stores it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import DeclarativeBase

from shared.events import Topic
from shared.kit.assemble import Kit
from shared.kit.consumer import Tx
from shared.kit.directory import Entry
from shared.metrics import PlumbingMetrics
from shared.settings import ServiceSettings
from tests.support.databases import DbFactory
from tests.support.notifier import EventWriter, directory_event
from tests.support.poll import eventually
from tests.support.records import authority, checkpoint

SERVICE = "kitdir"


class Base(DeclarativeBase):
    pass


class _Settings(ServiceSettings):
    service: str = SERVICE


def _kit(database_url: str, bootstrap: str, prefix: str, instance: str) -> Kit:
    config = _Settings(
        database_url=database_url,
        kafka_bootstrap=bootstrap,
        kafka_topic_prefix=prefix,
        kafka_partitions=2,
        kafka_fetch_max_wait_ms=100,
        instance_id=instance,
    )
    return Kit(config, PlumbingMetrics(CollectorRegistry(), SERVICE), Base.metadata)


@asynccontextmanager
async def _running(*kits: Kit) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for kit in kits:
            await stack.enter_async_context(kit.lifespan()(FastAPI()))
        yield


async def test_two_instances_on_one_database_each_know_every_record_and_react_once(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory
) -> None:
    url = await db_url("kitdir")
    # The same instance id on purpose: broadcast reading needs no identity.
    kits = [_kit(url, kafka_bootstrap, topic_prefix, "1") for _ in range(2)]
    changes: list[tuple[str, int | None, int]] = []

    async def heard(_tx: Tx, before: Entry | None, after: Entry) -> None:
        changes.append((after.identifier, before.revision if before else None, after.revision))

    views = [kit.directory() for kit in kits]
    for view in views:
        view.listeners.append(heard)
    records = [checkpoint("de"), authority("mx", ["cna@mx.example"])]
    ids = [r["header"]["identifier"] for r in records]
    async with _running(*kits), EventWriter(kafka_bootstrap, topic_prefix) as writer:
        for record in records:
            await writer.send(Topic.DIRECTORY, directory_event(record))

        def everyone_knows() -> bool:
            return all(view.record(i) is not None for view in views for i in ids)

        await eventually(everyone_knows, what="both instances know both records")

        def all_ready() -> bool:
            return all(k.readiness.snapshot().get("directory", False) for k in kits)

        await eventually(all_ready, what="the directory check passes everywhere")
    assert sorted(changes) == sorted((i, None, 1) for i in ids), "each change heard once"

    # A restart loads the table and reads the topic again: nothing changes, nobody hears.
    again = _kit(url, kafka_bootstrap, topic_prefix, "2")
    view = again.directory()
    view.listeners.append(heard)
    async with _running(again):
        assert all(view.record(i) is not None for i in ids), "loaded before reading"
        await eventually(lambda: view.read_to_end_at() > 0, what="the topic read again to its end")
    assert len(changes) == len(ids)
