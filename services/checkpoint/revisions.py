"""Revisions of a published communiqué: amend one with a reason, read any revision.

An amendment creates revision n+1 of the same document (UID
``ABSCH-CPC-<GOV>-<documentID>-<n+1>``): ``communiques`` holds the latest revision,
``communique_revisions`` every revision of an amended communiqué, so the older ones stay
readable, marked archived. The new revision, its ``cpc.amended`` event (through the outbox)
and the Idempotency-Key commit in one transaction, as a submission does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.checkpoint.adapters.tables import (
    CommuniqueRevisionRow,
    CommuniqueRow,
    IdempotencyRow,
    OutboxRow,
)
from services.checkpoint.context import CheckpointContext
from services.checkpoint.domain import (
    CPC_SCHEMA,
    Forbidden,
    body_hash,
    changed_fields,
    check_can_submit,
    check_may_submit_at_all,
    for_publication,
    submission_warnings,
)
from services.checkpoint.handlers import (
    Conflict,
    InvalidCommunique,
    NotFound,
    Submitted,
    _check_cited,
    _replay,
    _validate,
)
from shared.auth import Principal
from shared.events import CloudEvent, Topic, new_event
from shared.events.models import CpcAmended
from shared.kit.outbox import stage
from shared.records import AbsCheckpointCommunique
from shared.uid import UidError, format_uid, parse_reference, parse_uid

Status = Literal["current", "archived"]


@dataclass(frozen=True)
class Revision:
    """One revision of a communiqué, with what the latest one is."""

    uid: str
    identifier: str
    government: str
    document_id: int
    revision: int
    latest_revision: int
    submitted_by: str
    created_at: datetime
    reason: dict[str, str] | None
    body: dict[str, Any]

    @property
    def status(self) -> Status:
        """``current`` for the latest revision; an older one is ``archived``."""
        return "current" if self.revision == self.latest_revision else "archived"

    @property
    def latest_uid(self) -> str:
        """UID of the latest revision."""
        return format_uid(CPC_SCHEMA, self.government, self.document_id, self.latest_revision)


def _latest(row: CommuniqueRow, reason: dict[str, str] | None) -> Revision:
    return Revision(
        uid=row.uid,
        identifier=row.identifier,
        government=row.government,
        document_id=row.document_id,
        revision=row.revision,
        latest_revision=row.revision,
        submitted_by=row.submitted_by,
        created_at=row.created_at,
        reason=reason,
        body=row.body,
    )


def _archived(head: CommuniqueRow, old: CommuniqueRevisionRow) -> Revision:
    return Revision(
        uid=old.uid,
        identifier=head.identifier,
        government=head.government,
        document_id=head.document_id,
        revision=old.revision,
        latest_revision=head.revision,
        submitted_by=old.submitted_by,
        created_at=old.created_at,
        reason=old.reason,
        body=old.body,
    )


async def _find(session: AsyncSession, wanted: str) -> tuple[CommuniqueRow | None, int | None]:
    """The communiqué a UID (with or without revision) or header.identifier names, and the
    revision the UID names (None: the latest)."""
    text = wanted.strip()
    try:
        uid = parse_uid(text)
    except UidError:
        uid = None
    if uid is not None:
        head = await session.get(CommuniqueRow, uid.document_id)
        # The whole revision-less UID must match: never another government's document.
        if head is not None and head.uid.rsplit("-", 1)[0] == str(uid.without_revision()):
            return head, uid.revision
    head = await session.scalar(select(CommuniqueRow).where(CommuniqueRow.identifier == text))
    return head, None


async def read(ctx: CheckpointContext, wanted: str) -> Revision:
    """A revision by UID (a revision-less UID or the header.identifier: the latest)."""
    async with ctx.sessions() as session:
        head, number = await _find(session, wanted)
        if head is None:
            raise NotFound(f"no communiqué {wanted!r}")
        if number is None or number == head.revision:
            return (await with_reasons(session, [head]))[0]
        # Compared first: a revision past the latest (or past what the column holds) is none.
        old = None
        if number < head.revision:
            old = await session.get(CommuniqueRevisionRow, (head.document_id, number))
        if old is None:
            raise NotFound(f"no communiqué {wanted!r}")
        return _archived(head, old)


async def with_reasons(session: AsyncSession, heads: list[CommuniqueRow]) -> list[Revision]:
    """Latest revisions with their amendment reasons (one query for the amended ones)."""
    amended = [(h.document_id, h.revision) for h in heads if h.revision > 1]
    reasons: dict[tuple[int, int], dict[str, str] | None] = {}
    if amended:
        rows = await session.execute(
            select(
                CommuniqueRevisionRow.document_id,
                CommuniqueRevisionRow.revision,
                CommuniqueRevisionRow.reason,
            ).where(CommuniqueRevisionRow.document_id.in_([doc for doc, _ in amended]))
        )
        reasons = {(doc, rev): reason for doc, rev, reason in rows}
    return [_latest(h, reasons.get((h.document_id, h.revision))) for h in heads]


async def current(ctx: CheckpointContext, heads: list[CommuniqueRow]) -> list[Revision]:
    """:func:`with_reasons` in a session of its own."""
    async with ctx.sessions() as session:
        return await with_reasons(session, heads)


@dataclass(frozen=True)
class _Amendment:
    """A validated amendment on its way to the database and the outbox."""

    principal: Principal
    head: CommuniqueRow  # the revision amended, as read before the transaction
    record: dict[str, Any]
    checkpoints: list[str]
    reason: dict[str, str]
    changed: list[str]
    digest: str
    idempotency_key: str | None
    correlation_id: str | None


def _amended_event(a: _Amendment, uid: str, revision: int) -> CloudEvent[Any]:
    data = CpcAmended(
        uid=uid,
        identifier=a.head.identifier,
        document_id=a.head.document_id,
        revision=revision,
        government=a.head.government,
        checkpoints=a.checkpoints,
        submitted_by=a.principal.id,
        record=a.record,
        reason=a.reason,
        previous_uid=a.head.uid,
        changed=a.changed,
    )
    return new_event(
        "cpc.amended", source="checkpoint", subject=uid, data=data, correlation_id=a.correlation_id
    )


async def _store(ctx: CheckpointContext, a: _Amendment) -> str:
    """Write revision n+1, archive revision n, stage ``cpc.amended`` and keep the key.

    Raises ``Conflict`` when another amendment got there first, ``IntegrityError`` when the
    Idempotency-Key was taken meanwhile.
    """
    head = a.head
    revision = head.revision + 1
    uid = format_uid(CPC_SCHEMA, head.government, head.document_id, revision)
    now = ctx.clock()
    async with ctx.sessions() as session:
        # First statement, a conditional write: it takes the row's lock (SQLite: the
        # database's) and changes nothing when the revision read is no longer the latest.
        moved = await session.execute(
            update(CommuniqueRow)
            .where(
                CommuniqueRow.document_id == head.document_id,
                CommuniqueRow.revision == head.revision,
            )
            .values(
                revision=revision,
                uid=uid,
                body=a.record,
                ircc_ids=_references(a.record, "absIRCCs"),
                submitted_by=a.principal.id,
                created_at=now,
            )
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"{head.uid} was amended meanwhile: read the communiqué again")
        if await session.get(CommuniqueRevisionRow, (head.document_id, head.revision)) is None:
            session.add(  # revision 1 of a communiqué amended for the first time
                CommuniqueRevisionRow(
                    document_id=head.document_id,
                    revision=head.revision,
                    uid=head.uid,
                    body=head.body,
                    submitted_by=head.submitted_by,
                    created_at=head.created_at,
                    reason=None,
                )
            )
        session.add(
            CommuniqueRevisionRow(
                document_id=head.document_id,
                revision=revision,
                uid=uid,
                body=a.record,
                submitted_by=a.principal.id,
                created_at=now,
                reason=a.reason,
            )
        )
        key = format_uid(CPC_SCHEMA, head.government, head.document_id)
        stage(session, OutboxRow, ctx.topic(Topic.CPC), _amended_event(a, uid, revision), key=key)
        if a.idempotency_key:
            session.add(
                IdempotencyRow(
                    principal=a.principal.id,
                    key=a.idempotency_key,
                    body_hash=a.digest,
                    uid=uid,
                    created_at=now,
                )
            )
        await session.commit()
    return uid


async def amend(
    ctx: CheckpointContext,
    principal: Principal,
    target: str,
    body: dict[str, Any],
    reason: dict[str, str],
    *,
    idempotency_key: str | None,
    correlation_id: str | None = None,
) -> Submitted:
    """Publish ``body`` as the next revision of the communiqué ``target`` names, with a
    reason; ``cpc.amended`` goes out through the outbox.

    Raises ``Forbidden``, ``NotFound``, ``InvalidCommunique`` (422) or ``Conflict`` (409:
    ``target`` names an older revision, another amendment came first, or the
    Idempotency-Key was used with another body).
    """
    try:
        return await _amend(
            ctx,
            principal,
            target,
            body,
            reason,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
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


async def _amend(
    ctx: CheckpointContext,
    principal: Principal,
    target: str,
    body: dict[str, Any],
    reason: dict[str, str],
    *,
    idempotency_key: str | None,
    correlation_id: str | None,
) -> Submitted:
    check_may_submit_at_all(principal)
    # The key covers what is amended too: the same body sent to another communiqué is
    # another request.
    digest = body_hash({"amend": target.strip(), "record": body, "reason": reason})
    if idempotency_key and (done := await _replay(ctx, principal, idempotency_key, digest)):
        return done
    async with ctx.sessions() as session:
        head, named = await _find(session, target)
    if head is None:
        raise NotFound(f"no communiqué {target!r}")
    # Whoever may submit for the published revision (before its body is looked at).
    check_can_submit(principal, head.government, _checkpoints(head.body))
    if named is not None and named != head.revision:
        raise Conflict(f"{target} is not the latest revision ({head.uid}): amend that one")
    try:
        record, stored = _next_revision(ctx, principal, head, body)
    except InvalidCommunique as exc:  # the record is the body's ``record``: name it so
        raise InvalidCommunique(
            [{**e, "field": f"record.{e['field']}"} for e in exc.errors]
        ) from None
    changed = changed_fields(head.body, stored)
    if not changed:
        message = f"is the same as {head.uid}: nothing to amend"
        raise InvalidCommunique([{"field": "record", "message": message}])
    amendment = _Amendment(
        principal,
        head,
        stored,
        _checkpoints(stored),
        reason,
        changed,
        digest,
        idempotency_key,
        correlation_id,
    )
    try:
        uid = await _store(ctx, amendment)
    except IntegrityError:  # the same key raced us: answer as the winner did
        if idempotency_key and (done := await _replay(ctx, principal, idempotency_key, digest)):
            return done
        raise Conflict(f"{head.uid} was amended meanwhile: read the communiqué again") from None
    ctx.relay.wake()
    ctx.metrics.amended.inc()
    return Submitted(uid, warnings=submission_warnings(record))


def _next_revision(
    ctx: CheckpointContext, principal: Principal, head: CommuniqueRow, body: dict[str, Any]
) -> tuple[AbsCheckpointCommunique, dict[str, Any]]:
    """The validated record and what is stored of it; its identity is the communiqué's."""
    record = _validate(body)
    stored = for_publication(record.dump())
    errors = []
    if stored["header"]["identifier"] != head.identifier:
        errors.append({"field": "header.identifier", "message": f"must stay {head.identifier}"})
    if str(record.government_code()) != head.government:
        errors.append({"field": "government", "message": f"must stay {head.government}"})
    if errors:
        raise InvalidCommunique(errors)
    cited = _checkpoints(stored)
    check_can_submit(principal, head.government, cited)
    _check_cited(ctx.directory, head.government, cited)
    return record, stored


def _references(record: dict[str, Any], field: str) -> list[str]:
    """Identifiers (without ``@rev``) a record's reference list names."""
    return [parse_reference(r["identifier"])[0] for r in record.get(field) or []]


def _checkpoints(record: dict[str, Any]) -> list[str]:
    return _references(record, "absCheckpoints")
