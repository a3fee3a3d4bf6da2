"""Registry rules without I/O: who may do what, how a publication is prepared, verification."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from shared.auth import UNSCOPED_ROLES, Principal, Role

IRCC_SCHEMA = "absPermit"
DIRECTORY_SCHEMAS = frozenset({"focalPoint", "authority", "contact", "absCheckpoint"})
REGISTRY_SCHEMAS = DIRECTORY_SCHEMAS | {IRCC_SCHEMA}
# Records published through the PA workflow [W2]; the rest are saved directly [C10].
WORKFLOW_SCHEMAS = frozenset({IRCC_SCHEMA, "authority", "absCheckpoint"})
INTENT_UPDATE = 0
INTENT_REVOKE = 1
# One publishing authority per government [W1]: designating another replaces it.
ONE_PER_GOVERNMENT = frozenset({Role.PA})
AUDIT_ONLY = (
    "the Secretariat reads a government's drafts only through "
    "GET /v1/audit/drafts/{schema}/{identifier}, where each reading is logged"
)


class RuleViolation(Exception):
    """A request breaks a domain rule; ``field`` names the culprit when there is one, and
    ``kind`` says which sort of rule, in the record models' terms (``conditional_required``
    for something required that is missing)."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        status: int = 422,
        kind: str = "record_rule",
    ) -> None:
        super().__init__(message)
        self.field = field
        self.status = status
        self.kind = kind


class Forbidden(Exception):
    """The caller's role or government does not allow the action."""


class PublishMode(StrEnum):
    """How a caller's publish call is carried out."""

    DIRECT = "direct"
    REQUEST = "request"


class VerifyStatus(StrEnum):
    """Answer of ``GET /v1/verify/{uid}``."""

    VALID = "valid"
    SUPERSEDED = "superseded"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


def _same_government(principal: Principal, government: str | None) -> None:
    if principal.is_admin:
        return
    if government is None or principal.government != government:
        raise Forbidden("you act for another government")


def check_can_edit(principal: Principal, schema: str, government: str | None) -> None:
    """Saving drafts: focal points are the Secretariat's; others belong to their government."""
    check_edit_role(principal, schema)
    if schema != "focalPoint":
        _same_government(principal, government)


def check_edit_role(principal: Principal, schema: str) -> None:
    """The part of :func:`check_can_edit` that needs no government: the caller's role."""
    if schema == "focalPoint":
        if not principal.is_admin:
            raise Forbidden("national focal points are maintained by the Secretariat")
        return
    if principal.role not in {Role.ADMIN, Role.NFP, Role.PA, Role.NAU}:
        raise Forbidden(f"role {principal.role.value} cannot edit national records")
    if principal.is_admin and schema != "contact":
        raise Forbidden("national records are edited by their government")


def publish_mode(principal: Principal, schema: str, government: str | None) -> PublishMode:
    """Direct for the PA (and for contacts and focal points), a request for an NAU [W1-W2]."""
    check_can_edit(principal, schema, government)
    if schema not in WORKFLOW_SCHEMAS or principal.role is Role.PA:
        return PublishMode.DIRECT
    if principal.role is Role.NAU:
        return PublishMode.REQUEST
    raise Forbidden(f"role {principal.role.value} cannot publish {schema}")


def check_can_decide(principal: Principal, government: str | None) -> None:
    """Only the publishing authority of the record's government approves or rejects [W3]."""
    if principal.role is not Role.PA:
        raise Forbidden("only the publishing authority decides on requests")
    _same_government(principal, government)


def is_secretariat_record(schema: str, government: str | None) -> bool:
    """Records the Secretariat keeps itself: focal points, and contacts of no government."""
    return schema == "focalPoint" or government is None


def check_can_read_draft(principal: Principal | None, government: str | None, schema: str) -> bool:
    """Drafts are visible to their government's editors. The Secretariat reads its own
    directly and a government's only through the audit endpoint (``Forbidden`` here)."""
    if principal is None:
        return False
    if principal.is_admin:
        if is_secretariat_record(schema, government):
            return True
        raise Forbidden(AUDIT_ONLY)
    return principal.role in {Role.NFP, Role.PA, Role.NAU} and principal.government == government


def check_can_audit(principal: Principal) -> None:
    """Only the Secretariat audits a government's drafts."""
    if not principal.is_admin:
        raise Forbidden("only the Secretariat audits drafts")


CAN_CREATE: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset({Role.ADMIN, Role.NFP, Role.OPERATOR}),
    Role.NFP: frozenset({Role.PA, Role.NAU, Role.CNA}),
    Role.PA: frozenset({Role.CHECKPOINT}),
}


def check_can_create_user(principal: Principal, role: Role, government: str | None) -> None:
    """Admin designates NFPs and dashboard operators; the NFP its PA, NAUs and CNA readers;
    the PA checkpoint operators."""
    allowed = CAN_CREATE.get(principal.role, frozenset())
    if role not in allowed:
        raise Forbidden(f"role {principal.role.value} cannot create {role.value} users")
    if role in UNSCOPED_ROLES:
        return
    if government is None:
        raise RuleViolation("government is required for this role", field="government")
    _same_government(principal, government)


