"""IRCC state folding and the CPC-versus-IRCC rules of DESIGN.md §6."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.monitor.commercial import COMMERCIAL_TERM, NON_COMMERCIAL_TERM
from services.monitor.domain import (
    CheckpointState,
    Finding,
    IrccState,
    Rule,
    apply_ircc_event,
    diff_findings,
    finding_id,
)
from services.monitor.rules import evaluate, pending_unknown

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=15)
LONG_AGO = NOW - timedelta(hours=2)
CPC_UID = "ABSCH-CPC-DE-1001-1"
IRCC_ID = "CB51626B-CF45-2AA0-3A24-459669DDCC34"
CP_ID = "3E387C20-E70C-997B-EABB-BC4C9A1E142F"
HOLDER = "DECLARE-ORGANISATION_3386_20240709020251617"
STRANGER = "DECLARE-ORGANISATION_19584_20241007134350919"
TRANSFER = {"en": "No transfer to third parties without consent"}
CHECKPOINTS = {CP_ID: CheckpointState(CP_ID, "de", published=True)}


def ircc_record(**overrides: Any) -> dict[str, Any]:
    """An IRCC revision body; an override of ``None`` removes the field."""
    record: dict[str, Any] = {
        "header": {"identifier": IRCC_ID, "schema": "absPermit", "languages": ["en"]},
        "government": {"identifier": "mx"},
        "absCNA": {"identifier": "C84C7E6C-134C-F1B1-9A3B-B7443F135239@1"},
        "title": {"en": "permit 42"},
        "dateOfIssuance": "2024-01-10",
        "dateOfExpiry": "2024-12-31",
        "picGranted": True,
        "matEstablished": True,
        "entitiesToWhomPICGranted": [{"identifier": f"{HOLDER}@1"}],
        "usages": [{"identifier": COMMERCIAL_TERM}],
        "thirdPartyTransferCondition": TRANSFER,
    }
    record.update(overrides)
    return {key: value for key, value in record.items() if value is not None}


def ircc_event(
    revision: int = 1, event_type: str | None = None, **overrides: Any
) -> tuple[str, dict[str, Any]]:
    kind = event_type or ("ircc.published" if revision == 1 else "ircc.amended")
    data = {
        "uid": f"ABSCH-IRCC-MX-207443-{revision}",
        "identifier": IRCC_ID,
        "document_id": 207443,
        "revision": revision,
        "government": "mx",
        "reason": {"en": f"reason {revision}"} if revision > 1 else None,
        "record": ircc_record(**overrides),
    }
    return kind, data


def fold(*events: tuple[str, dict[str, Any]]) -> IrccState:
    state: IrccState | None = None
    for event_type, data in events:
        state = apply_ircc_event(state, event_type, data)
    assert state is not None
    return state


def cpc_record(**overrides: Any) -> dict[str, Any]:
    """A CPC of the IRCC branch citing revision 1; an override of ``None`` removes the field."""
    record: dict[str, Any] = {
        "header": {"identifier": "63B9CA56", "schema": "absCheckpointCommunique"},
        "government": {"identifier": "de"},
        "title": {"en": "Test Title"},
        "absCheckpoints": [{"identifier": f"{CP_ID}@1"}],
        "absIRCCsNotAvailable": False,
        "absIRCCs": [{"identifier": f"{IRCC_ID}@1"}],
        "description": {"en": "<div>Taxonomic research on ants</div>"},
        "personsAtCheckpoint": [{"identifier": f"{HOLDER}@1"}],
        "dateCollected": "2024-10-26",
    }
    record.update(overrides)
    return {key: value for key, value in record.items() if value is not None}


def no_ircc_cpc(**overrides: Any) -> dict[str, Any]:
    base = {
        "absIRCCsNotAvailable": True,
        "absIRCCs": None,
        "personsAtCheckpoint": None,
        "sourceCountries": [{"identifier": "za"}, {"identifier": "na"}],
        "subjectMatter": {"en": "ants"},
    }
    return cpc_record(**{**base, **overrides})


def run(
    cpc: dict[str, Any],
    *states: IrccState,
    checkpoints: dict[str, CheckpointState] | None = None,
    received_at: datetime = LONG_AGO,
) -> list[Finding]:
    return evaluate(
        CPC_UID,
        cpc,
        irccs={state.identifier: state for state in states},
        checkpoints=CHECKPOINTS if checkpoints is None else checkpoints,
        received_at=received_at,
        now=NOW,
        grace=GRACE,
    )


def only(findings: list[Finding], rule: Rule) -> Finding:
    matching = [finding for finding in findings if finding.rule == rule]
    assert len(matching) == 1, findings
    return matching[0]


def rules_of(findings: list[Finding]) -> set[str]:
    return {finding.rule for finding in findings}


# --- IRCC state --------------------------------------------------------------------------


def test_published_event_builds_state() -> None:
    state = fold(ircc_event(1))

    assert (state.identifier, state.government, state.document_id) == (IRCC_ID, "mx", 207443)
    assert (state.latest_revision, state.revoked) == (1, False)
    assert state.uid(1) == "ABSCH-IRCC-MX-207443-1"
    assert state.uid() == "ABSCH-IRCC-MX-207443"
    assert state.date_of_expiry() == date(2024, 12, 31)
    assert state.pic_holders() == [HOLDER]
    assert state.usages() == {COMMERCIAL_TERM}


def test_confidential_groups_read_as_none() -> None:
    state = fold(
        ircc_event(
            1,
            entitiesToWhomPICGranted=None,
            entitiesToWhomPICGrantedConfidential=True,
            usages=None,
            usagesConfidential=True,
            dateOfExpiry="",
        )
    )

    assert state.pic_holders() is None
    assert state.usages() is None
    assert state.date_of_expiry() is None


def test_same_event_twice_is_idempotent() -> None:
    event = ircc_event(1)

    assert fold(event, event) == fold(event)


def test_late_lower_revision_does_not_roll_back() -> None:
    state = fold(ircc_event(2, dateOfExpiry="2030-01-01"), ircc_event(1))

    assert state.latest_revision == 2
    assert state.date_of_expiry() == date(2030, 1, 1)
    assert state.revision(1) is not None
    assert state.revision(1) == fold(ircc_event(1)).latest()


def test_revocation_is_sticky_and_sets_intent() -> None:
    revoke = ircc_event(3, "ircc.revoked")
    state = fold(revoke, ircc_event(1), ircc_event(2))

    assert state.revoked is True
    assert state.latest_revision == 3
    assert state.latest()["amendmentIntent"] == 1
    assert state.latest()["amendmentDescription"] == {"en": "reason 3"}
    assert state.revoked_in() == 3


def test_amendment_intent_one_revokes_whatever_the_event_type() -> None:
    assert fold(ircc_event(1), ircc_event(2, amendmentIntent=1)).revoked is True


def test_state_does_not_alias_the_event_payload() -> None:
    kind, data = ircc_event(1)
    state = apply_ircc_event(None, kind, data)
    data["record"]["dateOfExpiry"] = "1999-01-01"

    assert state.date_of_expiry() == date(2024, 12, 31)


@pytest.mark.parametrize(
    ("event_type", "change"),
    [
        ("ircc.deleted", {}),
        ("ircc.amended", {"revision": 0}),
        ("ircc.amended", {"identifier": "OTHER"}),
        ("ircc.amended", {"government": None, "record": {}}),
    ],
)
def test_bad_events_are_rejected(event_type: str, change: dict[str, Any]) -> None:
    state = fold(ircc_event(1))
    data = {**ircc_event(2)[1], **change}

    with pytest.raises(ValueError, match=r"IRCC|event"):
        apply_ircc_event(state, event_type, data)


# --- IRCC_UNKNOWN --------------------------------------------------------------------------


def test_clean_cpc_has_no_findings() -> None:
    assert run(cpc_record(), fold(ircc_event(1))) == []


def test_unknown_ircc_is_pending_inside_grace() -> None:
    cpc = cpc_record()
    received = NOW - timedelta(minutes=5)

    assert run(cpc, received_at=received) == []
    pending = pending_unknown(
        cpc, irccs={}, checkpoints=CHECKPOINTS, received_at=received, now=NOW, grace=GRACE
    )
    assert pending == [f"{IRCC_ID}@1"]


def test_unknown_ircc_is_flagged_after_grace() -> None:
    cpc = cpc_record()

    finding = only(run(cpc, received_at=NOW - GRACE), Rule.IRCC_UNKNOWN)

    assert finding.ircc_uid == f"{IRCC_ID}@1"
    assert finding.provider_country is None
    assert finding.user_country == "de"
    assert finding.evidence == {"reference": f"{IRCC_ID}@1", "cited_revision": 1}
    assert (
        pending_unknown(
            cpc, irccs={}, checkpoints=CHECKPOINTS, received_at=LONG_AGO, now=NOW, grace=GRACE
        )
        == []
    )


def test_pinned_revision_not_yet_seen_is_unknown() -> None:
    cpc = cpc_record(absIRCCs=[{"identifier": f"{IRCC_ID}@2"}])
    state = fold(ircc_event(1))

    assert run(cpc, state, received_at=NOW) == []
    finding = only(run(cpc, state), Rule.IRCC_UNKNOWN)
    assert finding.provider_country == "mx"
    assert rules_of(run(cpc, fold(ircc_event(1), ircc_event(2)))) == set()


def test_unknown_clears_when_the_ircc_appears() -> None:
    before = run(cpc_record())
    after = run(cpc_record(), fold(ircc_event(1)))

    to_flag, to_clear = diff_findings(before, after)

    assert to_flag == []
    assert [finding.rule for finding in to_clear] == [Rule.IRCC_UNKNOWN]


# --- IRCC_REVOKED / IRCC_SUPERSEDED ---------------------------------------------------------


def test_revoked_ircc_is_flagged_with_reason() -> None:
    state = fold(ircc_event(1), ircc_event(2, "ircc.revoked"))

    findings = run(cpc_record(absIRCCs=[{"identifier": IRCC_ID}]), state)

    finding = only(findings, Rule.IRCC_REVOKED)
    assert finding.ircc_uid == "ABSCH-IRCC-MX-207443"
    assert finding.evidence["revoked_uid"] == "ABSCH-IRCC-MX-207443-2"
    assert finding.evidence["reason"] == {"en": "reason 2"}


def test_revoked_pin_is_not_also_superseded() -> None:
    state = fold(ircc_event(1), ircc_event(2, "ircc.revoked"))

    assert rules_of(run(cpc_record(), state)) == {Rule.IRCC_REVOKED}


def test_valid_ircc_is_not_revoked() -> None:
    assert Rule.IRCC_REVOKED not in rules_of(run(cpc_record(), fold(ircc_event(1))))


def test_pin_to_old_revision_is_superseded() -> None:
    state = fold(ircc_event(1), ircc_event(2))

    finding = only(run(cpc_record(), state), Rule.IRCC_SUPERSEDED)

    assert finding.ircc_uid == "ABSCH-IRCC-MX-207443-1"
    assert finding.evidence["latest_uid"] == "ABSCH-IRCC-MX-207443-2"
    assert finding.evidence["cited_revision"] == 1


@pytest.mark.parametrize("reference", [IRCC_ID, f"{IRCC_ID}@2"])
def test_unpinned_or_latest_reference_is_not_superseded(reference: str) -> None:
    state = fold(ircc_event(1), ircc_event(2))

    assert run(cpc_record(absIRCCs=[{"identifier": reference}]), state) == []


# --- IRCC_EXPIRED --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["dateCollected", "dateCollectedFrom", "dateCollectedTo", "dateOfAccess"]
)
def test_date_after_expiry_is_flagged(field: str) -> None:
    cpc = cpc_record(**{"dateCollected": None, field: "2025-01-01"})

    finding = only(run(cpc, fold(ircc_event(1))), Rule.IRCC_EXPIRED)

    assert finding.evidence["dates"] == {field: "2025-01-01"}
    assert finding.evidence["dateOfExpiry"] == "2024-12-31"


@pytest.mark.parametrize(
    "field", ["dateCollected", "dateCollectedFrom", "dateCollectedTo", "dateOfAccess"]
)
def test_date_on_or_before_expiry_is_fine(field: str) -> None:
    cpc = cpc_record(**{"dateCollected": None, field: "2024-12-31"})

    assert run(cpc, fold(ircc_event(1))) == []


def test_ircc_without_expiry_never_expires() -> None:
    cpc = cpc_record(dateOfAccess="2099-01-01")

    assert run(cpc, fold(ircc_event(1, dateOfExpiry=None))) == []


def test_expiry_is_read_from_the_latest_revision() -> None:
    state = fold(ircc_event(1), ircc_event(2, dateOfExpiry="2030-01-01"))
    cpc = cpc_record(absIRCCs=[{"identifier": IRCC_ID}], dateCollected="2025-06-01")

    assert run(cpc, state) == []


# --- USE_MISMATCH --------------------------------------------------------------------------

NON_COMMERCIAL_ONLY = [{"identifier": NON_COMMERCIAL_TERM}]


def test_commercial_use_against_non_commercial_ircc_is_flagged() -> None:
    cpc = cpc_record(description={"fr": "<p>Mise sur le marché d'un cosmétique.</p>"})

    finding = only(run(cpc, fold(ircc_event(1, usages=NON_COMMERCIAL_ONLY))), Rule.USE_MISMATCH)

    assert finding.evidence["quote"] == "Mise sur le marché d'un cosmétique."
    assert finding.evidence["language"] == "fr"
    assert finding.evidence["usages"] == [NON_COMMERCIAL_TERM]


@pytest.mark.parametrize(
    ("description", "usages"),
    [
        ("Commercial use of extracts", [{"identifier": COMMERCIAL_TERM}]),
        ("Non-commercial research", NON_COMMERCIAL_ONLY),
        ("Taxonomic research", NON_COMMERCIAL_ONLY),
    ],
)
def test_use_consistent_with_ircc_is_fine(description: str, usages: list[Any]) -> None:
    cpc = cpc_record(description={"en": description})

    assert run(cpc, fold(ircc_event(1, usages=usages))) == []


def test_use_check_is_skipped_when_usages_are_confidential() -> None:
    state = fold(ircc_event(1, usages=None, usagesConfidential=True))
    cpc = cpc_record(description={"en": "Commercial use of extracts"})

    assert run(cpc, state) == []


# --- PIC_HOLDER_MISMATCH / CANNOT_VERIFY ---------------------------------------------------


def test_person_who_is_not_a_pic_holder_is_flagged() -> None:
    cpc = cpc_record(personsAtCheckpoint=[{"identifier": f"{STRANGER}@1"}])

    finding = only(run(cpc, fold(ircc_event(1))), Rule.PIC_HOLDER_MISMATCH)

    assert finding.evidence["notPicHolders"] == [STRANGER]
    assert finding.evidence["picHolders"] == [HOLDER]
    assert finding.evidence["thirdPartyTransferCondition"] == TRANSFER
    assert finding.provider_country == "mx"


def test_pic_holder_at_checkpoint_is_fine_whatever_the_pinned_revision() -> None:
    cpc = cpc_record(personsAtCheckpoint=[{"identifier": f"{HOLDER}@7"}])

    assert run(cpc, fold(ircc_event(1))) == []


def test_confidential_holder_cannot_be_verified() -> None:
    state = fold(
        ircc_event(1, entitiesToWhomPICGranted=None, entitiesToWhomPICGrantedConfidential=True)
    )

    finding = only(run(cpc_record(), state), Rule.CANNOT_VERIFY)

    assert finding.evidence["reason"] == "entitiesToWhomPICGrantedConfidential"
    assert Rule.PIC_HOLDER_MISMATCH not in rules_of(run(cpc_record(), state))


def test_nothing_to_verify_without_persons_at_checkpoint() -> None:
    state = fold(
        ircc_event(1, entitiesToWhomPICGranted=None, entitiesToWhomPICGrantedConfidential=True)
    )

    assert run(cpc_record(personsAtCheckpoint=None), state) == []


# --- PROVIDER_MISMATCH ---------------------------------------------------------------------


def test_source_country_other_than_ircc_government_is_flagged() -> None:
    cpc = cpc_record(sourceCountries=[{"identifier": "BR"}])

    finding = only(run(cpc, fold(ircc_event(1))), Rule.PROVIDER_MISMATCH)

    assert finding.evidence["sourceCountries"] == ["br"]
    assert finding.evidence["ircc_government"] == "mx"


@pytest.mark.parametrize("countries", [None, [], [{"identifier": "mx"}, {"identifier": "br"}]])
def test_matching_or_absent_source_countries_are_fine(countries: list[Any] | None) -> None:
    assert run(cpc_record(sourceCountries=countries), fold(ircc_event(1))) == []


# --- CHECKPOINT_UNKNOWN --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "reason"),
    [
        (CheckpointState(CP_ID, "de", published=False), "not published"),
        (CheckpointState(CP_ID, "fr", published=True), "other government"),
    ],
)
def test_unusable_checkpoint_is_flagged(checkpoint: CheckpointState, reason: str) -> None:
    findings = run(cpc_record(), fold(ircc_event(1)), checkpoints={CP_ID: checkpoint})

    finding = only(findings, Rule.CHECKPOINT_UNKNOWN)
    assert finding.ircc_uid is None
    assert finding.evidence["checkpoints"][0]["reason"] == reason


def test_missing_checkpoint_waits_for_the_grace_period() -> None:
    cpc = cpc_record()
    state = fold(ircc_event(1))

    assert run(cpc, state, checkpoints={}, received_at=NOW) == []
    pending = pending_unknown(
        cpc, irccs={IRCC_ID: state}, checkpoints={}, received_at=NOW, now=NOW, grace=GRACE
    )
    assert pending == [f"{CP_ID}@1"]
    finding = only(run(cpc, state, checkpoints={}), Rule.CHECKPOINT_UNKNOWN)
    assert finding.evidence["checkpoints"] == [{"reference": f"{CP_ID}@1", "reason": "unknown"}]


def test_published_checkpoint_of_the_cpc_government_is_fine() -> None:
    assert Rule.CHECKPOINT_UNKNOWN not in rules_of(run(cpc_record(), fold(ircc_event(1))))


# --- NO_EVIDENCE ---------------------------------------------------------------------------


def test_no_ircc_and_no_evidence_is_flagged() -> None:
    blank = {"en": "<div><!--block--></div>"}

    finding = only(run(no_ircc_cpc(evidenceOfPIC=blank)), Rule.NO_EVIDENCE)

    assert finding.provider_country == "za"
    assert finding.ircc_uid is None
    assert finding.evidence["sourceCountries"] == ["za", "na"]


@pytest.mark.parametrize(
    "evidence",
    [
        {"evidenceOfPIC": {"en": "Permit 12/2024"}},
        {"evidenceOfMAT": {"fr": "Contrat signé"}},
        {"entityWhoGrantedPIC": {"identifier": "AUTH-1@1"}},
    ],
)
def test_no_ircc_with_some_evidence_is_fine(evidence: dict[str, Any]) -> None:
    assert run(no_ircc_cpc(**evidence)) == []


def test_ircc_branch_never_needs_other_evidence() -> None:
    assert Rule.NO_EVIDENCE not in rules_of(run(cpc_record(), fold(ircc_event(1))))


# --- ids and diffs -------------------------------------------------------------------------


def test_finding_id_is_a_truncated_sha256() -> None:
    text = f"{CPC_UID}|IRCC_SUPERSEDED|ABSCH-IRCC-MX-207443-1"
    expected = hashlib.sha256(text.encode()).hexdigest()[:32]

    finding = only(run(cpc_record(), fold(ircc_event(1), ircc_event(2))), Rule.IRCC_SUPERSEDED)

    assert finding.id == expected
    assert finding_id(CPC_UID, "NO_EVIDENCE", None) == finding_id(CPC_UID, "NO_EVIDENCE", "")
    assert len(finding.id) == 32


def test_evaluation_is_deterministic() -> None:
    cpc = cpc_record(personsAtCheckpoint=[{"identifier": STRANGER}], dateOfAccess="2025-02-02")
    state = fold(ircc_event(1), ircc_event(2))

    first, second = run(cpc, state), run(cpc, state)

    assert first == second
    assert [f.id for f in first] == [f.id for f in second]
    assert rules_of(first) == {Rule.IRCC_SUPERSEDED, Rule.IRCC_EXPIRED, Rule.PIC_HOLDER_MISMATCH}


def test_to_data_matches_the_discrepancy_payload() -> None:
    finding = only(run(no_ircc_cpc()), Rule.NO_EVIDENCE)

    data = finding.to_data()

    assert data["id"] == finding.id
    assert data["rule"] == "NO_EVIDENCE"
    assert data["user_country"] == "de"


def test_diff_flags_new_and_changed_and_clears_gone_findings() -> None:
    kept = Finding("IRCC_REVOKED", CPC_UID, "U-1", "mx", "de", {"a": 1})
    changed_old = Finding("IRCC_EXPIRED", CPC_UID, "U-1", "mx", "de", {"d": "2025-01-01"})
    changed_new = Finding("IRCC_EXPIRED", CPC_UID, "U-1", "mx", "de", {"d": "2025-02-01"})
    gone = Finding("IRCC_UNKNOWN", CPC_UID, "X@1", None, "de", {})
    new = Finding("USE_MISMATCH", CPC_UID, "U-1", "mx", "de", {})

    to_flag, to_clear = diff_findings([gone, changed_old, kept], [new, kept, changed_new])
    again = diff_findings([kept, changed_old, gone], [changed_new, kept, new])

    assert sorted(f.id for f in to_flag) == sorted([new.id, changed_new.id])
    assert to_clear == [gone]
    assert (to_flag, to_clear) == again


# --- order independence --------------------------------------------------------------------

_REVISION_BODIES = st.fixed_dictionaries(
    {
        "dateOfExpiry": st.sampled_from([None, "2024-06-30", "2030-01-01"]),
        "usages": st.sampled_from([[{"identifier": COMMERCIAL_TERM}], NON_COMMERCIAL_ONLY, None]),
        "entitiesToWhomPICGranted": st.sampled_from(
            [[{"identifier": HOLDER}], [{"identifier": f"{STRANGER}@2"}], None]
        ),
        "entitiesToWhomPICGrantedConfidential": st.sampled_from([None, True]),
        "usagesConfidential": st.sampled_from([None, True]),
        "amendmentIntent": st.sampled_from([None, 0, 1]),
    }
)
_EVENTS = st.lists(
    st.tuples(st.integers(min_value=1, max_value=4), _REVISION_BODIES, st.booleans()),
    min_size=1,
    max_size=6,
)
_PROPERTY_CPC = cpc_record(
    absIRCCs=[
        {"identifier": f"{IRCC_ID}@1"},
        {"identifier": IRCC_ID},
        {"identifier": f"{IRCC_ID}@3"},
    ],
    personsAtCheckpoint=[{"identifier": HOLDER}],
    description={"en": "Product development of a cosmetic"},
    dateCollectedTo="2025-01-15",
    sourceCountries=[{"identifier": "br"}],
)


def _to_event(spec: tuple[int, dict[str, Any], bool]) -> tuple[str, dict[str, Any]]:
    revision, body, revoke = spec
    return ircc_event(revision, "ircc.revoked" if revoke else None, **body)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fold_is_order_independent(data: st.DataObject) -> None:
    events = [_to_event(spec) for spec in data.draw(_EVENTS, label="events")]
    shuffled = data.draw(st.permutations(events), label="order")
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=3), label="repeats")

    first = fold(*events)
    second = fold(*shuffled, *repeats)

    assert first == second
    assert run(_PROPERTY_CPC, first) == run(_PROPERTY_CPC, second)
    assert first.latest_revision == max(event[1]["revision"] for event in events)
