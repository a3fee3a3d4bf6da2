"""What publication checks, as one list of issues: a publish (or an NAU's request) is
refused with it, and ``POST /v1/records/{schema}/validate`` answers it the ABSCH way.

A draft is saved when its shape holds (``shared.records.drafts``); everything else waits
for publication, as in the real clearing-house: the government, the amendment rules
[P6, P7], the record's mandatory fields and rules, and references to published records
of the same government.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.adapters.tables import RecordRow
from services.registry.codes import (
    INVALID_VALUE,
    Issue,
    code_for,
    government_issue,
    issue,
    record_issues,
    unique,
)
from services.registry.context import RegistryContext
from services.registry.domain import (
    IRCC_SCHEMA,
    check_can_edit,
    check_edit_role,
    prepare_publication,
    publication_violations,
)
from shared.auth import Principal
from shared.records import RECORD_MODELS, ROOT_FIELD
from shared.uid import BadReference, parse_reference


async def reference_issues(
    session: AsyncSession, body: Mapping[str, Any], government: str | None
) -> list[Issue]:
    """``absCNA`` and ``relatedIRCCs`` name published records of the same government
    [P11, DOMAIN §2]. Malformed references are left to the record's own rules."""
    header = body.get("header")
    own = header.get("identifier") if isinstance(header, Mapping) else None
    refs: list[tuple[str, str, str]] = []
    cna = body.get("absCNA")
    if isinstance(cna, Mapping) and isinstance(cna.get("identifier"), str):
        refs.append(("absCNA", cna["identifier"], "authority"))
    related = body.get("relatedIRCCs")
    for i, ref in enumerate(related if isinstance(related, list) else []):
        if isinstance(ref, Mapping) and isinstance(ref.get("identifier"), str):
            refs.append((f"relatedIRCCs.{i}", ref["identifier"], IRCC_SCHEMA))
    found: list[Issue] = []
    for field, ref_id, schema in refs:
        try:
            ident, _rev = parse_reference(ref_id)
        except BadReference:
            continue
        if ident == own and schema == IRCC_SCHEMA:
            continue  # the IRCC's own rule names it ("cannot be related to itself")
        target = await session.scalar(select(RecordRow).where(RecordRow.identifier == ident))
        if target is None or target.schema_name != schema:
            found.append(issue(field, f"no {schema} record {ident!r}", INVALID_VALUE))
        elif target.government != government:
            found.append(issue(field, "must be a record of the same government", INVALID_VALUE))
        elif target.latest_revision == 0:
            found.append(issue(field, f"{schema} {ident!r} is not published", INVALID_VALUE))
    return found


async def publication_issues(
    session: AsyncSession,
    schema: str,
    body: Mapping[str, Any],
    *,
    government: str | None,
    latest_revision: int,
) -> list[Issue]:
    """Every issue that keeps ``body`` (a draft, any JSON) from becoming the next revision
    of a record of ``government`` now at ``latest_revision``; empty when it may."""
    found: list[Issue] = []
    own_government = government_issue(schema, body)
    if own_government is not None:
        found.append(own_government)
    for rule in publication_violations(body, schema=schema, latest_revision=latest_revision):
        found.append(issue(rule.field or ROOT_FIELD, str(rule), code_for(rule.kind)))
    prepared = prepare_publication(
        dict(body), schema=schema, latest_revision=latest_revision, revoked=False
    )
    try:
        # The URL's model, whatever header.schema says (a mismatch is named there).
        RECORD_MODELS[schema].model_validate(prepared)
    except ValidationError as exc:
        found += record_issues(exc)
    found += await reference_issues(session, body, government)
    return unique(found)


async def validate(
    ctx: RegistryContext, principal: Principal, schema: str, body: dict[str, Any]
) -> list[Issue]:
    """The ABSCH validation report of ``body`` as a record of ``schema``: what publishing
    it would refuse (``[]`` when nothing). Nothing is stored.

    The caller must be able to edit such a record (403 otherwise); a record of another
    government is 403, one without a government it could own is reported, not refused.
    """
    if government_issue(schema, body) is not None:
        check_edit_role(principal, schema)
        government = None
    else:
        term = body.get("government")
        code = term.get("identifier") if isinstance(term, Mapping) else None
        government = code.lower() if isinstance(code, str) else principal.government
        check_can_edit(principal, schema, government)
    header = body.get("header")
    identifier = header.get("identifier") if isinstance(header, Mapping) else None
    async with ctx.sessions() as session:
        latest = 0
        if isinstance(identifier, str):
            row = await session.scalar(select(RecordRow).where(RecordRow.identifier == identifier))
            # An update of its own published record needs a reason [P6]; another's is not ours.
            if row is not None and (row.schema_name, row.government) == (schema, government):
                latest = row.latest_revision
        return await publication_issues(
            session, schema, body, government=government, latest_revision=latest
        )
