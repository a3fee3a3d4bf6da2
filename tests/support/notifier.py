"""A notifier on its own, fed by events written straight to the broker (no registry)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.notifier.bootstrap import bootstrap
from services.notifier.context import NotifierContext
from services.notifier.settings import NotifierSettings
from shared.events import CloudEvent, Topic, new_event, topic_name
from shared.events.models import DirectoryRecordPublished, IrccEvent
from shared.uid import format_uid
from tests.support.poll import eventually
from tests.support.records import authority, focal_point
from tests.support.registry import (
    ADMIN_TOKEN,
    government_users,
    publish,
    registry_settings,
    running_registry,
)
from tests.support.servers import service_client, serving
from tests.support.stack import Stack
from tools.smtp_sink import SmtpSink

_document_ids = itertools.count(1)


def notifier_settings(
    *, kafka: str, prefix: str, db: str, smtp: SmtpSink, **extra: Any
) -> NotifierSettings:
    """Settings of a test notifier (no registry behind ``jwks_url``)."""
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka,
        "kafka_topic_prefix": prefix,
        "database_url": db,
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "jwks_url": "http://127.0.0.1:9/.well-known/jwks.json",
        "public_base_url": "http://absch.test",
        "environment": "test",
    } | extra
    return NotifierSettings(**values)


@dataclass
class RunningNotifier:
    """A served notifier: its HTTP client and app."""

    client: httpx.AsyncClient
    app: FastAPI

    @property
    def ctx(self) -> NotifierContext:
        """The notifier's context (projection, sessions, settings)."""
        ctx: NotifierContext = self.app.state.ctx
        return ctx


@asynccontextmanager
async def running_notifier(
    settings: NotifierSettings, *, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[RunningNotifier]:
    """Serve a notifier until the block ends (its lifespan runs both ways)."""
    app = bootstrap(settings, clock=clock) if clock else bootstrap(settings)
    async with serving(app) as url, service_client(url) as client:
        yield RunningNotifier(client, app)


class FakeClock:
    """A settable UTC clock for ``bootstrap(settings, clock=...)``."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    @classmethod
    def on(cls, day: str) -> FakeClock:
        """A clock at noon UTC of a ``YYYY-MM-DD`` day."""
        clock = cls(datetime.now(UTC))
        clock.set_date(day)
        return clock

    def __call__(self) -> datetime:
        return self.now

    def set_date(self, day: str) -> None:
        """Jump to noon UTC of a ``YYYY-MM-DD`` day."""
        self.now = datetime.fromisoformat(f"{day}T12:00:00").replace(tzinfo=UTC)

    def advance(self, **delta: float) -> None:
        """Move forward by a ``timedelta(**delta)``."""
        self.now += timedelta(**delta)


def directory_event(record: dict[str, Any]) -> CloudEvent[Any]:
    """``directory.record.published`` for revision 1 of a directory record."""
    schema = record["header"]["schema"]
    gov = (record.get("government") or {}).get("identifier")
    doc = next(_document_ids)
    data = DirectoryRecordPublished(
        uid=format_uid(schema, gov, doc, 1),
        schema_=schema,
        identifier=record["header"]["identifier"],
        document_id=doc,
        revision=1,
        government=gov,
        record=record,
    )
    return new_event("directory.record.published", source="registry", subject=data.uid, data=data)


def ircc_event(
    record: dict[str, Any],
    *,
    event_type: str = "ircc.published",
    document_id: int | None = None,
    revision: int = 1,
) -> CloudEvent[Any]:
    """An IRCC event for one revision of ``record`` (a new document unless given)."""
    gov = record["government"]["identifier"]
    doc = document_id or next(_document_ids)
    uid = format_uid("absPermit", gov, doc, revision)
    data = IrccEvent(
        uid=uid,
        identifier=record["header"]["identifier"],
        document_id=doc,
        revision=revision,
        government=gov,
        record=record,
    )
    return new_event(event_type, source="registry", subject=uid, data=data)


class EventWriter:
    """Writes events to the prefixed topics, keyed like the services key them."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self._prefix = prefix
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def __aenter__(self) -> EventWriter:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, topic: Topic, event: CloudEvent[Any], *, key: str | None = None) -> None:
        """Send one event and wait for the broker's acknowledgement."""
        await self._producer.send_and_wait(
            topic_name(topic, self._prefix),
            event.to_json_bytes(),
            key=(key or event.subject.rsplit("-", 1)[0]).encode(),
        )


@dataclass
class NotifierStack:
    """A registry (identities, records) and a notifier, without checkpoint and monitor."""

    registry: httpx.AsyncClient
    notifier: httpx.AsyncClient
    notifier_app: FastAPI


@asynccontextmanager
async def running_notifier_stack(
    *,
    kafka: str,
    prefix: str,
    db_url: Any,
    tmp: Path,
    smtp: SmtpSink,
    clock: Callable[[], datetime] | None = None,
    **notifier_extra: Any,
) -> AsyncIterator[NotifierStack]:
    """Start a registry and a notifier reading its JWKS, on one broker and SMTP sink."""
    reg_settings = registry_settings(
        kafka=kafka, prefix=prefix, db=await db_url("registry"), tmp=tmp
    )
    async with running_registry(reg_settings) as registry:
        base = str(registry.base_url).rstrip("/")
        settings = notifier_settings(
            kafka=kafka,
            prefix=prefix,
            db=await db_url("notifier"),
            smtp=smtp,
            jwks_url=f"{base}/.well-known/jwks.json",
            public_base_url=base,
            **notifier_extra,
        )
        async with running_notifier(settings, clock=clock) as notifier:
            yield NotifierStack(registry, notifier.client, notifier.app)


@dataclass
class Country:
    """A government's users and its published NFP and CNA, known to the notifier."""

    users: dict[str, str]
    cna: str
    nfp_address: str
    cna_address: str


async def country_with_authorities(
    stack: Stack | NotifierStack, gov: str, *extra: dict[str, Any]
) -> Country:
    """Publish an ABS NFP, a CNA and ``extra`` directory records (contacts, by the admin)
    for ``gov``, then wait until the stack's notifier knows all of them."""
    users = await government_users(stack.registry, gov)
    nfp_address, cna_address = f"nfp@{gov}.example", f"cna@{gov}.example"
    nfp, cna = focal_point(gov, [nfp_address]), authority(gov, [cna_address])
    await publish(stack.registry, ADMIN_TOKEN, nfp)
    await publish(stack.registry, users["pa"], cna)
    for record in extra:
        await publish(stack.registry, ADMIN_TOKEN, record)
    ctx: NotifierContext = stack.notifier_app.state.ctx
    wanted = [r["header"]["identifier"] for r in (nfp, cna, *extra)]
    await eventually(
        lambda: all(ctx.projection.knows(i) for i in wanted), what="the notifier knows them"
    )
    return Country(users, cna["header"]["identifier"], nfp_address, cna_address)
