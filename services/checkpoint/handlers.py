"""Checkpoint use cases: accept and publish communiqués (cited checkpoints come from the
kit's directory view)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import String, Table, bindparam, cast, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.checkpoint.adapters.tables import (
    CommuniqueRow,
    IdempotencyRow,
    OutboxRow,
)
from services.checkpoint.context import CheckpointContext
from services.checkpoint.domain import (
    CPC_SCHEMA,
    Forbidden,
    body_hash,
    branch_errors,
    check_can_submit,
    check_may_submit_at_all,
    for_publication,
    submission_warnings,
)
from shared.auth import Principal
from shared.events import CloudEvent, Topic, new_event
from shared.events.models import CpcPublished
from shared.kit.directory import DirectoryView
from shared.kit.outbox import outbox_values, stage_many
from shared.records import AbsCheckpointCommunique, parse_record, record_errors
from shared.uid import BadReference, format_uid, parse_reference


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
    warnings: list[dict[str, str]] = field(default_factory=list)  # {"field", "message"}


def _validate(body: dict[str, Any]) -> AbsCheckpointCommunique:
    header = body.get("header")
    if not isinstance(header, dict) or header.get("schema") != CPC_SCHEMA:
        raise InvalidCommunique([{"field": "header.schema", "message": f"must be {CPC_SCHEMA}"}])
    try:
        record = parse_record(body)
    except ValidationError as exc:
        errors = record_errors(exc)
        named = {e["field"] for e in errors}
        errors += [e for e in branch_errors(body) if e["field"] not in named]
        raise InvalidCommunique(errors) from None
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


def _check_cited(directory: DirectoryView, gov: str, cited: list[str]) -> None:
    """Every cited checkpoint must be a published checkpoint of the CPC's government."""
    errors = []
    for i, ident in enumerate(cited):
        cp = directory.get(ident)
        if cp is None or not cp.published or cp.schema != "absCheckpoint" or cp.government != gov:
            errors.append(
                {
                    "field": f"absCheckpoints.{i}.identifier",
                    "message": f"not a published checkpoint of {gov}",
                }
            )
    if errors:
        raise InvalidCommunique(errors)


@dataclass(frozen=True)
class _Submission:
    """A validated communiqué on its way to the database and the outbox."""

    principal: Principal
    record: dict[str, Any]
    government: str
    checkpoints: list[str]
    digest: str
    idempotency_key: str | None
    correlation_id: str | None


def _published_event(sub: _Submission, uid: str, document_id: int) -> CloudEvent[Any]:
    data = CpcPublished(
        uid=uid,
        identifier=sub.record["header"]["identifier"],
        document_id=document_id,
        revision=1,
        government=sub.government,
        checkpoints=sub.checkpoints,
        submitted_by=sub.principal.id,
        record=sub.record,
    )
    return new_event(
        "cpc.published",
        source="checkpoint",
        subject=uid,
        data=data,
        correlation_id=sub.correlation_id,
    )


_COMMUNIQUES: Table = CommuniqueRow.__table__  # type: ignore[assignment]
_KEYS: Table = IdempotencyRow.__table__  # type: ignore[assignment]
# Built once: building a statement costs more than running it.
_INSERT_COMMUNIQUE = insert(_COMMUNIQUES).returning(_COMMUNIQUES.c.document_id)
_SET_UID = (
    update(_COMMUNIQUES)
    .where(_COMMUNIQUES.c.document_id == bindparam("b_document_id"))
    .values(uid=bindparam("uid"))
)
_INSERT_KEY = insert(_KEYS)


