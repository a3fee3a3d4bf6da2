"""Evaluating one item (a citation of an IRCC, or a CPC's own checks) into events.

A citation is checked against its IRCC's state (the per-IRCC rules); a CPC's own checks
use the checkpoint view (``CHECKPOINT_UNKNOWN``, ``NO_EVIDENCE``). Event ids are derived
from the finding id and a generation counter, so re-processing after a crash re-emits the
*same* events.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.monitor.domain import CheckpointState, Finding, IrccState, Rule
from services.monitor.rules import evaluate, pending_unknown
from shared.events import CloudEvent, new_event
from shared.events.models import DiscrepancyEvent

CPC_RULES = frozenset({Rule.CHECKPOINT_UNKNOWN.value, Rule.NO_EVIDENCE.value})
CPC_KEY_PREFIX = "cpc:"
EVENT_NAMESPACE = uuid.UUID("6f1d2c1e-8f53-4a4f-9d0b-5a1c3e0b7d21")


def citation_key(ircc: str, cpc_uid: str) -> str:
    """Table key of one citation (identifiers never contain ``|``)."""
    return f"{ircc}|{cpc_uid}"


def split_citation_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`citation_key`."""
    ircc, _, cpc_uid = key.partition("|")
    return ircc, cpc_uid


def state_to_json(state: IrccState) -> dict[str, Any]:
    """Table form of an IRCC state (JSON object keys are strings)."""
    return {
        "identifier": state.identifier,
        "government": state.government,
        "document_id": state.document_id,
        "latest_revision": state.latest_revision,
        "revoked": state.revoked,
        "revisions": {str(k): v for k, v in state.revisions.items()},
    }


def state_from_json(data: Mapping[str, Any]) -> IrccState:
    """Inverse of :func:`state_to_json`."""
    return IrccState(
        identifier=data["identifier"],
        government=data["government"],
        document_id=int(data["document_id"]),
        latest_revision=int(data["latest_revision"]),
        revoked=bool(data["revoked"]),
        revisions={int(k): v for k, v in data["revisions"].items()},
    )


@dataclass(frozen=True)
class Citation:
    """A CPC citing an IRCC, as kept at the IRCC's partition."""

    cpc_uid: str
    cpc: dict[str, Any]
    reference: str
    received_at: datetime


def citation_findings(
    citation: Citation, state: IrccState | None, *, now: datetime, grace: timedelta
) -> tuple[list[Finding], datetime | None]:
    """Per-IRCC findings of one citation, and when to look again if still pending."""
    body = {**citation.cpc, "absIRCCs": [{"identifier": citation.reference}], "absCheckpoints": []}
    irccs = {state.identifier: state} if state else {}
    findings = evaluate(
        citation.cpc_uid,
        body,
        irccs=irccs,
        checkpoints={},
        received_at=citation.received_at,
        now=now,
        grace=grace,
    )
    pending = pending_unknown(
        body, irccs=irccs, checkpoints={}, received_at=citation.received_at, now=now, grace=grace
    )
    due = citation.received_at + grace if pending else None
    return [f for f in findings if f.rule not in CPC_RULES], due


def cpc_findings(
    cpc_uid: str,
    cpc: dict[str, Any],
    received_at: datetime,
    checkpoints: Mapping[str, CheckpointState],
    *,
    now: datetime,
    grace: timedelta,
) -> tuple[list[Finding], datetime | None]:
    """The CPC's own findings (checkpoints, evidence), and when to look again if pending."""
    body = {**cpc, "absIRCCs": cpc.get("absIRCCs") or []}
    findings = evaluate(
        cpc_uid,
        body,
        irccs={},
        checkpoints=checkpoints,
        received_at=received_at,
        now=now,
        grace=grace,
    )
    only_checkpoints = {**body, "absIRCCs": []}
    pending = pending_unknown(
        only_checkpoints,
        irccs={},
        checkpoints=checkpoints,
        received_at=received_at,
        now=now,
        grace=grace,
    )
    due = received_at + grace if pending else None
    return [f for f in findings if f.rule in CPC_RULES], due


@dataclass
class Transition:
    """What one evaluation changes: events to emit and the new stored findings."""

    events: list[CloudEvent[Any]] = field(default_factory=list)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    flagged: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)


def transition(stored: Mapping[str, Any], current: list[Finding]) -> Transition:
    """Compare stored findings (``id -> {finding, gen, active}``) with a fresh evaluation.

    A new (or returning) finding is flagged with generation n+1; one that no longer holds is
    cleared. A finding that still holds keeps its first evidence: no repeated alerts.
    """
    out = Transition(stored={k: dict(v) for k, v in stored.items()})
    now_ids = {f.id: f for f in current}
    for fid, finding in sorted(now_ids.items()):
        entry = out.stored.get(fid)
        if entry is not None and entry["active"]:
            continue
        gen = (entry["gen"] if entry else 0) + 1
        out.stored[fid] = {"finding": finding.to_data(), "gen": gen, "active": True}
        out.events.append(_event("discrepancy.flagged", finding.to_data(), gen, "open"))
        out.flagged.append(finding.rule)
    for fid, entry in sorted(out.stored.items()):
        if entry["active"] and fid not in now_ids:
            entry["active"] = False
            out.events.append(
                _event("discrepancy.cleared", entry["finding"], entry["gen"], "cleared")
            )
            out.cleared.append(entry["finding"]["rule"])
    return out


def _event(event_type: str, data: dict[str, Any], gen: int, status: str) -> CloudEvent[Any]:
    payload = DiscrepancyEvent(**{**data, "status": status})
    event_id = uuid.uuid5(EVENT_NAMESPACE, f"{data['id']}:{event_type}:{gen}")
    return new_event(
        event_type,
        source="monitor",
        subject=data["cpc_uid"],
        data=payload,
        event_id=str(event_id),
    )
