"""Builders of valid ABSCH records with random identifiers."""

from __future__ import annotations

import uuid
from typing import Any

COMMERCIAL = "5E833A3F-87D1-4ADD-8701-9F1B76383017"
NON_COMMERCIAL = "60EA2F49-A9DD-406F-921A-8A1C9AA8DFDD"


def new_id(prefix: str = "T") -> str:
    """A fresh header.identifier."""
    return f"{prefix}-{uuid.uuid4().hex.upper()}"


def header(
    schema: str, identifier: str | None = None, languages: list[str] | None = None
) -> dict[str, Any]:
    """A record header."""
    return {
        "identifier": identifier or new_id(),
        "schema": schema,
        "languages": languages or ["en"],
    }


def authority(
    gov: str, emails: list[str], *, languages: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A competent national authority."""
    return {
        "header": header("authority", languages=languages),
        "government": {"identifier": gov},
        "name": {"en": f"CNA of {gov}"},
        "city": {"en": "Capital"},
        "country": {"identifier": gov},
        "phones": ["+1 555 0100"],
        "emails": emails,
        "responsibleForAll": True,
        **extra,
    }


def focal_point(gov: str, emails: list[str], **extra: Any) -> dict[str, Any]:
    """An ABS national focal point."""
    return {
        "header": header("focalPoint"),
        "government": {"identifier": gov},
        "firstName": "Nadia",
        "lastName": "Focal",
        "type": ["ABS-FP"],
        "emails": emails,
        **extra,
    }


def contact(emails: list[str], *, gov: str | None = None, **extra: Any) -> dict[str, Any]:
    """An organisation contact."""
    body: dict[str, Any] = {
        "header": header("contact"),
        "type": "organization",
        "organization": {"en": "BioLab"},
        "country": {"identifier": "de"},
        "emails": emails,
        **extra,
    }
    if gov:
        body["government"] = {"identifier": gov}
    return body


def checkpoint(
    gov: str, *, inform_all: bool = False, contacts: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A checkpoint."""
    return {
        "header": header("absCheckpoint"),
        "government": {"identifier": gov},
        "name": {"en": f"Checkpoint of {gov}"},
        "informAllAuthorities": inform_all,
        "contactsToInform": [{"identifier": c} for c in contacts or []],
        **extra,
    }


def permit(
    gov: str,
    cna: str,
    *,
    providers: list[str] | None = None,
    pic_holders: list[str] | None = None,
    usages: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An IRCC (absPermit) with every mandatory field."""
    body: dict[str, Any] = {
        "header": header("absPermit"),
        "government": {"identifier": gov},
        "absCNA": {"identifier": cna},
        "title": {"en": f"Permit {uuid.uuid4().hex[:6]}"},
        "dateOfIssuance": "2025-01-15",
        "picGranted": True,
        "matEstablished": True,
        "subjectMatter": {"en": "Soil bacteria from the highlands"},
        "usages": [{"identifier": u} for u in usages or [NON_COMMERCIAL]],
    }
    if providers is not None:
        body["providers"] = [{"identifier": p} for p in providers]
    else:
        body["providersConfidential"] = True
    if pic_holders is not None:
        body["entitiesToWhomPICGranted"] = [{"identifier": p} for p in pic_holders]
    else:
        body["entitiesToWhomPICGrantedConfidential"] = True
    body.update(extra)
    return body
