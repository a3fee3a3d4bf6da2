"""Registry: importing what national systems already hold (issue 18, item 3), through
``POST /v1/import`` and the importer CLI, on a real registry, database and broker."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import logging
import re
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from openpyxl import Workbook

from services.registry.importer.__main__ import main as importer_main
from shared.events import topic_name
from tests.support.kafka import TopicReader
from tests.support.records import new_id, permit
from tests.support.registry import (
    MxRegistry,
    auth,
)

log = logging.getLogger(__name__)
SAMPLES = Path(__file__).parents[2] / "fixtures" / "samples"
# The template's columns, A to AG (sample 14: the official IRCC bulk-upload spreadsheet).
COLUMNS: dict[str, str] = json.loads(
    (SAMPLES / "14_ircc_bulk_upload_columns.json").read_text(encoding="utf-8")
)["record"]
SIMP = re.compile(r"SIMP-[0-9A-F]{8}-(?:[0-9A-F]{4}-){3}[0-9A-F]{12}")
PIC_HOLDERS = 10


def sheet_row(i: int, cna: str, *, gov: str = "mx", issued: Any = "2025-01-15") -> list[Any]:
    """Row ``i`` of an IRCC spreadsheet: one provider organisation (the same on every row)
    and one of ``PIC_HOLDERS`` persons, both new contacts given by name and e-mail."""
    holder = i % PIC_HOLDERS
    cells = {
        "A": "en",
        "B": gov,
        "C": cna,
        "D": f"Permit {i}",
        "E": issued,
        "G": "organization",
        "I": "BioLab Andina",
        "J": "BLA",
        "L": "Lima",
        "M": "pe",
        "N": "permits@biolab.example",
        "O": "yes",
        "P": "person",
        "R": f"Maria Lopez{holder}",
        "V": "es",
        "W": f"maria{holder}@uni.example",
        "X": "yes",
        "Y": "Soil bacteria from the highlands",
        "Z": "soil, microbes",
        "AA": "https://specimens.example/1",
        "AC": "commercial" if i % 2 else "non-commercial",
    }
    return [cells.get(letter) for letter in COLUMNS]


def xlsx(rows: list[list[Any]]) -> bytes:
    """The rows as an .xlsx workbook, under the template's header row."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(COLUMNS.values()))
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_bytes(rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(COLUMNS.values()))
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue().encode()


def upload(name: str, data: bytes) -> dict[str, str]:
    return {"name": name, "content": base64.b64encode(data).decode()}


async def post_import(
    client: httpx.AsyncClient, token: str, *files: dict[str, str], **extra: Any
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/import", json={"files": list(files), **extra}, headers=auth(token), timeout=120
    )
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def test_a_thousand_row_spreadsheet_imports_in_under_a_minute(
    kafka_bootstrap: str, topic_prefix: str, mx_registry: MxRegistry, tmp_path: Path
) -> None:
    client, users, cna = mx_registry
    rows = [sheet_row(i, cna, issued=date(2025, 1, 15)) for i in range(1000)]
    data = xlsx(rows)

    started = time.perf_counter()
    answer = await post_import(client, users["pa"], upload("permits.xlsx", data))
    elapsed = time.perf_counter() - started
    log.info("1000 IRCC rows imported in %.1f s: %.0f rows/s", elapsed, 1000 / elapsed)
    assert elapsed < 60

    items = answer["items"]
    contacts = [i for i in items if i["schema"] == "contact"]
    permits = [i for i in items if i["schema"] == "absPermit"]
    # Each new contact once, before the rows citing it: one provider, ten PIC holders.
    assert len(contacts) == 1 + PIC_HOLDERS
    assert items[: len(contacts)] == contacts
    assert all(SIMP.fullmatch(c["identifier"]) for c in contacts)
    assert {c["status"] for c in contacts} == {"published"}
    assert [p["position"] for p in permits] == [f"row {n}" for n in range(2, 1002)]
    assert {p["status"] for p in permits} == {"published"}, [
        p["problem"] for p in permits if p["problem"]
    ][:3]
    assert (answer["published"], answer["refused"]) == (1000 + 1 + PIC_HOLDERS, 0)

    # Row 2 cites the provider and its PIC holder by their new identifiers.
    resp = await client.get(f"/v1/records/{permits[0]['uid']}", headers=auth(users["pa"]))
    assert resp.status_code == 200, resp.text
    record = resp.json()["record"]
    # Row 2 named both first: its provider, then its PIC holder.
    provider, holder = contacts[0]["identifier"], contacts[1]["identifier"]
    assert record["providers"] == [{"identifier": provider}]
    assert record["entitiesToWhomPICGranted"] == [{"identifier": holder}]
    assert record["usages"]
    assert record["keywordOther"] == {"en": "soil, microbes"}

    async with TopicReader(kafka_bootstrap, topic_name("absch.ircc.v1", topic_prefix)) as r:
        events = await r.read_until(lambda evs: len(evs) >= 1000, timeout=60)
    assert sorted(e.subject for e in events) == sorted(p["uid"] for p in permits)
    assert {e.type for e in events} == {"ircc.published"}


