"""A checking worker and the kit's directory view on a real database, driven by a test.

The outbox relay is never started (its producer points nowhere): tests read what the
worker staged from the outbox table. Events are built here in the shapes the registry and
the checkpoint service publish.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from services.monitor.adapters.tables import Base, CaseRow, FindingsRow, OutboxRow
from services.monitor.directory import Checkpoints
from services.monitor.metrics import MonitorMetrics
from services.monitor.worker import MonitorWorker
from shared.db import create_engine, create_schema
from shared.events import CloudEvent, decode_event, new_event
from shared.events.models import (
    CpcPublished,
    DirectoryRecordPublished,
    DirectoryRecordWithdrawn,
    IrccEvent,
)
from shared.kafka.producer import EventProducer
from shared.kit.consumer import Delivery, Tx
from shared.kit.directory import DirectoryView, directory_table
from shared.kit.offsets import offsets_table
from shared.kit.outbox import OutboxRelay

DELIVERY = Delivery("test", 0, 0, None)
HOLDER = "T-HOLDER-1"


class MonitorDirectory:
    """The kit's directory view and the monitor's checkpoints, wired as bootstrap wires
    them; :meth:`apply` is one consumed directory event in its own transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.view = DirectoryView(directory_table(Base.metadata))
        self.checkpoints = Checkpoints(self.view.table)
        self.view.mirrors.append(self.checkpoints.mirror)
        self.view.listeners.append(self.checkpoints.on_change)

    @property
    def listeners(self) -> list[Any]:
        """Called with (transaction, checkpoint identifier) on a real change."""
        return self.checkpoints.listeners

    def snapshot(self) -> dict[str, Any]:
        """The rules' snapshot of checkpoints."""
        return self.checkpoints.snapshot()

    async def load(self) -> None:
        """Fill the view from the database, as the kit does at start."""
        await self.view.load(self.sessions)

    async def apply(self, event: CloudEvent[Any]) -> None:
        """One directory event, in a transaction of its own; hooks run after commit."""
        async with self.sessions() as session:
            async with session.begin():
                tx = Tx(session)
                await self.view.on_event(tx, event, DELIVERY)
            for hook in tx.hooks:
                hook()


@dataclass
class Checking:
    """One monitor's checking side: the worker, its checkpoint view, their database."""

    worker: MonitorWorker
    view: MonitorDirectory
    metrics: MonitorMetrics
    registry: CollectorRegistry
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay

    async def feed(self, *events: CloudEvent[Any]) -> None:
        """Hand IRCC or CPC events to the worker as its consumer would."""
        for event in events:
            await self.worker.on_event(event, DELIVERY)

    def rechecks(self, reason: str) -> float:
        """``monitor_rechecks_total{reason}`` of this instance."""
        value = self.registry.get_sample_value("monitor_rechecks_total", {"reason": reason})
        assert value is not None, "the series exists from the start"
        return value

    async def cases(self) -> dict[str, CaseRow]:
        """Every case, by id."""
        async with self.sessions() as session:
            return {c.id: c for c in await session.scalars(select(CaseRow))}

    async def staged(self) -> list[CloudEvent[Any]]:
        """Events in the outbox, in staging order."""
        async with self.sessions() as session:
            rows = await session.scalars(select(OutboxRow).order_by(OutboxRow.id))
            return [decode_event(r.payload.encode()) for r in rows]

    async def findings(self) -> dict[str, dict[str, Any]]:
        """Stored findings by finding id (``{finding, gen, active}``)."""
        async with self.sessions() as session:
            rows = await session.scalars(select(FindingsRow))
            return {fid: entry for row in rows for fid, entry in row.stored.items()}


