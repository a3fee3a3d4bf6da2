"""The importer's readers: files to records, each item with its position, no I/O."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from services.registry.importer import read_file
from services.registry.importer.sheet import COLUMNS
from shared.records.permit import KEYWORD_OTHER, USAGE_COMMERCIAL

SAMPLES = Path(__file__).parents[2] / "fixtures" / "samples"
TEMPLATE: dict[str, str] = json.loads(
    (SAMPLES / "14_ircc_bulk_upload_columns.json").read_text(encoding="utf-8")
)["record"]


def _csv(*rows: dict[str, str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(TEMPLATE.values()))
    writer.writerows([[row.get(letter, "") for letter in TEMPLATE] for row in rows])
    return out.getvalue().encode()


def _row(**cells: str) -> dict[str, str]:
    base = {"A": "en", "C": "CNA-0000000001", "D": "Permit", "E": "2025-01-15", "O": "yes"}
    return base | {"X": "yes", "Y": "Soil", "AC": "commercial"} | cells


def test_the_columns_are_the_templates() -> None:
    assert list(COLUMNS) == list(TEMPLATE)


def test_rows_become_ircc_records_and_new_contacts_are_made_once() -> None:
    person = {"P": "person", "R": "Ana Maria Silva", "V": "br", "W": "ana@uni.example"}
    data = _csv(
        _row(G="organization", I="BioLab", M="de", N="lab@bio.example", Z="soil", **person),
        _row(G="organization", H="EXISTING-CONTACT-1", I="", B="MX", **person),
        _row(G="confidential", P="", AC="confidential"),
    )
    items = read_file("permits.csv", data, government="mx")
    contacts = [i for i in items if i.schema == "contact"]
    permits = [i for i in items if i.schema == "absPermit"]
    assert [c.position for c in contacts] == ["row 2", "row 2"]
    org, ana = (c.body for c in contacts)
    assert org is not None
    assert ana is not None
    assert org["organization"] == {"en": "BioLab"}
    assert org["country"] == {"identifier": "de"}
    assert (ana["firstName"], ana["lastName"]) == ("Ana Maria", "Silva")
    first, second, third = (p.body for p in permits)
    assert first is not None
    assert second is not None
    assert third is not None
    assert first["providers"] == [{"identifier": contacts[0].identifier}]
    assert first["entitiesToWhomPICGranted"] == [{"identifier": contacts[1].identifier}]
    assert first["keywords"] == [{"identifier": KEYWORD_OTHER}]
    assert first["keywordOther"] == {"en": "soil"}
    assert first["usages"] == [{"identifier": USAGE_COMMERCIAL}]
    assert first["government"] == {"identifier": "mx"}
    assert second["providers"] == [{"identifier": "EXISTING-CONTACT-1"}]
    assert second["entitiesToWhomPICGranted"] == first["entitiesToWhomPICGranted"]
    assert permits[1].cites == [contacts[1].identifier]
    assert third["providersConfidential"] is True
    assert third["entitiesToWhomPICGrantedConfidential"] is True
    assert third["usagesConfidential"] is True
    assert "providers" not in third


def test_a_malformed_row_names_its_column_and_creates_nothing() -> None:
    data = _csv(
        _row(F="31/12/2030", G="organization", I="BioLab", N="lab@bio.example"),
        _row(G="organization", I="No Mail Lab"),
        _row(A="pt"),
        _row(P="person", R="Madonna", W="m@x.example"),
    )
    items = read_file("permits.csv", data, government="mx")
    assert [i.schema for i in items] == ["absPermit"] * 4
    errors: list[dict[str, Any]] = [i.error.errors[0] for i in items if i.error is not None]
    assert [e["field"] for e in errors] == [
        "F (dateOfExpiry)",
        "N (provider.email)",
        "A (language)",
        "R (pic.orgName)",
    ]
    assert errors[0]["message"] == "'31/12/2030' is not a date (YYYY-MM-DD)"


def test_solr_docs_map_or_are_refused_with_what_they_lack() -> None:
    sample = json.loads((SAMPLES / "09_solr_index_ircc_response.json").read_text())["record"]
    doc = sample["response"]["docs"][0]
    sample["response"]["docs"].append({**doc, "identifier_s": "CB51626B-CF45-2AA0-3A24-4596"})
    bare, mapped = read_file("select.json", json.dumps(sample).encode(), government="ht")
    assert bare.error is not None
    assert bare.error.errors[0]["field"] == "identifier_s"
    assert mapped.body is not None
    assert mapped.body["government"] == {"identifier": "ht"}
    assert mapped.body["title"]["en"] == "Workflow 2"
    assert mapped.body["picGranted"] is True


def test_an_unreadable_file_is_one_refused_item() -> None:
    for name, data in (("x.xlsx", b"not a zip"), ("x.json", b"{"), ("x.txt", b"")):
        [item] = read_file(name, data, government="mx")
        assert item.position == "file"
        assert item.error is not None
        assert item.error.errors[0]["field"] == "file"
