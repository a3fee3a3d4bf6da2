"""What an import file turns into: records, one per item, each with where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.registry.handlers.errors import InvalidRecord


@dataclass
class ImportedItem:
    """One record read from a file (``body``), or why the item could not be read
    (``error``, a refusal answered as the item's problem). ``cites`` lists the contacts
    created by the same import that the record names: refused, they refuse it too."""

    file: str
    position: str  # "row 7" (spreadsheet), "index 2" (record list), "docs[3]" (Solr)
    schema: str | None
    identifier: str | None
    body: dict[str, Any] | None = None
    error: InvalidRecord | None = None
    cites: list[str] = field(default_factory=list)


def refusal(field_name: str, message: str) -> InvalidRecord:
    """A per-item 422 naming ``field_name`` (a column, or the file's part that failed)."""
    return InvalidRecord([{"field": field_name, "message": message}])


def header_of(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """``header.schema`` and ``header.identifier`` when they are text."""
    header = body.get("header")
    if not isinstance(header, dict):
        return None, None
    schema, ident = header.get("schema"), header.get("identifier")
    return (
        schema if isinstance(schema, str) else None,
        ident if isinstance(ident, str) else None,
    )
