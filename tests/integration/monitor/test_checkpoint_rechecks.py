"""A restarted monitor re-checks no CPC whose checkpoints did not change.

The kit's directory view keeps what it read from the directory topic in the monitor's
database, so re-reading the topic (a new consumer group) after a restart changes nothing
and re-checks nothing (``monitor_rechecks_total``), while a changed checkpoint re-checks
exactly its citers, in the transaction that stores the change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.monitor.adapters.tables import Base
from services.monitor.domain import CheckpointState
from shared.events import CloudEvent, topic_name
from shared.kafka.producer import EventProducer
from shared.kit.consumer import Delivery, SupervisedConsumer, Tx
from shared.kit.offsets import offsets_table
from tests.integration.monitor.checking import (
    Checking,
    checking,
    checkpoint_published,
    checkpoint_withdrawn,
    cpc_event,
)
from tests.support.poll import eventually
from tests.support.workload import Workload

CP_A, CP_B = "T-CP-A", "T-CP-B"
CITING_A = [cpc_event(n, irccs=[], checkpoints=[CP_A]) for n in (1, 2, 3)]
CITING_B = [cpc_event(n, irccs=[], checkpoints=[CP_B]) for n in (4, 5)]


async def _produce(kafka: str, prefix: str, *events: CloudEvent[Any]) -> None:
    await Workload(events=[("absch.directory.v1", e.data.identifier, e) for e in events]).produce(
        kafka, prefix
    )


@asynccontextmanager
async def following(kafka: str, prefix: str, mon: Checking, group: str) -> AsyncIterator[list[str]]:
    """The directory topic read by the kit's consumer into the view, as the kit reads it;
    yields the identifiers of the events committed so far."""
    applied: list[str] = []

    async def handler(tx: Tx, event: CloudEvent[Any], delivery: Delivery) -> None:
        await mon.view.view.on_event(tx, event, delivery)
        ident = event.data.identifier
        tx.after_commit(lambda: applied.append(ident))

    producer = EventProducer(kafka, client_id="test", metrics=mon.metrics.plumbing)
    consumer = SupervisedConsumer(
        name="directory",
        bootstrap=kafka,
        topics=[topic_name("absch.directory.v1", prefix)],
        group_id=f"{prefix}{group}",
        producer=producer,
        metrics=mon.metrics.plumbing,
        tx_handler=handler,
        sessions=mon.sessions,
        offsets=offsets_table(Base.metadata),
        fetch_max_wait_ms=100,
    )
    consumer.start()
    try:
        yield applied
    finally:
        await consumer.stop()
        await producer.stop()


async def _read(applied: list[str], n: int) -> None:
    await eventually(lambda: len(applied) >= n, what=f"{n} directory events applied")


async def _checkpoint_findings(mon: Checking) -> dict[str, str]:
    """CPC uid -> reason of its active CHECKPOINT_UNKNOWN finding."""
    return {
        entry["finding"]["cpc_uid"]: entry["finding"]["evidence"]["checkpoints"][0]["reason"]
        for entry in (await mon.findings()).values()
        if entry["active"] and entry["finding"]["rule"] == "CHECKPOINT_UNKNOWN"
    }


async def test_a_restart_rechecks_nothing_and_a_change_rechecks_its_citers(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any
) -> None:
    url = await db_url("monitor")
    directory = [
        checkpoint_published(CP_A),
        checkpoint_published(CP_B),
        checkpoint_published(CP_A, revision=2),  # a new revision, the same checkpoint state
    ]
    await _produce(kafka_bootstrap, topic_prefix, *directory)
    async with checking(url) as first:
        await first.feed(*CITING_A, *CITING_B)  # before the checkpoints: pending, not flagged
        async with following(kafka_bootstrap, topic_prefix, first, "first") as applied:
            await _read(applied, 3)
        assert first.rechecks("checkpoint") == 5  # first sightings re-check their citers
        known = first.view.snapshot()
    assert known == {
        CP_A: CheckpointState(CP_A, "de", True),
        CP_B: CheckpointState(CP_B, "de", True),
    }
    assert await _checkpoint_findings(first) == {}

    async with checking(url) as again:
        assert again.view.snapshot() == known  # loaded before the topic is read
        # Another group: the topic is read again from the start, as a new instance reads it.
        async with following(kafka_bootstrap, topic_prefix, again, "again") as applied:
            await _read(applied, 3)
            assert again.rechecks("checkpoint") == 0

            await _produce(kafka_bootstrap, topic_prefix, checkpoint_published(CP_A, 3, "fr"))
            await _read(applied, 4)
            assert again.rechecks("checkpoint") == len(CITING_A)
            assert await _checkpoint_findings(again) == {
                e.data.uid: "other government" for e in CITING_A
            }
            cases = (await again.cases()).values()
            opened = {c.cpc_uid for c in cases if c.rule == "CHECKPOINT_UNKNOWN"}
            assert opened == {e.data.uid for e in CITING_A}

            await _produce(kafka_bootstrap, topic_prefix, checkpoint_published(CP_A, 3, "fr"))
            await _read(applied, 5)  # the same revision again
            assert again.rechecks("checkpoint") == len(CITING_A)
        assert again.rechecks("grace") == 0


async def test_two_instances_on_one_database_recheck_a_change_once(db_url: Any) -> None:
    url = await db_url("monitor")
    async with checking(url) as a, checking(url) as b:
        await a.feed(*CITING_A)
        for event in (checkpoint_published(CP_A), checkpoint_withdrawn(CP_A)):
            await a.view.apply(event)
            await b.view.apply(event)  # every instance reads the whole topic
        assert (a.rechecks("checkpoint"), b.rechecks("checkpoint")) == (6, 0)
        gone = {CP_A: CheckpointState(CP_A, "de", False)}
        assert a.view.snapshot() == b.view.snapshot() == gone
        assert await _checkpoint_findings(a) == {e.data.uid: "not published" for e in CITING_A}


async def test_a_withdrawn_checkpoint_stays_withdrawn_after_a_restart(db_url: Any) -> None:
    url = await db_url("monitor")
    directory = [checkpoint_published(CP_A), checkpoint_withdrawn(CP_A)]
    async with checking(url) as first:
        await first.feed(*CITING_A)
        for event in directory:
            await first.view.apply(event)
        flagged = await _checkpoint_findings(first)
        assert flagged == {e.data.uid: "not published" for e in CITING_A}
    async with checking(url) as again:
        for event in directory:  # the topic read again from the start
            await again.view.apply(event)
        assert again.rechecks("checkpoint") == 0
        assert again.view.snapshot() == {CP_A: CheckpointState(CP_A, "de", False)}
        await again.view.apply(checkpoint_published(CP_A, revision=2))
        assert again.rechecks("checkpoint") == len(CITING_A)
        assert await _checkpoint_findings(again) == {}


async def test_a_recheck_that_failed_is_done_when_the_topic_is_read_again(db_url: Any) -> None:
    url = await db_url("monitor")
    event = checkpoint_published(CP_A)
    async with checking(url) as first:
        await first.feed(*CITING_A)

        async def broken(_tx: Tx, _identifier: str) -> None:
            raise ConnectionError("database went away")

        first.view.listeners.insert(0, broken)
        with pytest.raises(ConnectionError):
            await first.view.apply(event)  # the change and its re-check roll back together
        assert first.rechecks("checkpoint") == 0
    async with checking(url) as again:
        await again.view.apply(event)
        assert again.rechecks("checkpoint") == len(CITING_A)
        await again.view.apply(event)
        assert again.rechecks("checkpoint") == len(CITING_A)
    async with checking(url) as third:
        await third.view.apply(event)
        assert third.rechecks("checkpoint") == 0


async def test_grace_rechecks_are_counted(db_url: Any) -> None:
    url = await db_url("monitor")
    now = datetime.now(UTC)
    later = now + timedelta(hours=2)
    async with checking(url, clock=lambda: now) as mon:
        await mon.feed(*CITING_A)  # cited checkpoint unknown: pending for an hour
    async with checking(url, clock=lambda: later) as mon:
        await mon.worker._recheck_due()
        assert mon.rechecks("grace") == len(CITING_A)
        assert mon.rechecks("checkpoint") == 0
        assert await _checkpoint_findings(mon) == {e.data.uid: "unknown" for e in CITING_A}
