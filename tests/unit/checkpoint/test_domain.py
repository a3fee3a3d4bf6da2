"""Checkpoint rules without I/O: who may submit, body digests, [K1] branch requirements."""

from __future__ import annotations

import pytest

from services.checkpoint.domain import (
    Forbidden,
    body_hash,
    branch_errors,
    check_can_submit,
    check_may_submit_at_all,
    for_publication,
    submission_warnings,
)
from shared.auth import Principal, Role
from shared.records import AbsCheckpointCommunique, parse_record
from tests.support.communiques import communique


def _who(role: Role, gov: str | None = "de", checkpoint: str | None = None) -> Principal:
    return Principal(id=f"u-{role}", role=role, government=gov, checkpoint=checkpoint)


@pytest.mark.parametrize(
    "principal",
    [
        _who(Role.CHECKPOINT, checkpoint="CP-1"),
        _who(Role.CHECKPOINT, checkpoint="CP-2"),
        _who(Role.PA),
        _who(Role.NAU),
    ],
)
def test_operators_of_a_cited_checkpoint_and_the_pa_or_nau_may_submit(principal: Principal) -> None:
    check_may_submit_at_all(principal)
    check_can_submit(principal, "de", ["CP-1", "CP-2"])


@pytest.mark.parametrize(
    ("principal", "government", "checkpoints"),
    [
        (_who(Role.PA, "fr"), "de", ["CP-1"]),
        (_who(Role.NAU, "fr"), "de", ["CP-1"]),
        (_who(Role.CHECKPOINT, checkpoint="CP-9"), "de", ["CP-1"]),
        (_who(Role.CHECKPOINT, "fr", checkpoint="CP-1"), "de", ["CP-1"]),
        (_who(Role.CHECKPOINT, checkpoint=None), "de", ["CP-1"]),
        (_who(Role.CNA), "de", ["CP-1"]),
        (_who(Role.NFP), "de", ["CP-1"]),
        (_who(Role.ADMIN, None), "de", ["CP-1"]),
    ],
)
def test_everyone_else_is_refused(
    principal: Principal, government: str, checkpoints: list[str]
) -> None:
    with pytest.raises(Forbidden):
        check_can_submit(principal, government, checkpoints)


@pytest.mark.parametrize("role", [Role.CNA, Role.NFP, Role.ADMIN])
def test_roles_that_never_submit_are_refused_before_the_body_is_read(role: Role) -> None:
    with pytest.raises(Forbidden):
        check_may_submit_at_all(_who(role))


def test_body_hash_ignores_key_order_but_not_values() -> None:
    assert body_hash({"a": 1, "b": [1, 2]}) == body_hash({"b": [1, 2], "a": 1})
    assert body_hash({"a": 1}) != body_hash({"a": 2})
    assert body_hash({"t": "é"}) == body_hash({"t": "\u00e9"})


def test_notes_never_leave_the_service() -> None:
    assert for_publication({"notes": "internal", "title": {"en": "x"}}) == {"title": {"en": "x"}}


def _fields(body: dict[str, object]) -> set[str]:
    return {e["field"] for e in branch_errors(body)}


def test_valid_bodies_of_both_branches_have_no_branch_errors() -> None:
    assert _fields(communique("de", ["CP-1"], irccs=["IRCC-1"])) == set()
    assert _fields(communique("de", ["CP-1"], source_countries=["br"])) == set()


def test_ircc_branch_requires_ircc_and_collection_date() -> None:
    body = communique("de", ["CP-1"], irccs=[])
    del body["dateCollected"]
    assert _fields(body) == {"absIRCCs", "dateCollected"}


def test_no_ircc_branch_requires_sources_subject_matter_and_a_full_period() -> None:
    body = communique("de", ["CP-1"])
    body |= {"sourceCountries": [], "subjectMatter": {"en": " ", "fr": 3}}
    body |= {"absIRCCs": [{"identifier": "X"}], "dateCollectedTo": "2025-01-01"}
    del body["dateCollected"]
    assert _fields(body) == {"sourceCountries", "subjectMatter", "absIRCCs", "dateCollectedFrom"}


def _warned(body: dict[str, object]) -> list[str]:
    record = parse_record(body)
    assert isinstance(record, AbsCheckpointCommunique)
    return [w["field"] for w in submission_warnings(record)]


def test_no_ircc_evidence_beside_cited_irccs_is_named_in_warnings() -> None:
    clean = communique("de", ["CP-1"], irccs=["IRCC-1"])
    assert _warned(clean) == []
    mixed = clean | {
        "sourceCountries": [{"identifier": "br"}],
        "evidenceOfPIC": {"en": "Permit 12/2024"},
        "subjectMatter": {"en": "<p></p>"},  # no visible text: nothing to warn about
    }
    assert _warned(mixed) == ["sourceCountries", "evidenceOfPIC"]
    # On its own branch the evidence is expected; only the issuing country is worth a word.
    assert _warned(communique("de", ["CP-1"], source_countries=["br"])) == []
    assert _warned(communique("de", ["CP-1"], source_countries=["br", "DE"])) == ["sourceCountries"]