@asynccontextmanager
async def checking(
    url: str,
    *,
    grace_seconds: float = 3600.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    session_class: type[Session] = Session,
) -> AsyncIterator[Checking]:
    """Worker and view on ``url`` (tables created), wired as bootstrap wires them."""
    engine = create_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False, sync_session_class=session_class)
    view = MonitorDirectory(sessions)  # adds the kit's directory table
    offsets_table(Base.metadata)
    await create_schema(engine, Base.metadata)
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    producer = EventProducer("127.0.0.1:9", client_id="test", metrics=metrics.plumbing)
    relay = OutboxRelay(sessions, OutboxRow, producer, metrics.plumbing)
    worker = MonitorWorker(
        sessions=sessions,
        relay=relay,
        metrics=metrics,
        checkpoints=view.checkpoints,
        clock=clock,
        prefix="test.",
        grace_seconds=grace_seconds,
        recheck_interval=3600.0,
    )
    view.listeners.append(worker.recheck_checkpoint)
    await view.load()
    try:
        yield Checking(worker, view, metrics, registry, sessions, relay)
    finally:
        await engine.dispose()


def checkpoint_published(ident: str, revision: int = 1, gov: str = "de") -> CloudEvent[Any]:
    """``directory.record.published`` of a checkpoint revision."""
    data = DirectoryRecordPublished(
        uid=f"ABSCH-CP-{gov.upper()}-{ident}-{revision}",
        schema_="absCheckpoint",
        identifier=ident,
        document_id=1,
        revision=revision,
        government=gov,
        record={
            "header": {"identifier": ident, "schema": "absCheckpoint", "languages": ["en"]},
            "government": {"identifier": gov},
        },
    )
    return new_event("directory.record.published", source="registry", subject=data.uid, data=data)


def checkpoint_withdrawn(ident: str, gov: str = "de") -> CloudEvent[Any]:
    """``directory.record.withdrawn`` of a checkpoint."""
    data = DirectoryRecordWithdrawn(
        uid=f"ABSCH-CP-{gov.upper()}-{ident}",
        schema_="absCheckpoint",
        identifier=ident,
        document_id=1,
        government=gov,
    )
    return new_event("directory.record.withdrawn", source="registry", subject=data.uid, data=data)


def ircc_event(doc: int, revision: int = 1, kind: str = "ircc.published") -> CloudEvent[Any]:
    """An IRCC revision that raises nothing against :func:`cpc_event`'s communiqués."""
    ident = f"T-IRCC-{doc}"
    body: dict[str, Any] = {
        "header": {"identifier": ident, "schema": "absPermit", "languages": ["en"]},
        "government": {"identifier": "mx"},
        "dateOfIssuance": "2024-01-01",
        "dateOfExpiry": "2099-01-01",
        "entitiesToWhomPICGranted": [{"identifier": HOLDER}],
    }
    if kind == "ircc.revoked":
        body["amendmentIntent"] = 1
    uid = f"ABSCH-IRCC-MX-{doc}-{revision}"
    data = IrccEvent(
        uid=uid, identifier=ident, document_id=doc, revision=revision, government="mx", record=body
    )
    return new_event(kind, source="registry", subject=uid, data=data)


def cpc_event(doc: int, *, irccs: list[int], checkpoints: list[str]) -> CloudEvent[Any]:
    """A communiqué of Germany citing IRCCs ``T-IRCC-<n>`` and the given checkpoints."""
    ident = f"T-CPC-{doc}"
    body: dict[str, Any] = {
        "header": {"identifier": ident, "schema": "absCheckpointCommunique", "languages": ["en"]},
        "government": {"identifier": "de"},
        "absCheckpoints": [{"identifier": cp} for cp in checkpoints],
        "absIRCCs": [{"identifier": f"T-IRCC-{n}"} for n in irccs],
        "dateCollected": "2025-01-01",
        "description": {"en": "Basic research."},
        "personsAtCheckpoint": [{"identifier": HOLDER}],
    }
    uid = f"ABSCH-CPC-DE-{doc}-1"
    data = CpcPublished(
        uid=uid,
        identifier=ident,
        document_id=doc,
        revision=1,
        government="de",
        checkpoints=checkpoints,
        record=body,
    )
    return new_event("cpc.published", source="checkpoint", subject=uid, data=data)
