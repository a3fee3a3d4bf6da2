"""Import of what national systems already hold: files turned into registry records, one
item per record with its source position (``python -m services.registry.importer``, and
``POST /v1/import``, which saves them through the batch handler)."""

from __future__ import annotations

import itertools
import json

from services.registry.importer.absch import items_of_json
from services.registry.importer.items import ImportedItem, refusal
from services.registry.importer.sheet import csv_rows, xlsx_rows
from services.registry.importer.spreadsheet import items_of_rows

FORMATS = (".json", ".csv", ".xlsx")
# Rows or records per file: a file past it is refused whole, before anything is saved.
MAX_ITEMS = 10_000

__all__ = ["FORMATS", "MAX_ITEMS", "ImportedItem", "read_file"]


def read_file(name: str, data: bytes, *, government: str | None) -> list[ImportedItem]:
    """The items of one file, by its extension: ``.json`` (a documents-API record, a list
    of them, or a Solr search response), ``.csv`` or ``.xlsx`` (the IRCC bulk-upload
    spreadsheet; ``government`` stands in for an empty column B). A file that cannot be
    read at all is one refused item at position ``file``."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    try:
        if suffix == ".json":
            items = items_of_json(name, json.loads(data))
        elif suffix in (".csv", ".xlsx"):
            rows = csv_rows(data) if suffix == ".csv" else xlsx_rows(data)
            items = items_of_rows(name, itertools.islice(rows, MAX_ITEMS + 1), government)
        else:
            return [_unreadable(name, f"is not one of {', '.join(FORMATS)}")]
    # An uploaded file is untrusted: whatever its reader raises, the file is refused alone.
    except Exception as exc:
        return [_unreadable(name, f"cannot be read as {suffix[1:]}: {type(exc).__name__}: {exc}")]
    if sum(i.schema == "absPermit" or suffix == ".json" for i in items) > MAX_ITEMS:
        return [_unreadable(name, f"holds more than {MAX_ITEMS} records: split it")]
    return items


def _unreadable(name: str, message: str) -> ImportedItem:
    return ImportedItem(name, "file", None, None, error=refusal("file", message[:500]))