async def _store(ctx: CheckpointContext, sub: _Submission) -> str:
    """Insert the communiqué, its ``cpc.published`` event and the idempotency key at once
    (Core statements: no unit of work to flush for one request's three rows).

    Raises ``IntegrityError`` when the identifier or the key was taken meanwhile.
    """
    async with ctx.sessions() as session:
        _check_cited(ctx.directory, sub.government, sub.checkpoints)
        now = ctx.clock()
        inserted = await session.execute(
            _INSERT_COMMUNIQUE,
            {
                "identifier": sub.record["header"]["identifier"],
                "government": sub.government,
                "revision": 1,
                "uid": "",  # the documentID it is made of is assigned by this insert
                "body": sub.record,
                "submitted_by": sub.principal.id,
                "ircc_ids": [
                    parse_reference(r["identifier"])[0] for r in sub.record.get("absIRCCs") or []
                ],
                "created_at": now,
            },
        )
        document_id = int(inserted.scalar_one())
        uid = format_uid(CPC_SCHEMA, sub.government, document_id, 1)
        await session.execute(_SET_UID, {"b_document_id": document_id, "uid": uid})
        key = format_uid(CPC_SCHEMA, sub.government, document_id)
        topic = ctx.topic(Topic.CPC)
        event = _published_event(sub, uid, document_id)
        await stage_many(session, OutboxRow, [outbox_values(topic, event, key=key)])
        if sub.idempotency_key:
            await session.execute(
                _INSERT_KEY,
                {
                    "principal": sub.principal.id,
                    "key": sub.idempotency_key,
                    "body_hash": sub.digest,
                    "uid": uid,
                    "created_at": now,
                },
            )
        await session.commit()
        return uid


async def submit(
    ctx: CheckpointContext,
    principal: Principal,
    body: dict[str, Any],
    *,
    idempotency_key: str | None,
    correlation_id: str | None = None,
) -> Submitted:
    """Validate, assign the UID and publish ``cpc.published`` through the outbox.

    Raises ``Forbidden``, ``InvalidCommunique`` (422) or ``Conflict`` (409).
    """
    try:
        return await _submit(
            ctx, principal, body, idempotency_key=idempotency_key, correlation_id=correlation_id
        )
    except Forbidden:
        ctx.metrics.rejected.labels("forbidden").inc()
        raise
    except InvalidCommunique:
        ctx.metrics.rejected.labels("invalid").inc()
        raise
    except Conflict:
        ctx.metrics.rejected.labels("conflict").inc()
        raise


async def _submit(
    ctx: CheckpointContext,
    principal: Principal,
    body: dict[str, Any],
    *,
    idempotency_key: str | None,
    correlation_id: str | None,
) -> Submitted:
    check_may_submit_at_all(principal)
    digest = body_hash(body)
    if idempotency_key and (done := await _replay(ctx, principal, idempotency_key, digest)):
        return done
    record = _validate(body)
    stored = for_publication(record.dump())
    gov = str(record.government_code())
    cited = [parse_reference(r["identifier"])[0] for r in stored.get("absCheckpoints", [])]
    check_can_submit(principal, gov, cited)
    sub = _Submission(principal, stored, gov, cited, digest, idempotency_key, correlation_id)
    try:
        uid = await _store(ctx, sub)
    except IntegrityError:  # the same key raced us (answer as the winner did), or the identifier
        if idempotency_key and (done := await _replay(ctx, principal, idempotency_key, digest)):
            return done
        raise Conflict(
            "a communiqué with this header.identifier exists: amend it with "
            "POST /v1/communiques/{uid}/amend"
        ) from None
    ctx.relay.wake()
    ctx.metrics.submitted.inc()
    return Submitted(uid, warnings=submission_warnings(record))


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(
    ctx: CheckpointContext, *, government: str | None, ircc: str | None, limit: int, offset: int
) -> list[CommuniqueRow]:
    """Communiqués by issuing government and/or cited IRCC identifier, newest first."""
    query = select(CommuniqueRow).order_by(CommuniqueRow.document_id.desc())
    if government:
        query = query.where(CommuniqueRow.government == government.lower())
    if ircc:
        try:
            ident = parse_reference(ircc.strip())[0]
        except BadReference as exc:
            raise InvalidCommunique([{"field": "ircc", "message": str(exc)}]) from None
        # ircc_ids is a JSON list of identifiers, which never hold quotes: match the
        # quoted identifier in its text so that paging stays in SQL.
        quoted = _like_prefix(json.dumps(ident))
        query = query.where(cast(CommuniqueRow.ircc_ids, String).like(f"%{quoted}%", escape="\\"))
    async with ctx.sessions() as session:
        return list(await session.scalars(query.limit(limit).offset(offset)))
