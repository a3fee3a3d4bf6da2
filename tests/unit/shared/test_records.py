"""Record models: the real ABSCH samples round-trip, and every publication rule names its field."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.records import (
    CONFIDENTIAL_GROUPS,
    JURISDICTION_SUBNATIONAL,
    KEYWORD_OTHER,
    NO_IRCC_BRANCH_FIELDS,
    RECORD_MODELS,
    ROOT_FIELD,
    AbsCheckpointCommunique,
    AbsPermit,
    Authority,
    Contact,
    FocalPoint,
    parse_record,
    record_errors,
)

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "samples"
IRCC_01 = "01_ircc_dev_test_api-examples.json"
IRCC_02 = "02_ircc_docs_create_example.json"
CPC = "04_cpc_docs_example_with_ircc_reference.json"
CP = "05_checkpoint_docs_example.json"
CNA = "06_cna_authority_docs_example.json"

# What export may change in each record sample; everything else must come back identical.
# Nothing: the server keeps what it is sent (02's flagged groups stay, stripping happens only
# when asked; 04 would keep no-IRCC evidence; 05 keeps jurisdictionName beside the national
# jurisdiction). The other samples (Solr answers, workflow shapes, the spreadsheet's column
# map) are not records: tests/unit/shared/test_samples.py covers them.
EXPORT_DROPS: dict[str, tuple[str, ...]] = {
    IRCC_01: (),
    IRCC_02: (),
    CPC: (),
    CP: (),
    CNA: (),
}

DROP = object()


def load(name: str) -> dict[str, Any]:
    """A sample record, or one of the hand-made ones below."""
    if name in BUILT:
        return BUILT[name]()
    record: dict[str, Any] = json.loads((SAMPLES / name).read_text(encoding="utf-8"))["record"]
    return record


def cpc_without_ircc() -> dict[str, Any]:
    data = load(CPC)
    del data["absIRCCs"]
    data.update(
        absIRCCsNotAvailable=True,
        sourceCountries=[{"identifier": "za"}],
        subjectMatter={"en": "<p>Ant specimens</p>"},
        entityWhoGrantedPIC={"identifier": "SIMP-A1D0D0A8-65B1-B8D5-FF9F-B7B6B95CDDEB@1"},
        gisMapCenter={"zoom": 5, "lat": -30.5, "lng": 22},
    )
    return data


def _header(identifier: str, schema: str) -> dict[str, Any]:
    return {"identifier": identifier, "schema": schema, "languages": ["fr", "en"]}


def contact_person() -> dict[str, Any]:
    return {
        "header": _header("068C83BA-995F-08C3-50CE-AD43545B3EB5", "contact"),
        "type": "person",
        "firstName": "Jane",
        "lastName": "Doe",
        "emails": ["jane@example.org", "JANE@example.org", " other@example.org "],
    }


def contact_organization() -> dict[str, Any]:
    return {
        "header": _header("SIMP-A1D0D0A8-65B1-B8D5-FF9F-B7B6B95CDDEB", "contact"),
        "type": "organization",
        "organization": {"en": "Institute of Ants"},
        "country": {"identifier": "de"},
        "emails": ["office@ants.example"],
        "government": {"identifier": "de"},
    }


def focal_point() -> dict[str, Any]:
    return {
        "header": _header("235A8B00-A995-5F7A-E827-FCC588C49C20", "focalPoint"),
        "government": {"identifier": "af"},
        "firstName": "John",
        "lastName": "Doe",
        "emails": ["nfp@example.org"],
    }


BUILT = {
    "cpc_without_ircc": cpc_without_ircc,
    "contact_person": contact_person,
    "contact_organization": contact_organization,
    "focal_point": focal_point,
}


def variant(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """``name`` with dotted paths set (or removed with ``DROP``)."""
    data = copy.deepcopy(load(name))
    for path, value in changes.items():
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key: Any = int(last) if isinstance(target, list) else last
        if value is DROP:
            del target[key]
        else:
            target[key] = value
    return data


def failing_fields(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        parse_record(data)
    return [error["field"] for error in record_errors(info.value)]


# --- samples -----------------------------------------------------------------------------


def test_every_sample_has_a_documented_normalisation():
    records = [
        p.name
        for p in SAMPLES.glob("*.json")
        if "header" in json.loads(p.read_text(encoding="utf-8"))["record"]
    ]
    assert sorted(records) == sorted(EXPORT_DROPS)


@pytest.mark.parametrize("name", sorted(EXPORT_DROPS))
def test_sample_loads_and_exports_the_same_shape(name):
    data = load(name)
    record = parse_record(data)
    assert type(record) is RECORD_MODELS[data["header"]["schema"]]
    expected = {key: value for key, value in data.items() if key not in EXPORT_DROPS[name]}
    exported = record.dump()
    assert exported == expected
    assert json.loads(json.dumps(exported)) == exported
    assert parse_record(exported).dump() == exported


@pytest.mark.parametrize("name", sorted(BUILT))
def test_hand_made_records_are_valid(name):
    record = parse_record(load(name))
    assert record.dump()["header"] == load(name)["header"]


# --- failing cases: one per rule, each naming the field -------------------------------------

_GROUP_CASES = [
    pytest.param(IRCC_02, {flag: False, group: DROP}, group, id=f"{group}-not-confidential")
    for group, flag in CONFIDENTIAL_GROUPS.items()
] + [
    pytest.param(IRCC_01, {flag: DROP}, group, id=f"{group}-flag-absent")
    for group, flag in CONFIDENTIAL_GROUPS.items()
]

IRCC_CASES = [
    *_GROUP_CASES,
    pytest.param(IRCC_01, {"government": DROP}, "government", id="government"),
    pytest.param(IRCC_01, {"government.identifier": "afg"}, "government.identifier", id="iso2"),
    pytest.param(IRCC_01, {"absCNA": DROP}, "absCNA", id="absCNA"),
    pytest.param(IRCC_01, {"absCNA.identifier": "C84C@0"}, "absCNA.identifier", id="cna-rev"),
    pytest.param(IRCC_01, {"title": DROP}, "title", id="title"),
    pytest.param(IRCC_01, {"title": {"en": "<div><!--block--></div>"}}, "title", id="title-empty"),
    pytest.param(IRCC_01, {"title": {"de": "x"}}, "title", id="title-language"),
    pytest.param(IRCC_01, {"title": {"en": 5}}, "title.en", id="title-value"),
    pytest.param(IRCC_01, {"dateOfIssuance": DROP}, "dateOfIssuance", id="issuance"),
    pytest.param(IRCC_01, {"dateOfIssuance": "07/08/2016"}, "dateOfIssuance", id="date-format"),
    pytest.param(IRCC_01, {"dateOfIssuance": "2016-02-30"}, "dateOfIssuance", id="date-value"),
    pytest.param(IRCC_01, {"picGranted": False}, "picGranted", id="pic-false"),
    pytest.param(IRCC_01, {"picGranted": DROP}, "picGranted", id="pic-missing"),
    pytest.param(IRCC_01, {"picGranted": "true"}, "picGranted", id="pic-string"),
    pytest.param(IRCC_01, {"matEstablished": False}, "matEstablished", id="mat-false"),
    pytest.param(IRCC_01, {"matEstablished": DROP}, "matEstablished", id="mat-missing"),
    pytest.param(
        IRCC_02, {"keywords": [{"identifier": KEYWORD_OTHER}]}, "keywordOther", id="keyword-other"
    ),
    pytest.param(IRCC_02, {"dateOfExpiry": "2024-07-01"}, "dateOfExpiry", id="expiry-early"),
    pytest.param(
        IRCC_02,
        {"relatedIRCCs": [{"identifier": "CB51626B-CF45-2AA0-3A24-459669DDCC34@1"}]},
        "relatedIRCCs.0.identifier",
        id="related-self",
    ),
    pytest.param(IRCC_01, {"amendmentIntent": 2}, "amendmentIntent", id="intent-value"),
    pytest.param(IRCC_01, {"amendmentIntent": True}, "amendmentIntent", id="intent-bool"),
    pytest.param(IRCC_01, {"amendmentDescription": DROP}, "amendmentDescription", id="reason"),
    pytest.param(IRCC_01, {"header.identifier": "short"}, "header.identifier", id="header-id"),
    pytest.param(IRCC_01, {"header.languages": []}, "header.languages", id="no-language"),
    pytest.param(IRCC_01, {"header.languages": ["de"]}, "header.languages.0", id="language"),
    pytest.param(IRCC_01, {"header.schema": "nope"}, "header.schema", id="schema"),
    pytest.param(IRCC_02, {"providers.0.identifier": "a b"}, "providers.0.identifier", id="ref"),
    pytest.param(IRCC_02, {"specimens.0.url": DROP}, "specimens.0.url", id="link-url"),
    pytest.param(
        IRCC_02, {"gisMapCenter": {"zoom": 3, "lat": 91, "lng": 0}}, "gisMapCenter.lat", id="lat"
    ),
]

CPC_CASES = [
    pytest.param(CPC, {"government": DROP}, "government", id="government"),
    pytest.param(CPC, {"title": DROP}, "title", id="title"),
    pytest.param(CPC, {"description": DROP}, "description", id="description"),
    pytest.param(CPC, {"absCheckpoints": []}, "absCheckpoints", id="checkpoints-empty"),
    pytest.param(CPC, {"absCheckpoints": DROP}, "absCheckpoints", id="checkpoints-missing"),
    pytest.param(
        CPC,
        {"dateCollected": DROP, "dateCollectedFrom": DROP, "dateCollectedTo": DROP},
        "dateCollected",
        id="no-date",
    ),
    pytest.param(
        CPC, {"dateCollected": DROP, "dateCollectedTo": DROP}, "dateCollectedTo", id="no-end"
    ),
    pytest.param(
        CPC, {"dateCollected": DROP, "dateCollectedFrom": DROP}, "dateCollectedFrom", id="no-start"
    ),
    pytest.param(CPC, {"dateCollectedFrom": "2024-10-24"}, "dateCollectedTo", id="period"),
    pytest.param(CPC, {"absIRCCs": DROP}, "absIRCCs", id="irccs-missing"),
    pytest.param(CPC, {"absIRCCs": []}, "absIRCCs", id="irccs-empty"),
    pytest.param(
        CPC, {"absIRCCsNotAvailable": DROP, "absIRCCs": DROP}, "absIRCCs", id="irccs-no-flag"
    ),
    pytest.param(CPC, {"absIRCCs.0.identifier": "x y"}, "absIRCCs.0.identifier", id="ircc-ref"),
    pytest.param("cpc_without_ircc", {"sourceCountries": DROP}, "sourceCountries", id="no-sources"),
    pytest.param("cpc_without_ircc", {"sourceCountries": []}, "sourceCountries", id="sources-[]"),
    pytest.param(
        "cpc_without_ircc",
        {"sourceCountries.0.identifier": "zaf"},
        "sourceCountries.0.identifier",
        id="source-iso2",
    ),
    pytest.param("cpc_without_ircc", {"subjectMatter": DROP}, "subjectMatter", id="no-subject"),
    pytest.param(
        "cpc_without_ircc",
        {"absIRCCs": [{"identifier": "CB51626B-CF45-2AA0-3A24-459669DDCC34@1"}]},
        "absIRCCs",
        id="irccs-while-not-available",
    ),
]

CP_CASES = [
    pytest.param(CP, {"name": DROP}, "name", id="name"),
    pytest.param(CP, {"informAllAuthorities": DROP}, "informAllAuthorities", id="inform-all"),
    pytest.param(CP, {"informAllAuthorities": "yes"}, "informAllAuthorities", id="inform-bool"),
    pytest.param(
        CP,
        {"jurisdiction.identifier": JURISDICTION_SUBNATIONAL, "jurisdictionName": DROP},
        "jurisdictionName",
        id="jurisdiction-name",
    ),
    pytest.param(
        CP, {"responsibilities": {"en": f"<p>{'x' * 301}</p>"}}, "responsibilities", id="301"
    ),
    pytest.param(
        CP, {"contactsToInform.0.identifier": "@1"}, "contactsToInform.0.identifier", id="contact"
    ),
]

DIRECTORY_CASES = [
    pytest.param(CNA, {"name": DROP}, "name", id="cna-name"),
    pytest.param(CNA, {"city": DROP}, "city", id="cna-city"),
    pytest.param(CNA, {"country": DROP}, "country", id="cna-country"),
    pytest.param(CNA, {"country.identifier": "can"}, "country.identifier", id="cna-country-iso"),
    pytest.param(CNA, {"phones": []}, "phones", id="cna-phones-empty"),
    pytest.param(CNA, {"phones": DROP}, "phones", id="cna-phones"),
    pytest.param(CNA, {"emails": DROP}, "emails", id="cna-emails"),
    pytest.param(CNA, {"emails": []}, "emails", id="cna-emails-empty"),
    pytest.param(CNA, {"emails": ["email@cbd.int", "nope"]}, "emails.1", id="cna-email-syntax"),
    pytest.param(CNA, {"responsibleForAll": DROP}, "responsibleForAll", id="cna-all"),
    pytest.param(CNA, {"responsibilities": DROP}, "responsibilities", id="cna-responsibilities"),
    pytest.param(CNA, {"responsibilities": {"en": "y" * 301}}, "responsibilities", id="cna-301"),
    pytest.param(CNA, {"contacts.0.identifier": "a@b"}, "contacts.0.identifier", id="cna-ref"),
    pytest.param("contact_person", {"type": DROP}, "type", id="contact-type"),
    pytest.param("contact_person", {"type": "robot"}, "type", id="contact-type-value"),
    pytest.param("contact_person", {"firstName": DROP}, "firstName", id="person-first"),
    pytest.param("contact_person", {"lastName": "  "}, "lastName", id="person-last"),
    pytest.param("contact_person", {"emails": DROP}, "emails", id="person-emails"),
    pytest.param("contact_person", {"emails": ["a@b"]}, "emails.0", id="person-email-syntax"),
    pytest.param(
        "contact_organization", {"organization": DROP}, "organization", id="org-organization"
    ),
    pytest.param("contact_organization", {"country": DROP}, "country", id="org-country"),
    pytest.param("focal_point", {"emails": DROP}, "emails", id="nfp-emails"),
    pytest.param("focal_point", {"government": DROP}, "government", id="nfp-government"),
]

# Text hygiene and date plausibility (one-line fields refuse line breaks; dates 1900-2200).
HYGIENE_CASES = [
    pytest.param(
        IRCC_01, {"title": {"en": "a\r\nBcc: x@evil.example"}}, "title.en", id="title-crlf"
    ),
    pytest.param(IRCC_01, {"title": {"en": "tab\there"}}, "title.en", id="title-tab"),
    pytest.param(IRCC_01, {"title": {"en": "line\u2028sep"}}, "title.en", id="title-u2028"),
    pytest.param(IRCC_01, {"notes": "bell\u0007"}, "notes", id="notes-control"),
    pytest.param(IRCC_01, {"dateOfIssuance": "0001-01-01"}, "dateOfIssuance", id="issued-0001"),
    pytest.param(IRCC_01, {"dateOfExpiry": "9999-12-31"}, "dateOfExpiry", id="expiry-9999"),
    pytest.param(IRCC_01, {"dateOfIssuance": "1899-12-31"}, "dateOfIssuance", id="issued-1899"),
    pytest.param(CPC, {"dateCollected": "9999-12-31"}, "dateCollected", id="collected-9999"),
    pytest.param(CPC, {"dateCollected": "0001-01-01"}, "dateCollected", id="collected-0001"),
    pytest.param(CPC, {"dateOfAccess": "2201-01-01"}, "dateOfAccess", id="access-2201"),
    pytest.param("contact_person", {"firstName": "Ann\nBcc: x"}, "firstName", id="first-lf"),
    pytest.param("contact_organization", {"phones": ["+1\r\n2"]}, "phones.0", id="phone-crlf"),
]


@pytest.mark.parametrize(
    ("name", "changes", "field"),
    IRCC_CASES + CPC_CASES + CP_CASES + DIRECTORY_CASES + HYGIENE_CASES,
)
def test_rule_violation_names_the_field(name, changes, field):
    assert failing_fields(variant(name, changes)) == [field]


def test_multi_line_fields_keep_their_line_breaks():
    text = "first line\r\nsecond line\n\tindented"
    record = parse_record(variant(IRCC_01, {"notes": text, "permitDescription": {"en": text}}))
    assert record.dump()["notes"] == text
    address = {"en": "Building 2\nMain street 1"}
    contact = parse_record(variant("contact_organization", {"address": address}))
    assert contact.dump()["address"] == address


def test_the_edges_of_the_plausible_dates_pass():
    edges = {"dateOfIssuance": "1900-01-01", "dateOfExpiry": "2200-12-31"}
    record = parse_record(variant(IRCC_01, edges))
    assert record.dump()["dateOfExpiry"] == "2200-12-31"


def test_rule_violations_are_reported_together():
    data = variant(CPC, {"absIRCCs": DROP, "dateCollected": DROP, "dateCollectedTo": DROP})
    assert sorted(failing_fields(data)) == ["absIRCCs", "dateCollectedTo"]


def test_wrong_model_for_the_schema():
    with pytest.raises(ValidationError) as info:
        AbsPermit.model_validate(load(CPC))
    assert "header.schema" in [error["field"] for error in record_errors(info.value)]


def test_record_errors_shape():
    with pytest.raises(ValidationError) as info:
        parse_record(variant(CPC, {"absIRCCs.0.identifier": "x@0"}))
    assert record_errors(info.value) == [
        {
            "field": "absIRCCs.0.identifier",
            "message": "revision in reference 'x@0' must be a positive integer",
        }
    ]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([1], ROOT_FIELD),
        ({"header": {"schema": "meeting"}}, "header.schema"),
        ({}, "header.schema"),
    ],
)
def test_parse_record_rejects_unknown_input(data, field):
    assert failing_fields(data) == [field]


# --- normalisations and helpers ------------------------------------------------------------


def test_empty_expiry_date_becomes_absent():
    record = parse_record(variant(IRCC_01, {"dateOfExpiry": ""}))
    assert "dateOfExpiry" not in record.dump()


def test_keyword_other_is_kept_only_with_the_other_keyword():
    other = {"keywordOther": {"en": "Soil microbes"}}
    assert "keywordOther" not in parse_record(variant(IRCC_02, other)).dump()
    chosen = variant(IRCC_02, {**other, "keywords": [{"identifier": KEYWORD_OTHER}]})
    assert parse_record(chosen).dump()["keywordOther"] == {"en": "Soil microbes"}


def test_government_is_normalised_to_lower_case():
    record = parse_record(variant(IRCC_01, {"government.identifier": "AF"}))
    assert record.dump()["government"] == {"identifier": "af"}
    assert record.government_code() == "af"


def test_cpc_ircc_branch_keeps_no_ircc_fields_and_names_them():
    extra = cpc_without_ircc()
    data = load(CPC)
    mixed = [field for field in NO_IRCC_BRANCH_FIELDS if field in extra]
    data.update({field: extra[field] for field in mixed})
    record = parse_record(data)
    assert isinstance(record, AbsCheckpointCommunique)
    assert record.cites_irccs()
    assert record.dump() == data
    assert record.mixed_branch_fields() == mixed
    clean = parse_record(load(CPC))
    assert isinstance(clean, AbsCheckpointCommunique)
    assert clean.mixed_branch_fields() == []
    # On its own branch the same evidence is no mix.
    without = parse_record(extra)
    assert isinstance(without, AbsCheckpointCommunique)
    assert without.mixed_branch_fields() == []


def test_cpc_without_ircc_keeps_its_evidence_and_flags_own_country():
    record = parse_record(cpc_without_ircc())
    assert isinstance(record, AbsCheckpointCommunique)
    assert record.dump() == cpc_without_ircc()
    assert not record.own_country_in_sources()
    own = parse_record(variant("cpc_without_ircc", {"sourceCountries": [{"identifier": "AF"}]}))
    assert isinstance(own, AbsCheckpointCommunique)
    assert own.own_country_in_sources()


def test_unknown_and_legacy_fields_survive_a_round_trip():
    legacy = {
        "amendmentsDescription": {"en": "obsolete field"},
        "updateReasons": [{"identifier": "X"}],
        "absCNA": {"identifier": "C84C7E6C-134C-F1B1-9A3B-B7443F135239@1", "extra": 1},
    }
    data = variant(IRCC_01, legacy)
    assert parse_record(data).dump() == data


def test_emails_and_languages():
    person = parse_record(contact_person())
    assert isinstance(person, Contact)
    assert person.emails() == ["jane@example.org", "other@example.org"]
    assert person.languages() == ["fr", "en"]
    cna = parse_record(load(CNA))
    assert isinstance(cna, Authority)
    assert cna.emails() == ["email@cbd.int"]
    assert parse_record(load(IRCC_02)).emails() == []


def test_contact_government_is_optional():
    record = parse_record(contact_person())
    assert record.government_code() is None
    assert "government" not in record.dump()


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ({}, True),
        ({"categories": []}, True),
        ({"categories": ["CBD-FP1"]}, False),
        ({"type": "NP-FP"}, True),
        ({"type": ["abs-fp"], "categories": ["CBD-FP1"]}, True),
        ({"type": ["CBD-FP2"]}, False),
    ],
)
def test_focal_point_is_abs_nfp(codes, expected):
    record = parse_record({**focal_point(), **codes})
    assert isinstance(record, FocalPoint)
    assert record.is_abs_nfp() is expected
    assert record.dump() == {**focal_point(), **codes}


# --- confidentiality [P1] --------------------------------------------------------------------


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=4)))
def test_strip_confidential_removes_exactly_the_flagged_groups(flags):
    changes = dict(zip(CONFIDENTIAL_GROUPS.values(), flags, strict=True))
    data = variant(IRCC_02, changes)
    record = parse_record(data)
    assert isinstance(record, AbsPermit)
    stripped = record.strip_confidential().dump()
    flagged = {group for group, on in zip(CONFIDENTIAL_GROUPS, flags, strict=True) if on}
    assert set(data) - set(stripped) == flagged | {"notes"}
    assert all(stripped[key] == data[key] for key in stripped)
    assert record.dump() == data  # the original is untouched
    assert parse_record(stripped).dump() == stripped


def test_strip_confidential_on_a_record_without_flagged_content():
    record = parse_record(load(IRCC_01))
    assert isinstance(record, AbsPermit)
    assert record.strip_confidential().dump() == load(IRCC_01)
    assert record.confidential_groups() == list(CONFIDENTIAL_GROUPS)


def test_reference_parts():
    record = parse_record(load(IRCC_01))
    assert isinstance(record, AbsPermit)
    assert record.absCNA.record_id == "C84C7E6C-134C-F1B1-9A3B-B7443F135239"
    assert record.absCNA.revision == 1
