"""ABSCH JSON files: record bodies as the documents API answers them, and Solr search
responses (``response.docs``), mapped field by field as far as the index carries them."""

from __future__ import annotations

from typing import Any

from services.registry.importer.items import ImportedItem, header_of, refusal
from shared.uid import UidError, parse_uid

# Title fields of the index, per UN language (DOMAIN.md §7, sample 09).
_TITLE_LANGUAGES = ("ar", "en", "es", "fr", "ru", "zh")


def documents(file: str, answer: Any) -> list[ImportedItem]:
    """Items of a documents-API file: one record body, or a list of them."""
    if isinstance(answer, dict):
        return [_document(file, "record", answer)]
    return [_document(file, f"index {i}", body) for i, body in enumerate(answer)]


def _document(file: str, position: str, body: Any) -> ImportedItem:
    if not isinstance(body, dict):
        error = refusal("record", "is not a JSON object (a record body was expected)")
        return ImportedItem(file, position, None, None, error=error)
    schema, ident = header_of(body)
    return ImportedItem(file, position, schema, ident, body=body)


def solr_docs(file: str, answer: dict[str, Any]) -> list[ImportedItem]:
    """Items of a Solr search response: each doc mapped to a record, or refused with what
    it lacks. The index holds a summary of a record, so a doc of a published IRCC maps
    to one only as far as its fields go; publication validation names what is missing."""
    response = answer.get("response")
    docs = response.get("docs") if isinstance(response, dict) else None
    if not isinstance(docs, list):
        return [
            ImportedItem(file, "response", None, None, error=refusal("response.docs", "no list"))
        ]
    items: list[ImportedItem] = []
    for index, doc in enumerate(docs):
        position = f"docs[{index}]"
        if not isinstance(doc, dict):
            items.append(
                ImportedItem(file, position, None, None, error=refusal(position, "not an object"))
            )
            continue
        items.append(_solr_doc(file, position, doc))
    return items


def _solr_doc(file: str, position: str, doc: dict[str, Any]) -> ImportedItem:
    schema, ident = doc.get("schema_s"), doc.get("identifier_s")
    if not isinstance(schema, str) or not schema:
        return ImportedItem(file, position, None, None, error=refusal("schema_s", "is missing"))
    if not isinstance(ident, str) or not ident:
        # Without it the record cannot keep its identity (the mirror needs it too).
        error = refusal("identifier_s", "is missing: the record's header.identifier is unknown")
        return ImportedItem(file, position, schema, None, error=error)
    body: dict[str, Any] = {"header": {"identifier": ident, "schema": schema}}
    gov = _government(doc)
    if gov is not None:
        body["government"] = {"identifier": gov}
    title = _title(doc)
    body["header"]["languages"] = sorted(title) or ["en"]
    body.update(_fields(schema, doc, title))
    return ImportedItem(file, position, schema, ident, body=body)


def _government(doc: dict[str, Any]) -> str | None:
    # The UID's government is authoritative where the index disagrees (sample 11's note).
    uid = doc.get("uniqueIdentifier_s")
    if isinstance(uid, str):
        try:
            gov = parse_uid(uid).government
        except UidError:
            gov = None
        if gov is not None:
            return None if gov == "SCBD" else gov.lower()
    value = doc.get("government_s")
    return value.lower() if isinstance(value, str) and value else None


def _title(doc: dict[str, Any]) -> dict[str, str]:
    title = {
        lang: doc[f"title_{lang.upper()}_s"]
        for lang in _TITLE_LANGUAGES
        if isinstance(doc.get(f"title_{lang.upper()}_s"), str)
    }
    if not title and isinstance(doc.get("title_s"), str):
        title["en"] = doc["title_s"]
    return title


def _terms(value: Any) -> list[dict[str, str]] | None:
    values = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    return [{"identifier": v} for v in values if isinstance(v, str) and v] or None


def _date(value: Any) -> str | None:
    return value[:10] if isinstance(value, str) and value else None


def _fields(schema: str, doc: dict[str, Any], title: dict[str, str]) -> dict[str, Any]:
    """The record fields a doc of ``schema`` carries (DOMAIN.md §7 "useful Solr fields")."""
    out: dict[str, Any] = {}
    if schema == "absPermit":
        out["title"] = title or None
        out["dateOfIssuance"] = _date(doc.get("date_dt"))
        out["dateOfExpiry"] = _date(doc.get("dateOfExpiry_dt"))
        cna = doc.get("absCNA_s")
        out["absCNA"] = {"identifier": cna} if isinstance(cna, str) and cna else None
        out["providers"] = _terms(doc.get("providers_s"))
        out["usages"] = _terms(doc.get("usages_ss"))
        out["keywords"] = _terms(doc.get("keywords_ss"))
        for flag in (
            "providersConfidential",
            "entitiesToWhomPICGrantedConfidential",
            "subjectMatterConfidential",
            "usagesConfidential",
        ):
            if isinstance(doc.get(f"{flag}_b"), bool):
                out[flag] = doc[f"{flag}_b"]
        # Only a certificate with PIC and MAT is ever published [P3], and the index lists
        # published records: the doc's existence states both.
        out["picGranted"] = out["matEstablished"] = True
    elif schema in ("authority", "absCheckpoint"):
        out["name"] = title or None
        if schema == "authority" and isinstance(doc.get("isResponsibleForAll_b"), bool):
            out["responsibleForAll"] = doc["isResponsibleForAll_b"]
    if schema in ("authority", "contact", "focalPoint") and isinstance(doc.get("email_ss"), list):
        out["emails"] = [e for e in doc["email_ss"] if isinstance(e, str)]
    return {k: v for k, v in out.items() if v is not None}


def items_of_json(file: str, answer: Any) -> list[ImportedItem]:
    """A JSON file's items: a Solr response, a record, or a list of records."""
    if isinstance(answer, dict) and "response" in answer and "header" not in answer:
        return solr_docs(file, answer)
    if isinstance(answer, dict | list):
        return documents(file, answer)
    error = refusal("file", "holds neither a record, a list of records nor a Solr response")
    return [ImportedItem(file, "file", None, None, error=error)]
