"""Drafts: a record's shape holds when it is saved, its publication rules wait.

``parse_record(..., draft=True)`` accepts what the real clearing-house lets an editor save
(absent fields, PIC not yet granted, a rule still broken) and refuses, as for any record,
what would harm the system: wrong types, line breaks in one-line text, control characters,
implausible dates, oversize fields and records.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.records import (
    KEYWORD_OTHER,
    RECORD_MODELS,
    AbsCheckpointCommunique,
    AbsPermit,
    parse_record,
)
from shared.records.common import MAX_NAME_CHARS, MAX_RECORD_BYTES
from shared.records.countries import ISO_3166_ALPHA2, KNOWN_GOVERNMENTS, is_known_government
from shared.records.drafts import draft_model

DRAFT_SCHEMAS = sorted(schema for schema, model in RECORD_MODELS.items() if model.DRAFTS)


def bare(schema: str, **fields: Any) -> dict[str, Any]:
    """A record of ``schema`` with nothing but its header and government."""
    header = {"identifier": "T-0123456789ABCDEF", "schema": schema, "languages": ["en"]}
    return {"header": header, "government": {"identifier": "mx"}, **fields}


def kinds(data: dict[str, Any], *, draft: bool = True) -> list[tuple[str, str]]:
    """``(kind, field)`` of each failure of ``data``; empty when it is accepted."""
    try:
        parse_record(data, draft=draft)
    except ValidationError as exc:
        return [(e["type"], ".".join(map(str, e["loc"]))) for e in exc.errors()]
    return []


def test_every_schema_the_registry_keeps_has_drafts_and_cpcs_do_not() -> None:
    assert DRAFT_SCHEMAS == ["absCheckpoint", "absPermit", "authority", "contact", "focalPoint"]
    assert not AbsCheckpointCommunique.DRAFTS


# A mandatory field of each schema that a bare record lacks.
FIRST_MISSING = {
    "absCheckpoint": "name",
    "absPermit": "absCNA",
    "authority": "name",
    "contact": "type",
    "focalPoint": "emails",
}


@pytest.mark.parametrize("schema", DRAFT_SCHEMAS)
def test_a_bare_draft_is_saved_as_given_and_refused_at_publication(schema: str) -> None:
    data = bare(schema)
    assert parse_record(data, draft=True).dump() == data
    assert ("missing", FIRST_MISSING[schema]) in kinds(data, draft=False)


def test_the_publication_rules_wait_for_the_publication() -> None:
    data = bare(
        "absPermit",
        picGranted=False,
        title={"en": " "},
        providersConfidential=False,
        dateOfIssuance="2025-01-15",
        dateOfExpiry="2024-01-01",
        amendmentIntent=0,
        absCNA=None,
    )
    record = parse_record(data, draft=True)
    assert isinstance(record, AbsPermit)
    assert record.picGranted is False
    assert kinds(data, draft=False) == [
        ("model_type", "absCNA"),
        ("missing_text", "title"),
        ("must_be_true", "picGranted"),
        ("missing", "matEstablished"),
    ]


def test_a_draft_is_normalised_and_stripped_like_any_record() -> None:
    data = bare(
        "absPermit",
        keywords=[{"identifier": "KW-1"}],
        keywordOther={"en": "not chosen"},
        providersConfidential=True,
        providers=[{"identifier": "SECRET-PROVIDER"}],
    )
    record = parse_record(data, draft=True)
    assert isinstance(record, AbsPermit)
    assert "keywordOther" not in record.dump()
    assert "providers" not in record.strip_confidential().dump()
    chosen = data | {"keywords": [{"identifier": KEYWORD_OTHER}]}
    assert parse_record(chosen, draft=True).dump()["keywordOther"] == {"en": "not chosen"}


SHAPE: list[Any] = [
    pytest.param({"title": {"en": "a\nb"}}, ("one_line", "title.en"), id="one-line"),
    pytest.param({"notes": "bell\x07"}, ("control_character", "notes"), id="control"),
    pytest.param({"dateOfIssuance": "0001-01-01"}, ("date_range", "dateOfIssuance"), id="date"),
    pytest.param({"dateOfExpiry": "15/01/2025"}, ("date_format", "dateOfExpiry"), id="format"),
    pytest.param({"picGranted": "yes"}, ("bool_type", "picGranted"), id="type"),
    pytest.param({"title": {"xx": "t"}}, ("lstring_language", "title"), id="language"),
    pytest.param(
        {"title": {"en": "t" * (MAX_NAME_CHARS + 1)}}, ("string_too_long", "title.en"), id="long"
    ),
    pytest.param({"usages": [{"identifier": ""}]}, ("blank", "usages.0.identifier"), id="blank"),
    pytest.param({"absCNA": {"identifier": "a b"}}, ("reference", "absCNA.identifier"), id="ref"),
    pytest.param(
        {"government": {"identifier": "Mexico"}}, ("country", "government.identifier"), id="gov"
    ),
    pytest.param(
        {"header": {"identifier": "T-0123456789ABCDEF", "schema": "absPermit", "languages": []}},
        ("too_short", "header.languages"),
        id="languages",
    ),
    pytest.param(
        {"extra": ["x" * 100_000] * (MAX_RECORD_BYTES // 100_000 + 1)},
        ("record_too_large", ""),
        id="record-size",
    ),
]


@pytest.mark.parametrize(("change", "failure"), SHAPE)
def test_a_draft_keeps_the_shape_every_record_has(
    change: dict[str, Any], failure: tuple[str, str]
) -> None:
    assert kinds(bare("absPermit", **change)) == [failure]


def test_an_explicit_null_is_an_absent_field_in_a_draft() -> None:
    data = bare("authority", name=None, emails=None, phones=[], responsibleForAll=None)
    assert parse_record(data, draft=True).dump() == bare("authority", phones=[])


def test_a_cpc_has_no_drafts_its_rules_always_hold() -> None:
    header = {"identifier": "T-0123456789ABCDEF", "schema": "absCheckpointCommunique"}
    data = {"header": header | {"languages": ["en"]}, "government": {"identifier": "de"}}
    assert kinds(data, draft=True) == kinds(data, draft=False) != []


def test_draft_models_are_built_once() -> None:
    assert draft_model(AbsPermit) is draft_model(AbsPermit)
    assert issubclass(draft_model(AbsPermit), AbsPermit)


def test_the_known_governments_are_iso_3166_and_the_european_union() -> None:
    assert len(ISO_3166_ALPHA2) == 249
    beyond_iso = KNOWN_GOVERNMENTS - ISO_3166_ALPHA2
    assert beyond_iso == {"eu"}
    assert all(is_known_government(code) for code in ("mx", "MX", "br", "eu", "ss", "bq"))
    assert not any(is_known_government(code) for code in ("zz", "xk", "uk", "el", "mex", ""))
