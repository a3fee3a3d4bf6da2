"""The official IRCC bulk-upload spreadsheet (columns A-AG, sample 14), as ``.xlsx`` or
``.csv``: one IRCC per row, and the new contacts its rows name (``SIMP-<GUID>``).

A row that cannot be read is refused with the column that failed; the others go on. A
first row whose column A reads ``language`` is the template's header and is skipped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

from services.registry.handlers.errors import InvalidRecord
from services.registry.importer import sheet
from services.registry.importer.items import ImportedItem, refusal
from services.registry.importer.sheet import CellError, Row, column
from shared.records.common import LANGUAGES
from shared.records.permit import KEYWORD_OTHER, USAGE_COMMERCIAL, USAGE_NON_COMMERCIAL

_GUID = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")


class Contacts:
    """The new contacts a spreadsheet names, each created once: the same type, name and
    e-mail on several rows is one contact with one ``SIMP-<GUID>`` identifier."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str, str], str] = {}
        self.items: list[ImportedItem] = []

    def cite(self, key: tuple[str, str, str], body: dict[str, Any], file: str, row: int) -> str:
        """The identifier of the contact ``body`` describes, made on its first row."""
        found = self._ids.get(key)
        if found is not None:
            return found
        ident = f"SIMP-{str(uuid.uuid4()).upper()}"
        self._ids[key] = ident
        body["header"]["identifier"] = ident
        self.items.append(ImportedItem(file, f"row {row}", "contact", ident, body=body))
        return ident


NewContact = tuple[tuple[str, str, str], dict[str, Any]]


def _party(row: Row, letters: str, lang: str) -> tuple[list[str], NewContact | None, bool]:
    """A provider's or PIC holder's existing references, the new contact the row names
    (its dedup key and body, without identifier) and whether the group is confidential.
    ``letters``: the type column, then existing, name, acronym, address, city, country
    and e-mail. A missing type counts as confidential (sample 14), unless existing
    contacts are named."""
    kind_col, existing_col, name_col, acr_col, addr_col, city_col, ctry_col, mail_col = (
        letters.split()
    )
    kind = row.get(kind_col).casefold()
    existing = row.many(existing_col)
    if kind == "confidential" or (not kind and not existing):
        return [], None, True
    if kind not in ("organization", "organisation", "person", ""):
        raise CellError(
            kind_col, f"{row.get(kind_col)[:40]!r} is not organization, person or confidential"
        )
    name, email = row.get(name_col), row.get(mail_col)
    if not name:
        return existing, None, False
    if not email:
        raise CellError(mail_col, "a new contact needs an e-mail address")
    body: dict[str, Any] = {"header": {"schema": "contact", "languages": [lang]}, "emails": [email]}
    if kind == "person":
        first, _, last = name.rpartition(" ")
        if not first:
            raise CellError(name_col, f"{name[:40]!r}: a person needs a first and a last name")
        body |= {"type": "person", "firstName": first, "lastName": last}
    else:
        body |= {"type": "organization", "organization": {lang: name}}
        if row.get(acr_col):
            body["organizationAcronym"] = {lang: row.get(acr_col)}
    for col, key in ((addr_col, "address"), (city_col, "city")):
        if row.get(col):
            body[key] = {lang: row.get(col)}
    country = sheet.country(row, ctry_col)
    if country is not None:
        body["country"] = {"identifier": country}
    return existing, ((body["type"], name.casefold(), email.casefold()), body), False


def _links(row: Row, letter: str) -> list[dict[str, str]] | None:
    return [{"url": url} for url in row.many(letter)] or None


def _usages(row: Row) -> tuple[list[dict[str, str]], bool]:
    values = [v.casefold() for v in row.many("AC")]
    if not values or "confidential" in values:
        return [], True  # a missing usage counts as confidential (sample 14)
    # Unrecognised usage text defaults to non-commercial, as the official uploader does.
    ids = [USAGE_COMMERCIAL if v == "commercial" else USAGE_NON_COMMERCIAL for v in values]
    return [{"identifier": i} for i in dict.fromkeys(ids)], False


