"""The ABSCH samples (DOMAIN.md §8) against the record models and the UID/Solr id helpers.

Every record-shaped sample imports and exports without loss; the Solr documents' ids and
unique identifiers decode to the documentID their URL names [C6, C8]; a government named
otherwise than by its ISO code is refused naming the field. The same samples go through
the registry's HTTP API in tests/integration/registry/test_samples.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.records import RECORD_MODELS, parse_record, record_errors
from shared.uid import format_solr_id, parse_solr_id, parse_uid

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "samples"
# The researcher's originals beside the project (absent from a bare checkout of it).
SHARED_SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "samples"

# Record-shaped samples and the schema each one holds.
RECORD_SAMPLES = {
    "01_ircc_dev_test_api-examples.json": "absPermit",
    "02_ircc_docs_create_example.json": "absPermit",
    "04_cpc_docs_example_with_ircc_reference.json": "absCheckpointCommunique",
    "05_checkpoint_docs_example.json": "absCheckpoint",
    "06_cna_authority_docs_example.json": "authority",
}
# Solr select answers: ``{"response": {"docs": [...]}}``.
SOLR_SAMPLES = ("09_solr_index_ircc_response.json", "11_solr_index_cp_doc.json")
# Neither records nor index documents: request shapes and a spreadsheet's column map.
OTHER_SAMPLES = ("13_workflow_requests_examples.json", "14_ircc_bulk_upload_columns.json")

_URL_DOCUMENT_ID = re.compile(r"[?&]documentID=([0-9]+)")


def load(name: str) -> Any:
    """The ``record`` part of a sample file."""
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))["record"]


def solr_docs() -> list[tuple[str, dict[str, Any]]]:
    """Every document of the Solr samples, with the file it comes from."""
    return [(name, doc) for name in SOLR_SAMPLES for doc in load(name)["response"]["docs"]]


def test_every_sample_is_classified() -> None:
    names = sorted(p.name for p in SAMPLES.glob("*.json"))
    assert names == sorted([*RECORD_SAMPLES, *SOLR_SAMPLES, *OTHER_SAMPLES])
    for name in names:
        is_record = isinstance(load(name), dict) and "header" in load(name)
        assert is_record == (name in RECORD_SAMPLES), name


def test_the_fixtures_are_the_shared_samples() -> None:
    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"{SHARED_SAMPLES} is not beside this checkout")
    for original in sorted(SHARED_SAMPLES.glob("*.json")):
        copy_ = SAMPLES / original.name
        assert copy_.is_file(), f"{original.name} is missing from {SAMPLES}"
        assert copy_.read_bytes() == original.read_bytes(), original.name


@pytest.mark.parametrize("name", sorted(RECORD_SAMPLES))
def test_record_sample_imports_and_exports_without_loss(name: str) -> None:
    data = load(name)
    record = parse_record(data)
    assert type(record) is RECORD_MODELS[RECORD_SAMPLES[name]]
    exported = record.dump()
    assert exported == data
    assert json.loads(json.dumps(exported)) == exported
    assert parse_record(exported).dump() == data


@pytest.mark.parametrize(
    ("name", "doc"), [pytest.param(n, d, id=d["uniqueIdentifier_s"]) for n, d in solr_docs()]
)
def test_solr_documents_name_one_document_id(name: str, doc: dict[str, Any]) -> None:
    (url,) = doc["url_ss"]
    match = _URL_DOCUMENT_ID.search(url)
    assert match is not None, url
    document_id = int(match.group(1))
    uid = parse_uid(doc["uniqueIdentifier_s"])
    assert uid.document_id == document_id
    assert uid.schema == doc["schema_s"]
    solr_id = format_solr_id(document_id)
    assert parse_solr_id(solr_id) == document_id
    if "id" in doc:  # a real id: ours must be the very same text
        assert parse_solr_id(doc["id"]) == document_id
        assert solr_id == doc["id"]


def test_a_solr_sample_carries_a_real_id() -> None:
    assert [doc["id"] for _, doc in solr_docs() if "id" in doc] == ["52000000cbd0800000032af8"]


GOVERNED = sorted(name for name in RECORD_SAMPLES if "government" in load(name))


@pytest.mark.parametrize("name", GOVERNED)
@pytest.mark.parametrize("government", ["Mexico", "MEX", "mex", "M", "m x"])
def test_a_government_named_otherwise_than_by_its_iso_code_is_refused(
    name: str, government: str
) -> None:
    data = copy.deepcopy(load(name))
    data["government"]["identifier"] = government
    with pytest.raises(ValidationError) as info:
        parse_record(data)
    errors = record_errors(info.value)
    assert [e["field"] for e in errors] == ["government.identifier"]
    assert "ISO" in errors[0]["message"]


def test_every_record_sample_with_a_government_is_checked() -> None:
    # Contacts may go without one; every sample here is a national record.
    assert sorted(RECORD_SAMPLES) == GOVERNED
