"""Pydantic models of the real ABSCH record JSON: the single source of truth for its shape.

``parse_record`` dispatches on ``header.schema`` and raises ``pydantic.ValidationError``
whose ``loc`` names each failing field (and whose ``type`` is the rule's kind);
``record_errors`` flattens it for problem+json. ``parse_record(..., draft=True)`` checks a
draft's shape only (``shared.records.drafts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from shared.records.common import (
    DRAFT,
    LANGUAGES,
    CountryTerm,
    Header,
    Link,
    LString,
    MapLocation,
    NationalRecord,
    Record,
    Reference,
    RuleErrors,
    Term,
)
from shared.records.communique import NO_IRCC_BRANCH_FIELDS, AbsCheckpointCommunique
from shared.records.directory import (
    JURISDICTION_COMMUNITY,
    JURISDICTION_NATIONAL,
    JURISDICTION_OTHER,
    JURISDICTION_SUBNATIONAL,
    AbsCheckpoint,
    Authority,
    Contact,
    FocalPoint,
)
from shared.records.drafts import draft_model
from shared.records.permit import (
    CONFIDENTIAL_GROUPS,
    KEYWORD_OTHER,
    USAGE_COMMERCIAL,
    USAGE_NON_COMMERCIAL,
    AbsPermit,
)

RECORD_MODELS: dict[str, type[Record]] = {
    model.SCHEMA: model
    for model in (AbsPermit, AbsCheckpointCommunique, AbsCheckpoint, Authority, Contact, FocalPoint)
}

ROOT_FIELD = "<record>"


def parse_record(data: Mapping[str, Any], *, draft: bool = False) -> Record:
    """Validate a record of any supported schema, chosen by ``header.schema``.

    With ``draft``, a schema that keeps drafts (``Record.DRAFTS``) is checked for shape only:
    absent fields and the publication rules wait for publication; the rest is as strict.
    """
    header = data.get("header") if isinstance(data, Mapping) else None
    schema = header.get("schema") if isinstance(header, Mapping) else None
    model = RECORD_MODELS.get(schema) if isinstance(schema, str) else None
    if model is None:
        raise _schema_error(data, schema)
    if draft and model.DRAFTS:
        return draft_model(model).model_validate(data, context={DRAFT: True})
    return model.model_validate(data)


def _schema_error(data: object, schema: object) -> ValidationError:
    errors = RuleErrors()
    if not isinstance(data, Mapping):
        errors.add((), "a record must be a JSON object", kind="record_type")
    else:
        errors.add(
            ("header", "schema"),
            f"unknown record schema {schema!r}; expected one of {', '.join(RECORD_MODELS)}",
            schema,
            kind="unknown_schema",
        )
    return errors.as_error("Record")


def record_errors(exc: ValidationError) -> list[dict[str, str]]:
    """``[{"field": "absIRCCs.0.identifier", "message": "..."}]`` from a ValidationError."""
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or ROOT_FIELD,
            "message": error["msg"],
        }
        for error in exc.errors(include_url=False)
    ]


__all__ = [
    "CONFIDENTIAL_GROUPS",
    "JURISDICTION_COMMUNITY",
    "JURISDICTION_NATIONAL",
    "JURISDICTION_OTHER",
    "JURISDICTION_SUBNATIONAL",
    "KEYWORD_OTHER",
    "LANGUAGES",
    "NO_IRCC_BRANCH_FIELDS",
    "RECORD_MODELS",
    "ROOT_FIELD",
    "USAGE_COMMERCIAL",
    "USAGE_NON_COMMERCIAL",
    "AbsCheckpoint",
    "AbsCheckpointCommunique",
    "AbsPermit",
    "Authority",
    "Contact",
    "CountryTerm",
    "FocalPoint",
    "Header",
    "LString",
    "Link",
    "MapLocation",
    "NationalRecord",
    "Record",
    "Reference",
    "Term",
    "parse_record",
    "record_errors",
]
