"""What the monitor knows about IRCCs and checkpoints, and the findings it raises (DESIGN.md §6).

Pure code: no I/O and no clock. Records are plain dicts in the ABSCH JSON shape; an IRCC's
state is a fold of its ``ircc.*`` events that gives the same result in any arrival order and
for duplicates. The CPC checks themselves live in :mod:`services.monitor.rules`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from shared.uid import UidError, format_uid, parse_uid

Record = dict[str, Any]

IRCC_EVENT_TYPES = frozenset({"ircc.published", "ircc.amended", "ircc.revoked"})
REVOKE_INTENT = 1  # amendmentIntent of a revoking revision [P7]


def json_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars), without the memo that
    ``copy.deepcopy`` keeps against cycles JSON can't have."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(json_copy(v) for v in value)
    return value


class Rule(StrEnum):
    """Rule codes of DESIGN.md §6 (the ``rule`` of a discrepancy)."""

    IRCC_UNKNOWN = "IRCC_UNKNOWN"
    IRCC_REVOKED = "IRCC_REVOKED"
    IRCC_SUPERSEDED = "IRCC_SUPERSEDED"
    IRCC_EXPIRED = "IRCC_EXPIRED"
    USE_MISMATCH = "USE_MISMATCH"
    PIC_HOLDER_MISMATCH = "PIC_HOLDER_MISMATCH"
    CANNOT_VERIFY = "CANNOT_VERIFY"
    PROVIDER_MISMATCH = "PROVIDER_MISMATCH"
    CHECKPOINT_UNKNOWN = "CHECKPOINT_UNKNOWN"
    NO_EVIDENCE = "NO_EVIDENCE"


@dataclass(frozen=True)
class IrccState:
    """Every published revision of one IRCC seen so far; helpers read the latest one."""

    identifier: str
    government: str
    document_id: int
    latest_revision: int
    revoked: bool
    revisions: dict[int, Record]

    def latest(self) -> Record:
        """Body of the latest revision (the only valid certificate [P5])."""
        return self.revisions[self.latest_revision]

    def revision(self, n: int) -> Record | None:
        """Body of revision ``n`` when its event has arrived."""
        return self.revisions.get(n)

    def date_of_expiry(self) -> date | None:
        """``dateOfExpiry`` of the latest revision; optional in ABSCH [P9]."""
        return parse_date(self.latest().get("dateOfExpiry"))

    def pic_holders(self) -> list[str] | None:
        """PIC holder identifiers without ``@rev``; ``None`` when they are confidential."""
        body = self.latest()
        if body.get("entitiesToWhomPICGrantedConfidential") is True:
            return None
        return [
            split_reference(ref)[0] for ref in reference_ids(body.get("entitiesToWhomPICGranted"))
        ]

    def usages(self) -> set[str] | None:
        """Usage term ids (upper case); ``None`` when usages are confidential."""
        body = self.latest()
        if body.get("usagesConfidential") is True:
            return None
        return {ident.upper() for ident in reference_ids(body.get("usages"))}

    def revoked_in(self) -> int | None:
        """First revision that revoked the IRCC, if any."""
        revoking = [n for n, body in self.revisions.items() if _is_revocation(body)]
        return min(revoking) if revoking else None

    def uid(self, revision: int | None = None) -> str:
        """UID of a revision, or the revision-less permanent link [C6]."""
        return format_uid("absPermit", self.government, self.document_id, revision)


@dataclass(frozen=True)
class CheckpointState:
    """A checkpoint from the directory; ``published`` is false once withdrawn."""

    identifier: str
    government: str
    published: bool


def apply_ircc_event(state: IrccState | None, event_type: str, data: Record) -> IrccState:
    """Fold one ``ircc.published|amended|revoked`` payload (``IrccEvent`` fields) into state.

    Idempotent and commutative: a lower revision arriving late never rolls back
    ``latest_revision``, revocation is sticky, and if two payloads claim the same revision
    the one ranking highest (revocation first, then a canonical JSON order) wins.
    Raises ``ValueError`` for an unknown type, a bad revision or another IRCC's payload.
    """
    if event_type not in IRCC_EVENT_TYPES:
        raise ValueError(f"not an IRCC event type: {event_type!r}")
    identifier = data.get("identifier")
    if not isinstance(identifier, str) or not identifier:
        raise ValueError("IRCC event without identifier")
    revision = _positive_int(data.get("revision"), "revision")
    incoming = _Candidate(_revision_body(event_type, data), *_origin(data))
    if state is None:
        return _state(identifier, incoming, {revision: incoming.body}, revision)
    if state.identifier != identifier:
        raise ValueError(f"event for {identifier!r} applied to state of {state.identifier!r}")
    existing = state.revisions.get(revision)
    current = _Candidate(existing, state.government, state.document_id) if existing else None
    if current is not None and current.rank() >= incoming.rank():
        return state
    revisions = {**state.revisions, revision: incoming.body}
    if revision < state.latest_revision:
        origin = _Candidate(state.latest(), state.government, state.document_id)
        return _state(identifier, origin, revisions, state.latest_revision)
    return _state(identifier, incoming, revisions, revision)


@dataclass(frozen=True)
class _Candidate:
    """A revision body with the origin data its event carried."""

    body: Record
    government: str
    document_id: int

    def rank(self) -> tuple[bool, str, str, int]:
        """Total order that decides between two payloads claiming the same revision."""
        canonical = json.dumps(self.body, sort_keys=True, default=str)
        return (_is_revocation(self.body), canonical, self.government, self.document_id)


def _state(
    identifier: str, origin: _Candidate, revisions: dict[int, Record], latest: int
) -> IrccState:
    revoked = any(_is_revocation(body) for body in revisions.values())
    return IrccState(identifier, origin.government, origin.document_id, latest, revoked, revisions)


def _revision_body(event_type: str, data: Record) -> Record:
    record = data.get("record")
    body: Record = copy.deepcopy(record) if isinstance(record, dict) else {}
    reason = data.get("reason")
    if reason and not body.get("amendmentDescription"):
        body["amendmentDescription"] = copy.deepcopy(reason)
    if event_type == "ircc.revoked":
        # The event type is authoritative even if a producer forgot the intent flag.
        body["amendmentIntent"] = REVOKE_INTENT
    return body


def _origin(data: Record) -> tuple[str, int]:
    government = data.get("government")
    if not isinstance(government, str) or not government:
        record = data.get("record")
        government = term_id(record.get("government")) if isinstance(record, dict) else None
    if not government:
        raise ValueError("IRCC event without government")
    document_id = data.get("document_id", data.get("documentID"))
    return government.lower(), _positive_int(document_id, "document_id")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"IRCC event {name} must be a positive integer, got {value!r}")
    return value


def _is_revocation(body: Record) -> bool:
    return body.get("amendmentIntent") in (REVOKE_INTENT, str(REVOKE_INTENT))


def first_revision_uid(cpc_uid: str) -> str:
    """The UID a communiqué was first published under (``…-1``): what its findings are
    named after, so a finding that still holds on an amended revision keeps its id, and
    its case. A UID with revision 1, or text that is no UID with a revision, is unchanged."""
    try:
        revision = parse_uid(cpc_uid).revision
    except UidError:
        return cpc_uid
    if revision is None or revision == 1:
        return cpc_uid
    return f"{cpc_uid.rsplit('-', 1)[0]}-1"


def finding_id(cpc_uid: str, rule: str, ircc_uid: str | None) -> str:
    """Deterministic discrepancy id: sha256 of ``cpc_uid|rule|ircc_uid``, 32 hex chars."""
    text = f"{cpc_uid}|{rule}|{ircc_uid or ''}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Finding:
    """One rule that a CPC breaks; ``evidence`` quotes the data that triggered it (JSON)."""

    id: str = field(init=False)
    rule: str
    cpc_uid: str
    ircc_uid: str | None
    provider_country: str | None
    user_country: str
    evidence: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        key = first_revision_uid(self.cpc_uid)
        object.__setattr__(self, "id", finding_id(key, self.rule, self.ircc_uid))

    def to_data(self) -> dict[str, Any]:
        """Fields of a ``DiscrepancyEvent`` payload (status and case fields excluded)."""
        return {
            "id": self.id,
            "rule": str(self.rule),
            "cpc_uid": self.cpc_uid,
            "ircc_uid": self.ircc_uid,
            "provider_country": self.provider_country,
            "user_country": self.user_country,
            "evidence": json_copy(self.evidence),
        }


def diff_findings(
    previous: Iterable[Finding], current: Iterable[Finding]
) -> tuple[list[Finding], list[Finding]]:
    """``(to_flag, to_clear)`` between the stored findings of a CPC and a fresh evaluation.

    ``to_flag`` holds new ids and ids whose data changed (so the stored case is refreshed);
    ``to_clear`` holds stored ids that no longer hold. Both are sorted by id, so the result
    does not depend on input order. Ids are expected to be unique within each input.
    """
    before = {finding.id: finding for finding in previous}
    after = {finding.id: finding for finding in current}
    to_flag = [after[key] for key in sorted(after) if before.get(key) != after[key]]
    to_clear = [before[key] for key in sorted(before) if key not in after]
    return to_flag, to_clear


def split_reference(text: str) -> tuple[str, int | None]:
    """Split ``<identifier>[@<revision>]`` leniently (a non-numeric suffix stays in the id)."""
    head, sep, tail = text.strip().rpartition("@")
    if sep and head and tail.isascii() and tail.isdigit() and int(tail) > 0:
        return head, int(tail)
    return text.strip(), None


def reference_ids(value: Any) -> list[str]:
    """Identifiers of a Reference/Term or a list of them (plain strings tolerated), in order."""
    items = value if isinstance(value, list) else [value]
    found = (term_id(item) for item in items)
    return [ident for ident in found if ident]


def term_id(value: Any) -> str | None:
    """``identifier`` of one Reference or Term, stripped; ``None`` when absent."""
    ident = value.get("identifier") if isinstance(value, dict) else value
    return (ident.strip() or None) if isinstance(ident, str) else None


def parse_date(value: Any) -> date | None:
    """A ``YYYY-MM-DD`` date (a time part is ignored); ``None`` when absent or malformed."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None
