"""Importing files' records for the caller's government, through the batch handler.

Items are grouped per schema and saved with :func:`batch.save_many` (the checks of
``PUT`` then ``publish``, one transaction per schema), contacts first so that the IRCCs
citing the new ones come after them. A dry run checks each item as publication would
(``validation.validate``), writes nothing, and answers the status the item would get.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from services.registry.context import RegistryContext
from services.registry.domain import REGISTRY_SCHEMAS, Forbidden, PublishMode, publish_mode
from services.registry.handlers import batch, validation
from services.registry.handlers.batch import ItemOutcome, ItemStatus
from services.registry.handlers.errors import InvalidRecord
from services.registry.handlers.records import checked_draft, owner_government
from services.registry.importer.items import ImportedItem, refusal
from services.registry.importer.sheet import with_columns
from services.registry.problems import REFUSALS
from shared.auth import Principal

# Contacts before what cites them; the CNAs and checkpoints before the IRCCs naming them.
SCHEMA_ORDER = ("contact", "focalPoint", "authority", "absCheckpoint", "absPermit")


@dataclass
class ImportOutcome:
    """What became of one item (in a dry run: what would have; ``outcome`` is None)."""

    item: ImportedItem
    status: ItemStatus
    outcome: ItemOutcome | None = None
    refusal: Exception | None = None


async def import_items(
    ctx: RegistryContext,
    principal: Principal,
    items: list[ImportedItem],
    *,
    publish: bool,
    dry_run: bool = False,
    correlation_id: str | None = None,
) -> list[ImportOutcome]:
    """Save (and publish, or request) the items of the caller's government; an item of
    another government is refused (403), as is anything else the single calls refuse."""
    if principal.government is None:
        raise Forbidden("an import is for a government's users: the caller acts for none")
    outcomes = [ImportOutcome(item, "refused", refusal=item.error) for item in items]
    groups = _admitted(principal, outcomes)
    failed_contacts: set[str] = set()
    for schema in (s for s in SCHEMA_ORDER if s in groups):
        live = [i for i in groups[schema] if not _cites_failed(outcomes[i], failed_contacts)]
        bodies = [_body(items[i]) for i in live]
        if dry_run:
            results = [await _check(ctx, principal, schema, b, publish=publish) for b in bodies]
        else:
            saved = await batch.save_many(
                ctx, principal, schema, bodies, publish=publish, correlation_id=correlation_id
            )
            results = [
                ImportOutcome(items[i], o.status, o, o.refusal)
                for i, o in zip(live, saved, strict=True)
            ]
        for index, result in zip(live, results, strict=True):
            result.item = items[index]
            outcomes[index] = _settled(result, failed_contacts, publish=publish)
    return outcomes


def _settled(result: ImportOutcome, failed_contacts: set[str], *, publish: bool) -> ImportOutcome:
    """The outcome as answered: a spreadsheet row's refusal names its columns, and a new
    contact that did not end as asked is remembered, to refuse what cites it."""
    item = result.item
    row = item.schema == "absPermit" and item.position.startswith("row ")
    if row and isinstance(result.refusal, InvalidRecord):
        result.refusal = with_columns(result.refusal)
    wanted = ("published", "requested") if publish else ("draft",)
    if item.schema == "contact" and result.status not in wanted and item.identifier:
        failed_contacts.add(item.identifier)
    return result


def _admitted(principal: Principal, outcomes: list[ImportOutcome]) -> dict[str, list[int]]:
    """The indexes of the items to save, per schema; the others' outcomes say why not. A
    new contact that only refused items name is not created."""
    groups: dict[str, list[int]] = {}
    for index, outcome in enumerate(outcomes):
        if outcome.item.body is None:
            continue
        try:
            groups.setdefault(_admissible(principal, outcome.item), []).append(index)
        except REFUSALS as exc:
            outcome.refusal = exc
    cited = {c for o in outcomes for c in o.item.cites}
    wanted = {c for i in itertools.chain(*groups.values()) for c in outcomes[i].item.cites}
    contacts = groups.get("contact", [])
    for index in [i for i in contacts if outcomes[i].item.identifier in cited - wanted]:
        contacts.remove(index)
        outcomes[index].refusal = refusal(
            "contacts", "not created: every row naming this new contact was refused"
        )
    return groups


def _body(item: ImportedItem) -> dict[str, Any]:
    assert item.body is not None  # only items read as records are grouped
    return item.body


def _admissible(principal: Principal, item: ImportedItem) -> str:
    """The item's schema, when the registry keeps it and the record is the caller's."""
    if item.schema not in REGISTRY_SCHEMAS:
        raise refusal(
            "header.schema",
            f"{str(item.schema)[:60]!r} is not a schema the registry keeps "
            f"({', '.join(SCHEMA_ORDER)})",
        )
    term = _body(item).get("government")
    gov = term.get("identifier") if isinstance(term, dict) else None
    if isinstance(gov, str) and gov.lower() != principal.government:
        raise Forbidden(
            f"the record is {gov[:40]!r}'s: an import is for the caller's government "
            f"({principal.government}) only"
        )
    return item.schema


def _cites_failed(outcome: ImportOutcome, failed: set[str]) -> bool:
    """Refuse an item naming a new contact of this import that was refused."""
    missing = [c for c in outcome.item.cites if c in failed]
    if missing:
        outcome.refusal = refusal(
            "contacts", f"names new contact {missing[0]}, which was refused (see its row)"
        )
    return bool(missing)


async def _check(
    ctx: RegistryContext, principal: Principal, schema: str, body: dict[str, Any], *, publish: bool
) -> ImportOutcome:
    """A dry run's answer for one record: what saving then publishing would refuse."""
    item = ImportedItem("", "", schema, None, body=body)
    try:
        header = body.get("header")
        identifier = header.get("identifier") if isinstance(header, dict) else None
        if not isinstance(identifier, str) or not batch.IDENTIFIER.fullmatch(identifier):
            raise refusal(
                "header.identifier",
                "an identifier of 11 to 128 letters, digits, '-' or '_' is required",
            )
        checked_draft(principal, schema, identifier, body)
        if not publish:
            return ImportOutcome(item, "draft")
        found = await validation.validate(ctx, principal, schema, body)
        if found:
            return ImportOutcome(item, "draft", refusal=InvalidRecord(found))
        mode = publish_mode(principal, schema, owner_government(schema, body, principal))
    except REFUSALS as exc:
        return ImportOutcome(item, "refused", refusal=exc)
    return ImportOutcome(item, "requested" if mode is PublishMode.REQUEST else "published")
