"""Checkpoint rules without I/O: who may submit, what a communiqué must cite."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.auth import Principal, Role
from shared.records import AbsCheckpointCommunique
from shared.records.common import is_missing

CPC_SCHEMA = "absCheckpointCommunique"
SUBMITTER_ROLES = frozenset({Role.CHECKPOINT, Role.PA, Role.NAU})


class Forbidden(Exception):
    """The caller may not submit for this government or checkpoint."""


def check_may_submit_at_all(principal: Principal) -> None:
    """Refuse roles that never submit before looking at the body (no validation oracle)."""
    if principal.role not in SUBMITTER_ROLES or principal.government is None:
        raise Forbidden(f"role {principal.role.value} cannot submit communiqués")


def check_can_submit(principal: Principal, government: str, checkpoints: list[str]) -> None:
    """Operators of a cited checkpoint, or the PA/NAU of the CPC's government."""
    if principal.role is Role.CHECKPOINT:
        if principal.government != government:
            raise Forbidden("checkpoint operators submit for their own government only")
        if principal.checkpoint not in checkpoints:
            raise Forbidden("the communiqué must cite your checkpoint")
        return
    if principal.role in {Role.PA, Role.NAU} and principal.government == government:
        return
    raise Forbidden(f"role {principal.role.value} cannot submit communiqués for {government}")


def body_hash(body: dict[str, Any]) -> str:
    """Stable digest of a JSON body (key order does not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def for_publication(record: dict[str, Any]) -> dict[str, Any]:
    """Editors' private notes never leave the service."""
    return {k: v for k, v in record.items() if k != "notes"}


def submission_warnings(record: AbsCheckpointCommunique) -> list[dict[str, str]]:
    """What is accepted as sent but worth the submitter's look, as ``{"field", "message"}``."""
    warnings = [
        {
            "field": field,
            "message": "belongs to a communiqué without IRCC; kept as sent although absIRCCs "
            "are cited (the ABSCH web form would remove it)",
        }
        for field in record.mixed_branch_fields()
    ]
    if record.own_country_in_sources():
        warnings.append({"field": "sourceCountries", "message": "includes the issuing government"})
    return warnings


def _missing(value: object) -> bool:
    """Absent or empty; an lstring counts only its text values (raw bodies may hold junk)."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if isinstance(v, str)}
    return is_missing(value)


def branch_errors(body: dict[str, Any]) -> list[dict[str, str]]:
    """The [K1] conditional requirements, checked on the raw body.

    The record model checks them only once every field is valid; this lets one 422 name
    each failing field even when some fields also fail on their own.
    """
    errors: list[dict[str, str]] = []

    def require(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    start, end = body.get("dateCollectedFrom"), body.get("dateCollectedTo")
    if _missing(body.get("dateCollected")) and (_missing(start) or _missing(end)):
        if _missing(start) and _missing(end):
            require(
                "dateCollected", "dateCollected or dateCollectedFrom + dateCollectedTo is required"
            )
        else:
            missing = "dateCollectedTo" if _missing(end) else "dateCollectedFrom"
            require(missing, "is required for a collection period (or give dateCollected)")
    if body.get("absIRCCsNotAvailable") is True:
        if not _missing(body.get("absIRCCs")):
            require("absIRCCs", "must be empty when absIRCCsNotAvailable is true")
        for field in ("sourceCountries", "subjectMatter"):
            if _missing(body.get(field)):
                require(field, "is required when absIRCCsNotAvailable is true")
    elif _missing(body.get("absIRCCs")):
        require("absIRCCs", "is required unless absIRCCsNotAvailable is true")
    return errors


def changed_fields(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the fields whose values differ between two revisions, sorted; ``header``
    is compared part by part (``header.languages``), since its identifier never changes."""
    changed: set[str] = set()
    for name in previous.keys() | current.keys():
        old, new = previous.get(name), current.get(name)
        if name == "header" and isinstance(old, dict) and isinstance(new, dict):
            changed |= {f"header.{k}" for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        elif old != new:
            changed.add(name)
    return sorted(changed)