def check_can_deactivate(principal: Principal) -> None:
    """Only roles that designate users may deactivate any (before looking the target up)."""
    if not principal.is_admin and principal.role not in CAN_CREATE:
        raise Forbidden(f"role {principal.role.value} cannot deactivate users")


def check_can_deactivate_user(principal: Principal, role: Role, government: str | None) -> None:
    """The chain that designates a user may deactivate it: the admin anyone; the NFP its
    government's PA, NAUs and CNA readers; the PA its government's checkpoint operators."""
    check_can_deactivate(principal)
    if principal.is_admin:
        return
    if role not in CAN_CREATE[principal.role]:
        raise Forbidden(f"role {principal.role.value} cannot deactivate {role.value} users")
    _same_government(principal, government)


def prepare_publication(
    body: dict[str, Any], *, schema: str, latest_revision: int, revoked: bool
) -> dict[str, Any]:
    """The body of the next revision, amendment fields set as the real client does [P6]:
    none on the first revision, ``amendmentIntent = 0`` on the later ones. What it must
    satisfy besides the record's own rules is :func:`publication_violations`."""
    if revoked:
        raise RuleViolation("revoked certificates are not editable", status=409)
    out = copy.deepcopy(body)
    if schema != IRCC_SCHEMA:
        return out
    if latest_revision == 0:
        out.pop("amendmentIntent", None)
    elif out.get("amendmentIntent") != INTENT_REVOKE:  # left for the violation to name
        out["amendmentIntent"] = INTENT_UPDATE
    return out


def publication_violations(
    body: Mapping[str, Any], *, schema: str, latest_revision: int
) -> list[RuleViolation]:
    """What a draft breaks, as the next revision, beyond the record's own rules [P6, P7]:
    a revocation goes through the revoke endpoint; an update of a published IRCC needs its
    reason. ``body`` is the draft as given (any JSON)."""
    if schema != IRCC_SCHEMA:
        return []
    found: list[RuleViolation] = []
    if body.get("amendmentIntent") == INTENT_REVOKE:
        found.append(RuleViolation("use the revoke endpoint to revoke", field="amendmentIntent"))
    reason = body.get("amendmentDescription")
    texts = reason.values() if isinstance(reason, Mapping) else ()
    if latest_revision > 0 and not any(isinstance(t, str) and t.strip() for t in texts):
        found.append(
            RuleViolation(
                "a reason is required to amend a published IRCC",
                field="amendmentDescription",
                kind="conditional_required",
            )
        )
    return found


def prepare_revocation(latest: dict[str, Any], reason: dict[str, str]) -> dict[str, Any]:
    """The final revision of a revoked IRCC [P7]."""
    if not any(v.strip() for v in reason.values()):
        raise RuleViolation("a reason is required to revoke", field="reason")
    out = copy.deepcopy(latest)
    out["amendmentIntent"] = INTENT_REVOKE
    out["amendmentDescription"] = reason
    return out


def ircc_event_type(revision: int, intent: int | None) -> str:
    """``ircc.published`` for revision 1, ``ircc.revoked`` for intent 1, else ``ircc.amended``."""
    if intent == INTENT_REVOKE:
        return "ircc.revoked"
    return "ircc.published" if revision == 1 else "ircc.amended"


@dataclass(frozen=True, slots=True)
class VerifyFacts:
    """What verification needs to know about a record."""

    latest_revision: int
    revoked: bool
    date_of_expiry: date | None


def verify_status(facts: VerifyFacts | None, revision: int | None, today: date) -> VerifyStatus:
    """Status of a certificate revision (revision-less UID = latest) [P5, P7, P9]."""
    if facts is None or facts.latest_revision == 0:
        return VerifyStatus.UNKNOWN
    if revision is not None and not 1 <= revision <= facts.latest_revision:
        return VerifyStatus.UNKNOWN
    if facts.revoked:
        return VerifyStatus.REVOKED
    if revision is not None and revision < facts.latest_revision:
        return VerifyStatus.SUPERSEDED
    if facts.date_of_expiry is not None and facts.date_of_expiry < today:
        return VerifyStatus.EXPIRED
    return VerifyStatus.VALID


_TAG = re.compile(r"<[^>]+>")


def search_text(body: dict[str, Any]) -> str:
    """Lower-cased text of titles, names, subject-matter and keywords in every language."""
    parts: list[str] = []
    for name in (
        "title",
        "name",
        "subjectMatter",
        "keywordOther",
        "description",
        "referenceToNationalPermit",
        "organization",
        "firstName",
        "lastName",
    ):
        value = body.get(name)
        if isinstance(value, dict):
            parts += [str(v) for v in value.values()]
        elif isinstance(value, str):
            parts.append(value)
    for term in body.get("keywords") or []:
        if isinstance(term, dict):
            parts.append(str(term.get("identifier", "")))
            parts += [str(v) for v in (term.get("customValue") or {}).values()]
    return _TAG.sub(" ", " ".join(parts)).lower()


def title_of(body: dict[str, Any]) -> str:
    """A display title: the first language of ``title`` or ``name``."""
    for name in ("title", "name"):
        value = body.get(name)
        if isinstance(value, dict) and value:
            return str(next(iter(value.values())))
    return str(body.get("header", {}).get("identifier", ""))
