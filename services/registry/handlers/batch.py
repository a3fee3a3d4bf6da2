"""Saving, and publishing, many records of one schema in one transaction.

Each item goes through the same checks as ``PUT`` then ``POST .../publish``; an item that
is refused writes nothing and the others go on. What passed commits together, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from services.registry.adapters.tables import RecordRow
from services.registry.codes import INVALID_VALUE, issue
from services.registry.context import RegistryContext
from services.registry.handlers.errors import InvalidRecord
from services.registry.handlers.records import (
    PublishOutcome,
    checked_draft,
    stage_draft,
    stage_publication,
)
from services.registry.problems import REFUSALS
from shared.auth import Principal

# The identifiers the record routes accept in their path.
IDENTIFIER = re.compile(r"[A-Za-z0-9_-]{11,128}")

ItemStatus = Literal["draft", "published", "requested", "refused"]


@dataclass
class ItemOutcome:
    """What became of one item: ``refusal`` says why it was refused, or why its draft was
    saved but not published."""

    index: int
    identifier: str | None
    status: ItemStatus
    document_id: int | None = None
    published: PublishOutcome | None = None
    refusal: Exception | None = None


def _identifier(body: dict[str, Any], seen: set[str]) -> str:
    header = body.get("header")
    ident = header.get("identifier") if isinstance(header, dict) else None
    if not isinstance(ident, str) or not IDENTIFIER.fullmatch(ident):
        raise InvalidRecord(
            [
                issue(
                    "header.identifier",
                    "an identifier of 11 to 128 letters, digits, '-' or '_' is required",
                    INVALID_VALUE,
                )
            ]
        )
    if ident in seen:
        raise InvalidRecord(
            [issue("header.identifier", "appears more than once in this batch", INVALID_VALUE)]
        )
    seen.add(ident)
    return ident


async def save_many(
    ctx: RegistryContext,
    principal: Principal,
    schema: str,
    bodies: list[dict[str, Any]],
    *,
    publish: bool,
    correlation_id: str | None = None,
) -> list[ItemOutcome]:
    """Save each body as a draft and, with ``publish``, publish it (or open its request)."""
    outcomes: list[ItemOutcome] = []
    checked: list[tuple[ItemOutcome, str | None, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, body in enumerate(bodies):
        outcome = ItemOutcome(index, None, "refused")
        outcomes.append(outcome)
        try:
            outcome.identifier = _identifier(body, seen)
            gov, stored = checked_draft(principal, schema, outcome.identifier, body)
        except REFUSALS as exc:
            outcome.refusal = exc
            continue
        checked.append((outcome, gov, stored))
    async with ctx.sessions() as session:
        for outcome, gov, stored in checked:
            assert outcome.identifier is not None
            try:
                row: RecordRow = await stage_draft(
                    ctx, session, principal, schema, outcome.identifier, gov, stored
                )
            except REFUSALS as exc:
                outcome.refusal = exc
                continue
            await session.flush()  # a new record's documentID, for its UID
            outcome.status, outcome.document_id = "draft", row.document_id
            if not publish:
                continue
            try:
                out = await stage_publication(
                    ctx, session, principal, row, correlation_id=correlation_id
                )
            except REFUSALS as exc:
                outcome.refusal = exc  # the draft stays, as after a refused publish call
                continue
            outcome.published = out
            outcome.status = "requested" if out.request_id is not None else "published"
        await session.commit()
    drafts = sum(o.status != "refused" for o in outcomes)
    if drafts:
        ctx.metrics.drafts_saved.labels(schema).inc(drafts)
    if any(o.status == "published" for o in outcomes):
        ctx.relay.wake()
    return outcomes
