"""Checkpoint use cases: keep the checkpoint directory, accept and publish communiqués."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.checkpoint.adapters.tables import (
    CommuniqueRow,
    IdempotencyRow,
    KnownCheckpoint,
    OutboxRow,
)
from services.checkpoint.context import CheckpointContext
from services.checkpoint.domain import CPC_SCHEMA, body_hash, check_can_submit, for_publication
from shared.auth import Principal
from shared.events import CloudEvent, Topic, new_event
from shared.events.models import CpcPublished, DirectoryRecordPublished, DirectoryRecordWithdrawn
from shared.outbox import stage
from shared.records import AbsCheckpointCommunique, parse_record, record_errors
from shared.uid import format_uid, parse_reference


class InvalidCommunique(Exception):
    """Validation failed; ``errors`` lists ``{"field", "message"}``."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class Conflict(Exception):
    """Idempotency-Key reused with another body, or identifier already published."""


class NotFound(Exception):
    """No such communiqué."""


@dataclass(frozen=True)
class Submitted:
    """Outcome of a submission."""

    uid: str
    replayed: bool = False
    warnings: list[str] = field(default_factory=list)


async def on_directory(ctx: CheckpointContext, event: CloudEvent[Any]) -> None:
    """Keep the published checkpoints (idempotent; older revisions never win)."""
    data = event.data
    async with ctx.sessions() as session:
        if isinstance(data, DirectoryRecordPublished) and data.schema_ == "absCheckpoint":
            row = await session.get(KnownCheckpoint, data.identifier)
            if row is None:
                row = KnownCheckpoint(identifier=data.identifier, revision=0)
                session.add(row)
            if data.revision >= row.revision:
                row.government, row.revision, row.published = data.government, data.revision, True
                row.name = data.record.get("name") or {}
        elif isinstance(data, DirectoryRecordWithdrawn):
            row = await session.get(KnownCheckpoint, data.identifier)
            if row is not None:
                row.published = False
        await session.commit()


def _validate(body: dict[str, Any]) -> AbsCheckpointCommunique:
    if (body.get("header") or {}).get("schema") != CPC_SCHEMA:
        raise InvalidCommunique([{"field": "header.schema", "message": f"must be {CPC_SCHEMA}"}])
    try:
        record = parse_record(body)
    except ValidationError as exc:
        raise InvalidCommunique(record_errors(exc)) from None
    assert isinstance(record, AbsCheckpointCommunique)
    return record


async def _replay(
    ctx: CheckpointContext, principal: Principal, key: str, digest: str
) -> Submitted | None:
    async with ctx.sessions() as session:
        row = await session.get(IdempotencyRow, (principal.id, key))
    if row is None:
        return None
    if row.body_hash != digest:
        raise Conflict("Idempotency-Key was used with another body")
    ctx.metrics.replayed.inc()
    return Submitted(row.uid, replayed=True)


async def submit(
    ctx: CheckpointContext,
    principal: Principal,
    body: dict[str, Any],
    *,
    idempotency_key: str | None,
    correlation_id: str | None = None,
) -> Submitted:
    """Validate, assign the UID and publish ``cpc.published`` through the outbox."""
    digest = body_hash(body)
    if idempotency_key and (done := await _replay(ctx, principal, idempotency_key, digest)):
        return done
    record = _validate(body)
    stored = for_publication(record.dump())
    gov = str(record.government_code())
    cited = [parse_reference(r["identifier"])[0] for r in stored.get("absCheckpoints", [])]
    check_can_submit(principal, gov, cited)
    warnings = (
        ["sourceCountries includes the issuing government"]
        if record.own_country_in_sources()
        else []
    )
    async with ctx.sessions() as session:
        errors = []
        for i, ident in enumerate(cited):
            cp = await session.get(KnownCheckpoint, ident)
            if cp is None or not cp.published or cp.government != gov:
                errors.append(
                    {
                        "field": f"absCheckpoints.{i}.identifier",
                        "message": f"not a published checkpoint of {gov}",
                    }
                )
        if errors:
            raise InvalidCommunique(errors)
        row = CommuniqueRow(
            identifier=stored["header"]["identifier"],
            government=gov,
            revision=1,
            uid="",
            body=stored,
            submitted_by=principal.id,
            ircc_ids=[parse_reference(r["identifier"])[0] for r in stored.get("absIRCCs") or []],
            created_at=ctx.clock(),
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict("a communiqué with this header.identifier exists") from None
        row.uid = format_uid(CPC_SCHEMA, gov, row.document_id, 1)
        data = CpcPublished(
            uid=row.uid,
            identifier=row.identifier,
            document_id=row.document_id,
            revision=1,
            government=gov,
            checkpoints=cited,
            submitted_by=principal.id,
            record=stored,
        )
        event = new_event(
            "cpc.published",
            source="checkpoint",
            subject=row.uid,
            data=data,
            correlation_id=correlation_id,
        )
        stage(
            session,
            OutboxRow,
            ctx.topic(Topic.CPC),
            event,
            key=format_uid(CPC_SCHEMA, gov, row.document_id),
        )
        if idempotency_key:
            session.add(
                IdempotencyRow(
                    principal=principal.id,
                    key=idempotency_key,
                    body_hash=digest,
                    uid=row.uid,
                    created_at=ctx.clock(),
                )
            )
        try:
            await session.commit()
        except IntegrityError:  # the same key raced us: answer as the winner did
            await session.rollback()
            if idempotency_key and (done := await _replay(ctx, principal, idempotency_key, digest)):
                return done
            raise Conflict("a communiqué with this header.identifier exists") from None
    ctx.relay.wake()
    ctx.metrics.submitted.inc()
    return Submitted(row.uid, warnings=warnings)


async def get(ctx: CheckpointContext, uid: str) -> CommuniqueRow:
    """A communiqué by UID (revision optional) or header.identifier."""
    async with ctx.sessions() as session:
        row = await session.scalar(
            select(CommuniqueRow).where(
                (CommuniqueRow.uid == uid.upper())
                | (CommuniqueRow.identifier == uid)
                | (CommuniqueRow.uid.like(f"{uid.upper()}-%"))
            )
        )
    if row is None:
        raise NotFound(f"no communiqué {uid!r}")
    return row


async def search(
    ctx: CheckpointContext, *, government: str | None, ircc: str | None, limit: int, offset: int
) -> list[CommuniqueRow]:
    """Communiqués by issuing government and/or cited IRCC identifier, newest first."""
    query = select(CommuniqueRow).order_by(CommuniqueRow.document_id.desc())
    if government:
        query = query.where(CommuniqueRow.government == government.lower())
    async with ctx.sessions() as session:
        rows = list(await session.scalars(query))
    if ircc:
        ident = parse_reference(ircc)[0]
        rows = [r for r in rows if ident in r.ircc_ids]
    return rows[offset : offset + limit]
