"""Cells of the official IRCC bulk-upload spreadsheet (columns A-AG, sample 14), read
from ``.xlsx`` (first sheet) or ``.csv`` (UTF-8): rows of text by column letter, and the
readers of typed cells, which name the column they refuse.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from openpyxl import load_workbook

from services.registry.handlers.errors import InvalidRecord
from shared.records.countries import is_known_government

# Column letter -> what it holds (sample 14's map, shortened for messages).
COLUMNS = {
    "A": "language",
    "B": "country",
    "C": "absCNAId",
    "D": "permitEquivalent",
    "E": "dateOfIssuance",
    "F": "dateOfExpiry",
    "G": "provider.type",
    "H": "provider.existing",
    "I": "provider.orgName",
    "J": "provider.acronym",
    "K": "provider.address",
    "L": "provider.city",
    "M": "provider.country",
    "N": "provider.email",
    "O": "pic.consent",
    "P": "pic.type",
    "Q": "pic.existing",
    "R": "pic.orgName",
    "S": "pic.acronym",
    "T": "pic.address",
    "U": "pic.city",
    "V": "pic.country",
    "W": "pic.email",
    "X": "matEstablished",
    "Y": "subjectMatter",
    "Z": "keywords",
    "AA": "specimens",
    "AB": "taxonomies",
    "AC": "usage",
    "AD": "usagesDescription",
    "AE": "thirdPartyTransferCondition",
    "AF": "permitFiles",
    "AG": "relevantInformation",
}
LETTERS = list(COLUMNS)
# A record field -> the column it came from, so that a registry refusal names the cell.
FIELD_COLUMNS = {
    "government": "B",
    "absCNA": "C",
    "title": "D",
    "dateOfIssuance": "E",
    "dateOfExpiry": "F",
    "providers": "H",
    "picGranted": "O",
    "entitiesToWhomPICGranted": "Q",
    "matEstablished": "X",
    "subjectMatter": "Y",
    "keywords": "Z",
    "keywordOther": "Z",
    "specimens": "AA",
    "taxonomies": "AB",
    "usages": "AC",
    "usagesDescription": "AD",
    "thirdPartyTransferCondition": "AE",
    "permitFiles": "AF",
    "relevantInformation": "AG",
}
_YES, _NO = {"yes", "y", "true", "1", "oui", "si", "sí"}, {"no", "n", "false", "0", "non"}


class CellError(Exception):
    """A cell that cannot be read: its column letter and why."""

    def __init__(self, letter: str, message: str) -> None:
        super().__init__(message)
        self.letter = letter


def column(letter: str) -> str:
    """A column as a report names it: ``E (dateOfIssuance)``."""
    return f"{letter} ({COLUMNS[letter]})"


def with_columns(exc: InvalidRecord) -> InvalidRecord:
    """A registry refusal of a row's IRCC whose messages also name the column of each
    field (``title`` -> "... (column D)"); fields keep their record names."""
    errors = []
    for error in exc.errors:
        root = error["field"].split(".", 1)[0]
        letter = FIELD_COLUMNS.get(root)
        suffix = f" (column {column(letter)})" if letter else ""
        errors.append({**error, "message": error["message"] + suffix})
    return InvalidRecord(errors)


@dataclass
class Row:
    """One data row: its cells as text (dates as ISO dates), by column letter."""

    number: int
    cells: dict[str, str]

    def get(self, letter: str) -> str:
        return self.cells.get(letter, "")

    def many(self, letter: str) -> list[str]:
        return [v.strip() for v in self.get(letter).split(",") if v.strip()]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _rows(values: Iterable[Iterable[Any]]) -> Iterator[Row]:
    for number, raw in enumerate(values, start=1):
        cells = {LETTERS[i]: _text(v) for i, v in enumerate(raw) if i < len(LETTERS)}
        if not any(cells.values()):
            continue
        if cells.get("A", "").casefold() == "language":
            continue  # the template's header row
        yield Row(number, cells)


def xlsx_rows(data: bytes) -> Iterator[Row]:
    """The data rows of the first sheet of an ``.xlsx`` file."""
    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheet = book.worksheets[0]
        yield from _rows(sheet.iter_rows(values_only=True))
    finally:
        book.close()


def csv_rows(data: bytes) -> Iterator[Row]:
    """The data rows of a ``.csv`` file (UTF-8, with or without BOM)."""
    yield from _rows(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def country(row: Row, letter: str) -> str | None:
    """An ISO 3166 alpha-2 code, lower-cased (None when empty)."""
    value = row.get(letter)
    if not value:
        return None
    if len(value) != 2 or not is_known_government(value):
        raise CellError(letter, f"{value[:40]!r} is not an ISO 3166 alpha-2 country code")
    return value.lower()


def flag(row: Row, letter: str) -> bool | None:
    """Yes or no (None when empty)."""
    value = row.get(letter).casefold()
    if not value:
        return None
    if value in _YES or value in _NO:
        return value in _YES
    raise CellError(letter, f"{row.get(letter)[:40]!r} is neither yes nor no")


def iso_date(row: Row, letter: str) -> str | None:
    """An ISO date (None when empty); a date-time keeps its date."""
    value = row.get(letter)
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10]).isoformat()
    except ValueError:
        raise CellError(letter, f"{value[:40]!r} is not a date (YYYY-MM-DD)") from None