async def test_a_malformed_row_is_refused_naming_its_column_and_the_others_import(
    kafka_bootstrap: str, topic_prefix: str, mx_registry: MxRegistry, tmp_path: Path
) -> None:
    client, users, cna = mx_registry
    rows = [sheet_row(i, cna) for i in range(6)]
    rows[1][4] = "2025-13-45"  # column E, dateOfIssuance
    rows[2][14] = "maybe"  # column O, pic.consent
    rows[3][3] = None  # no title: saved as a draft, its publication refused
    rows[4][1] = "br"  # another government's certificate

    answer = await post_import(client, users["pa"], upload("permits.csv", csv_bytes(rows)))

    by_row = {i["position"]: i for i in answer["items"] if i["schema"] == "absPermit"}
    assert by_row["row 3"]["status"] == "refused"
    assert by_row["row 3"]["problem"]["status"] == 422
    [error] = by_row["row 3"]["problem"]["errors"]
    assert error["field"] == "E (dateOfIssuance)"
    assert "'2025-13-45' is not a date" in error["message"]
    assert by_row["row 4"]["problem"]["errors"][0]["field"] == "O (pic.consent)"
    assert by_row["row 5"]["status"] == "draft"
    [title] = [e for e in by_row["row 5"]["problem"]["errors"] if e["field"] == "title"]
    assert title["message"].endswith("(column D (permitEquivalent))")
    assert by_row["row 6"]["status"] == "refused"
    assert by_row["row 6"]["problem"]["status"] == 403
    published = [by_row[f"row {n}"] for n in (2, 7)]
    assert all(p["status"] == "published" and p["uid"] for p in published)
    # A row that cannot be read names no contact; the new PIC holder only the other
    # government's row names is not created.
    contacts = {i["position"]: i for i in answer["items"] if i["schema"] == "contact"}
    assert set(contacts) == {"row 2", "row 5", "row 6", "row 7"}
    assert contacts["row 6"]["status"] == "refused"
    assert contacts["row 6"]["problem"]["errors"][0]["field"] == "contacts"
    assert answer["refused"] == 4