def _keywords(row: Row, lang: str) -> dict[str, Any]:
    ids = [v for v in row.many("Z") if _GUID.fullmatch(v)]
    other = [v for v in row.many("Z") if not _GUID.fullmatch(v)]
    # Names are not resolved against the thesaurus: an unknown one is "Other" plus its text.
    out: dict[str, Any] = {}
    if other:
        ids.append(KEYWORD_OTHER)
        out["keywordOther"] = {lang: ", ".join(other)}
    if ids:
        out["keywords"] = [{"identifier": i} for i in dict.fromkeys(ids)]
    return out


# The two parties of a row: reference group, its confidential flag, and its columns.
PARTIES = (
    ("providers", "providersConfidential", "G H I J K L M N"),
    ("entitiesToWhomPICGranted", "entitiesToWhomPICGrantedConfidential", "P Q R S T U V W"),
)


def permit(row: Row, government: str | None) -> tuple[dict[str, Any], dict[str, NewContact]]:
    """The IRCC a row describes, and the new contact it names per reference group (its
    identifier is added to the group once known). ``CellError`` names the first cell
    that cannot be read."""
    lang = row.get("A").lower() or "en"
    if lang not in LANGUAGES:
        raise CellError("A", f"{row.get('A')[:40]!r} is not a UN language ({', '.join(LANGUAGES)})")
    gov = sheet.country(row, "B") or government
    body: dict[str, Any] = {
        "header": {
            "identifier": str(uuid.uuid4()).upper(),
            "schema": "absPermit",
            "languages": [lang],
        },
        "dateOfIssuance": sheet.iso_date(row, "E"),
        "dateOfExpiry": sheet.iso_date(row, "F"),
        "picGranted": sheet.flag(row, "O"),
        "matEstablished": sheet.flag(row, "X"),
    }
    if gov is not None:
        body["government"] = {"identifier": gov}
    if row.get("C"):
        body["absCNA"] = {"identifier": row.get("C")}
    new: dict[str, NewContact] = {}
    for group, flag, letters in PARTIES:
        existing, contact, body[flag] = _party(row, letters, lang)
        body[group] = [{"identifier": p} for p in existing]
        if contact is not None:
            new[group] = contact
    usages, body["usagesConfidential"] = _usages(row)
    body["usages"] = usages or None
    body |= _keywords(row, lang)
    for letter, key in (
        ("D", "title"),
        ("Y", "subjectMatter"),
        ("AD", "usagesDescription"),
        ("AE", "thirdPartyTransferCondition"),
        ("AG", "relevantInformation"),
    ):
        if row.get(letter):
            body[key] = {lang: row.get(letter)}
    for letter, key in (("AA", "specimens"), ("AB", "taxonomies"), ("AF", "permitFiles")):
        body[key] = _links(row, letter)
    return {k: v for k, v in body.items() if v is not None}, new


def items_of_rows(file: str, rows: Iterable[Row], government: str | None) -> list[ImportedItem]:
    """The new contacts (first, each once) then one IRCC per row; a row that cannot be
    read is a refused item naming its column, and creates no contact."""
    contacts = Contacts()
    permits: list[ImportedItem] = []
    for row in rows:
        position = f"row {row.number}"
        try:
            body, new = permit(row, government)
        except CellError as exc:
            error: InvalidRecord = refusal(column(exc.letter), str(exc))
            permits.append(ImportedItem(file, position, "absPermit", None, error=error))
            continue
        cited: list[str] = []
        for group, (key, contact) in new.items():
            ident = contacts.cite(key, contact, file, row.number)
            body[group].append({"identifier": ident})
            cited.append(ident)
        for group, _flag_name, _letters in PARTIES:
            if not body[group]:
                del body[group]
        ident = body["header"]["identifier"]
        permits.append(ImportedItem(file, position, "absPermit", ident, body=body, cites=cited))
    return contacts.items + permits
