"""ABSCH validation codes: each failure a record model reports reads as the clearing-house's
validation API writes it, and a record's ``government`` is judged before anything else."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.registry.codes import (
    ABSCH_CODES,
    code_for,
    government_issue,
    record_issues,
    unique,
)
from shared.records import parse_record


@pytest.mark.parametrize(
    ("kind", "loc", "code"),
    [
        ("missing", ("title",), "Error.Mandatory"),
        ("conditional_required", ("providers",), "Error.Mandatory"),
        ("missing_text", ("title",), "Error.Mandatory"),
        ("too_short", ("emails",), "Error.Mandatory"),
        ("too_short", ("header", "languages"), "Error.UnspecifiedLocale"),
        ("literal_error", ("header", "languages", 0), "Error.UnspecifiedLocale"),
        ("lstring_language", ("title",), "Error.UnspecifiedLocale"),
        ("bool_type", ("picGranted",), "Error.InvalidType"),
        ("dict_type", ("title",), "Error.InvalidType"),
        ("int_parsing", ("gisMapCenter", "zoom"), "Error.InvalidType"),
        ("record_type", (), "Error.InvalidType"),
        ("extra_forbidden", ("x",), "Error.InvalidProperty"),
        ("unknown_government", ("government", "identifier"), "Error.UnexpectedTerm"),
        ("must_be_true", ("picGranted",), "Error.InvalidValue"),
        ("one_line", ("title", "en"), "Error.InvalidValue"),
        ("date_range", ("dateOfIssuance",), "Error.InvalidValue"),
        ("record_rule", ("dateOfExpiry",), "Error.InvalidValue"),
        ("record_too_large", (), "Error.InvalidValue"),
    ],
)
def test_each_kind_of_failure_has_its_absch_code(
    kind: str, loc: tuple[str | int, ...], code: str
) -> None:
    assert code_for(kind, loc) == code
    assert code in ABSCH_CODES


def test_record_issues_name_the_path_and_keep_the_models_order() -> None:
    data = {
        "header": {"identifier": "T-0123456789ABCDEF", "schema": "absPermit", "languages": ["en"]},
        "government": {"identifier": "mx"},
        "absCNA": {"identifier": "T-CNA-0123456789"},
        "title": {"en": "one\ntwo"},
        "picGranted": "yes",
        "matEstablished": False,
    }
    with pytest.raises(ValidationError) as caught:
        parse_record(data)
    assert [(i["code"], i["field"]) for i in record_issues(caught.value)] == [
        ("Error.InvalidValue", "title.en"),
        ("Error.Mandatory", "dateOfIssuance"),
        ("Error.InvalidType", "picGranted"),
        ("Error.InvalidValue", "matEstablished"),
    ]


def test_a_fault_found_twice_is_listed_once() -> None:
    first = {"field": "government", "message": "registry", "code": "Error.Mandatory"}
    second = {"field": "government", "message": "model", "code": "Error.Mandatory"}
    other = {"field": "government", "message": "model", "code": "Error.InvalidType"}
    assert unique([first, second, other]) == [first, other]


@pytest.mark.parametrize(
    ("schema", "government", "expected"),
    [
        ("absPermit", None, ("Error.Mandatory", "government")),
        ("authority", {}, ("Error.Mandatory", "government")),
        ("absCheckpoint", {"identifier": " "}, ("Error.Mandatory", "government")),
        ("absPermit", "mx", ("Error.InvalidType", "government")),
        ("absPermit", {"identifier": 52}, ("Error.InvalidType", "government.identifier")),
        ("absPermit", {"identifier": "Mexico"}, ("Error.InvalidValue", "government.identifier")),
        ("absPermit", {"identifier": "zz"}, ("Error.UnexpectedTerm", "government.identifier")),
        ("contact", {"identifier": "zz"}, ("Error.UnexpectedTerm", "government.identifier")),
        ("contact", None, None),
        ("absPermit", {"identifier": "MX"}, None),
        ("focalPoint", {"identifier": "eu"}, None),
    ],
)
def test_the_government_is_judged_first(
    schema: str, government: Any, expected: tuple[str, str] | None
) -> None:
    body: dict[str, Any] = {"header": {"schema": schema}}
    if government is not None:
        body["government"] = government
    found = government_issue(schema, body)
    assert (None if found is None else (found["code"], found["field"])) == expected
