"""The CPC-versus-IRCC checks of DESIGN.md §6, as a pure function of the known state.

``evaluate`` is called when a CPC arrives and again whenever an IRCC it cites changes or
its grace period ends; :func:`services.monitor.domain.diff_findings` turns two evaluations
into flags and clears. Time is passed in, never read. An IRCC reference counts as resolved
when its record is known and any pinned revision has arrived; content checks read the
latest revision, the only valid certificate [P5].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from services.monitor.commercial import (
    COMMERCIAL_TERM,
    NON_COMMERCIAL_TERM,
    CommercialUse,
    commercial_use,
    plain_text,
)
from services.monitor.domain import (
    CheckpointState,
    Finding,
    IrccState,
    Rule,
    json_copy,
    parse_date,
    reference_ids,
    split_reference,
    term_id,
)

CPC_DATE_FIELDS = ("dateCollected", "dateCollectedFrom", "dateCollectedTo", "dateOfAccess")
_EVIDENCE_FIELDS = ("evidenceOfPIC", "evidenceOfMAT", "entityWhoGrantedPIC")


def evaluate(
    cpc_uid: str,
    cpc: dict[str, Any],
    *,
    irccs: Mapping[str, IrccState],
    checkpoints: Mapping[str, CheckpointState],
    received_at: datetime,
    now: datetime,
    grace: timedelta,
) -> list[Finding]:
    """Every finding that holds for one CPC now, sorted by rule, IRCC uid and id.

    ``irccs`` and ``checkpoints`` are keyed by revision-less ``header.identifier``. Unknown
    IRCCs and checkpoints are reported only once ``now - received_at >= grace``; before that
    they are listed by :func:`pending_unknown`.
    """
    ctx = _Cpc(cpc_uid, cpc, overdue=now - received_at >= grace)
    refs = _ircc_references(cpc)
    findings: list[Finding] = []
    for ref in refs:
        findings.extend(_check_ircc(ctx, ref, irccs))
    findings.extend(_check_checkpoints(ctx, checkpoints))
    if not refs:
        findings.extend(_check_no_ircc_evidence(ctx))
    unique = {finding.id: finding for finding in findings}
    return sorted(unique.values(), key=lambda f: (f.rule, f.ircc_uid or "", f.id))


def pending_unknown(
    cpc: dict[str, Any],
    *,
    irccs: Mapping[str, IrccState],
    checkpoints: Mapping[str, CheckpointState],
    received_at: datetime,
    now: datetime,
    grace: timedelta,
) -> list[str]:
    """Cited IRCC and checkpoint references still unresolved inside the grace period.

    Non-empty means the caller should evaluate the CPC again at ``received_at + grace``
    (or earlier, when one of them appears); empty once the grace period is over.
    """
    if now - received_at >= grace:
        return []
    unresolved = [ref for ref in _ircc_references(cpc) if _resolve(ref, irccs) is None]
    unresolved += [
        ref
        for ref in reference_ids(cpc.get("absCheckpoints"))
        if split_reference(ref)[0] not in checkpoints
    ]
    return unresolved


class _Cpc:
    """One CPC under evaluation, with values that several rules share."""

    def __init__(self, uid: str, record: dict[str, Any], *, overdue: bool) -> None:
        self.uid = uid
        self.record = record
        self.overdue = overdue
        self.user_country = (term_id(record.get("government")) or "").lower()
        self.source_countries = [c.lower() for c in reference_ids(record.get("sourceCountries"))]

    @cached_property
    def use(self) -> CommercialUse | None:
        return commercial_use(self.record)

    @cached_property
    def persons(self) -> list[str]:
        refs = reference_ids(self.record.get("personsAtCheckpoint"))
        return [split_reference(ref)[0] for ref in refs]

    def finding(
        self, rule: Rule, ircc_uid: str | None, provider: str | None, evidence: dict[str, Any]
    ) -> Finding:
        # Evidence may quote state dicts; copy so findings never alias mutable state.
        return Finding(
            rule=rule.value,
            cpc_uid=self.uid,
            ircc_uid=ircc_uid,
            provider_country=provider,
            user_country=self.user_country,
            evidence=json_copy(evidence),
        )


@dataclass(frozen=True)
class _Cited:
    """A resolved IRCC reference: what the CPC wrote and the state it points at."""

    reference: str
    pin: int | None
    state: IrccState

    @property
    def uid(self) -> str:
        # Unpinned references use the permanent link so the id survives new revisions.
        return self.state.uid(self.pin)


def _ircc_references(cpc: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(reference_ids(cpc.get("absIRCCs"))))


def _resolve(ref: str, irccs: Mapping[str, IrccState]) -> _Cited | None:
    identifier, pin = split_reference(ref)
    state = irccs.get(identifier)
    if state is None or (pin is not None and pin > state.latest_revision):
        return None
    return _Cited(ref, pin, state)


def _check_ircc(ctx: _Cpc, ref: str, irccs: Mapping[str, IrccState]) -> list[Finding]:
    cited = _resolve(ref, irccs)
    if cited is None:
        if not ctx.overdue:
            return []
        identifier, pin = split_reference(ref)
        state = irccs.get(identifier)
        provider = state.government if state else None
        # No UID is known for an unknown IRCC: the cited reference stands in for it.
        evidence = {"reference": ref, "cited_revision": pin}
        return [ctx.finding(Rule.IRCC_UNKNOWN, ref, provider, evidence)]
    found = (check(ctx, cited) for check in _IRCC_CHECKS)
    return [finding for finding in found if finding is not None]


def _revoked(ctx: _Cpc, cited: _Cited) -> Finding | None:
    revision = cited.state.revoked_in()
    if not cited.state.revoked or revision is None:
        return None
    body = cited.state.revisions[revision]
    evidence = {
        "reference": cited.reference,
        "revoked_uid": cited.state.uid(revision),
        "reason": body.get("amendmentDescription"),
    }
    return ctx.finding(Rule.IRCC_REVOKED, cited.uid, cited.state.government, evidence)


def _superseded(ctx: _Cpc, cited: _Cited) -> Finding | None:
    # A revocation is also a newer revision; IRCC_REVOKED already says more than this.
    state = cited.state
    if cited.pin is None or cited.pin >= state.latest_revision or state.revoked:
        return None
    evidence = {
        "reference": cited.reference,
        "cited_revision": cited.pin,
        "latest_revision": state.latest_revision,
        "latest_uid": state.uid(state.latest_revision),
    }
    return ctx.finding(Rule.IRCC_SUPERSEDED, cited.uid, state.government, evidence)


def _expired(ctx: _Cpc, cited: _Cited) -> Finding | None:
    expiry = cited.state.date_of_expiry()
    if expiry is None:
        return None
    late: dict[str, Any] = {}
    for name in CPC_DATE_FIELDS:
        day = parse_date(ctx.record.get(name))
        if day is not None and day > expiry:
            late[name] = ctx.record[name]
    if not late:
        return None
    evidence = {"reference": cited.reference, "dateOfExpiry": expiry.isoformat(), "dates": late}
    return ctx.finding(Rule.IRCC_EXPIRED, cited.uid, cited.state.government, evidence)


def _use_mismatch(ctx: _Cpc, cited: _Cited) -> Finding | None:
    usages = cited.state.usages()
    if not usages or COMMERCIAL_TERM in usages or NON_COMMERCIAL_TERM not in usages:
        return None
    use = ctx.use
    if use is None or not use.declared:
        return None
    evidence = {
        "reference": cited.reference,
        "usages": sorted(usages),
        "usagesDescription": cited.state.latest().get("usagesDescription"),
        "source": use.source,
        "quote": use.quote,
        "language": use.language,
    }
    return ctx.finding(Rule.USE_MISMATCH, cited.uid, cited.state.government, evidence)


def _pic_holder(ctx: _Cpc, cited: _Cited) -> Finding | None:
    if not ctx.persons:
        return None
    holders = cited.state.pic_holders()
    government = cited.state.government
    if not holders:
        reason = "entitiesToWhomPICGrantedConfidential" if holders is None else "no PIC holder"
        evidence: dict[str, Any] = {
            "reference": cited.reference,
            "personsAtCheckpoint": ctx.persons,
            "reason": reason,
        }
        return ctx.finding(Rule.CANNOT_VERIFY, cited.uid, government, evidence)
    strangers = [person for person in ctx.persons if person not in holders]
    if not strangers:
        return None
    evidence = {
        "reference": cited.reference,
        "personsAtCheckpoint": ctx.persons,
        "notPicHolders": strangers,
        "picHolders": holders,
        "thirdPartyTransferCondition": cited.state.latest().get("thirdPartyTransferCondition"),
    }
    return ctx.finding(Rule.PIC_HOLDER_MISMATCH, cited.uid, government, evidence)


def _provider(ctx: _Cpc, cited: _Cited) -> Finding | None:
    government = cited.state.government
    if not ctx.source_countries or government.lower() in ctx.source_countries:
        return None
    evidence = {
        "reference": cited.reference,
        "sourceCountries": ctx.source_countries,
        "ircc_government": government,
    }
    return ctx.finding(Rule.PROVIDER_MISMATCH, cited.uid, government, evidence)


_IRCC_CHECKS: tuple[Callable[[_Cpc, _Cited], Finding | None], ...] = (
    _revoked,
    _superseded,
    _expired,
    _use_mismatch,
    _pic_holder,
    _provider,
)


def _check_checkpoints(ctx: _Cpc, checkpoints: Mapping[str, CheckpointState]) -> list[Finding]:
    problems: list[dict[str, Any]] = []
    for ref in dict.fromkeys(reference_ids(ctx.record.get("absCheckpoints"))):
        problem = _checkpoint_problem(ctx, checkpoints.get(split_reference(ref)[0]))
        if problem is not None:
            problems.append({"reference": ref, **problem})
    if not problems:
        return []
    provider = ctx.source_countries[0] if ctx.source_countries else None
    evidence = {"checkpoints": problems}
    return [ctx.finding(Rule.CHECKPOINT_UNKNOWN, None, provider, evidence)]


def _checkpoint_problem(ctx: _Cpc, state: CheckpointState | None) -> dict[str, Any] | None:
    if state is None:
        # Directory and CPC topics are not ordered together: wait like for IRCCs.
        return {"reason": "unknown"} if ctx.overdue else None
    if not state.published:
        return {"reason": "not published"}
    if state.government.lower() != ctx.user_country:
        return {"reason": "other government", "government": state.government}
    return None


def _check_no_ircc_evidence(ctx: _Cpc) -> list[Finding]:
    record = ctx.record
    if _has_text(record.get("evidenceOfPIC")) or _has_text(record.get("evidenceOfMAT")):
        return []
    if reference_ids(record.get("entityWhoGrantedPIC")):
        return []
    provider = ctx.source_countries[0] if ctx.source_countries else None
    evidence: dict[str, Any] = {
        "absIRCCsNotAvailable": record.get("absIRCCsNotAvailable"),
        "sourceCountries": ctx.source_countries,
        "missing": list(_EVIDENCE_FIELDS),
    }
    return [ctx.finding(Rule.NO_EVIDENCE, None, provider, evidence)]


def _has_text(value: Any) -> bool:
    """True when an lstring (or plain string) holds visible text in any language."""
    texts = value.values() if isinstance(value, dict) else [value]
    return any(isinstance(text, str) and plain_text(text) for text in texts)