async def test_absch_json_and_solr_docs_import_per_item(
    kafka_bootstrap: str, topic_prefix: str, mx_registry: MxRegistry, tmp_path: Path
) -> None:
    client, users, cna = mx_registry
    own = permit("mx", cna)
    foreign = permit("br", cna)
    checkpoint_less = {"header": {"identifier": new_id(), "schema": "absCheckpointCommunique"}}
    documents = json.dumps([own, foreign, checkpoint_less, "not a record"]).encode()
    # Sample 09's doc (the real index's shape), with the fields DOMAIN.md §7 lists that
    # an IRCC's index entry carries; and sample 09's doc itself, which has no
    # identifier_s.
    sample = json.loads((SAMPLES / "09_solr_index_ircc_response.json").read_text())
    bare = sample["record"]["response"]["docs"][0]
    ident = new_id()
    indexed = {
        **bare,
        "identifier_s": ident,
        "uniqueIdentifier_s": "absch-ircc-mx-207608-2",
        "government_s": "mx",
        "date_dt": "2024-07-02T00:00:00Z",
        "absCNA_s": cna,
        "providersConfidential_b": True,
        "entitiesToWhomPICGrantedConfidential_b": True,
        "subjectMatterConfidential_b": True,
        "usages_ss": ["60EA2F49-A9DD-406F-921A-8A1C9AA8DFDD"],
    }
    solr = {"response": {"numFound": 2, "start": 0, "docs": [indexed, bare]}}

    answer = await post_import(
        client,
        users["pa"],
        upload("records.json", documents),
        upload("select.json", json.dumps(solr).encode()),
    )

    items = {(i["file"], i["position"]): i for i in answer["items"]}
    assert items[("records.json", "index 0")]["status"] == "published"
    assert items[("records.json", "index 1")]["problem"]["status"] == 403
    assert items[("records.json", "index 2")]["problem"]["errors"][0]["field"] == ("header.schema")
    assert items[("records.json", "index 3")]["problem"]["errors"][0]["field"] == "record"
    from_index = items[("select.json", "docs[0]")]
    assert from_index["status"] == "published", from_index["problem"]
    assert from_index["identifier"] == ident
    resp = await client.get(f"/v1/records/{from_index['uid']}")
    assert resp.json()["record"]["title"] == {
        "ar": "Workflow 2",
        "en": "Workflow 2",
        "es": "Workflow 2",
        "fr": "Workflow 2",
    }
    refused = items[("select.json", "docs[1]")]
    assert refused["status"] == "refused"
    assert refused["problem"]["errors"][0]["field"] == "identifier_s"
    assert (answer["published"], answer["refused"]) == (2, 4)


async def test_an_nau_import_opens_requests_and_its_contacts_publish(
    kafka_bootstrap: str, topic_prefix: str, mx_registry: MxRegistry, tmp_path: Path
) -> None:
    client, users, cna = mx_registry
    rows = [sheet_row(i, cna) for i in range(3)]
    answer = await post_import(client, users["nau"], upload("permits.xlsx", xlsx(rows)))

    permits = [i for i in answer["items"] if i["schema"] == "absPermit"]
    assert {p["status"] for p in permits} == {"requested"}
    assert all(SIMP.fullmatch(i["identifier"]) for i in answer["items"][:4])
    assert answer["requested"] == 3
    assert answer["published"] == 4
    resp = await client.get("/v1/requests", headers=auth(users["pa"]))
    assert resp.status_code == 200, resp.text
    assert {p["requestId"] for p in permits} <= {r["id"] for r in resp.json()}


async def test_the_cli_imports_files_and_reports_each_item(
    kafka_bootstrap: str, topic_prefix: str, mx_registry: MxRegistry, tmp_path: Path
) -> None:
    client, users, cna = mx_registry
    sheet = tmp_path / "permits.xlsx"
    sheet.write_bytes(xlsx([sheet_row(i, cna) for i in range(4)]))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    base = ["--registry", str(client.base_url), "--token", users["pa"]]

    dry, dry_err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(importer_main, [str(sheet), *base, "--dry-run"], dry, dry_err)
    assert code == 0, dry_err.getvalue()
    assert dry.getvalue().splitlines()[-1].startswith("dry run: would be published 9,")
    resp = await client.get("/v1/search", params={"schema": "absPermit"})
    assert resp.json()["total"] == 0  # the dry run wrote nothing

    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(importer_main, [str(sheet), str(bad), *base], out, err)
    assert code == 1, err.getvalue()
    lines = [line.split("\t") for line in out.getvalue().splitlines()[:-1]]
    assert [(f, pos, status) for f, pos, _, status, _, _ in lines[-5:]] == [
        ("permits.xlsx", "row 2", "published"),
        ("permits.xlsx", "row 3", "published"),
        ("permits.xlsx", "row 4", "published"),
        ("permits.xlsx", "row 5", "published"),
        ("bad.json", "file", "refused"),
    ]
    assert lines[-1][5].startswith("file: cannot be read as json")
    assert out.getvalue().splitlines()[-1] == "published 9, requested 0, drafts 0, refused 1"
    resp = await client.get("/v1/search", params={"schema": "absPermit"})
    assert resp.json()["total"] == 4
