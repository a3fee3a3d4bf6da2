"""Which referenced records an event's recipients depend on (pure, no I/O).

Directory records and IRCCs arrive on their own topics, so a mail event can overtake the
records it names. The handlers wait (bounded) until every reference listed here is known;
the lists are recomputed while waiting, so a chain (checkpoint → its contacts, IRCC → its
CNA → the CNA's contact persons) resolves link by link as records arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from services.notifier import domain

IrccLookup = Callable[[str], domain.RecordView | None]


def _with_contacts(identifiers: Iterable[str], directory: domain.DirectoryView) -> list[str]:
    """The identifiers plus the contact persons of those that are known authorities [R1]."""
    out: list[str] = []
    for ident in identifiers:
        out.append(ident)
        record = directory.record(ident)
        if record is not None and domain.schema_of(record) == "authority":
            out += domain.reference_ids(record.get("contacts"))
    return out


def ircc_parties(ircc: domain.RecordView, *, with_providers: bool) -> list[str]:
    """Directory records an IRCC names as recipients, confidential groups left out."""
    refs = domain.reference_ids(ircc.get("absCNA"))
    if with_providers and not domain.is_confidential(ircc, "providersConfidential"):
        refs += domain.reference_ids(ircc.get("providers"))
    if not domain.is_confidential(ircc, "entitiesToWhomPICGrantedConfidential"):
        refs += domain.reference_ids(ircc.get("entitiesToWhomPICGranted"))
    return refs


def missing_for_ircc(ircc: domain.RecordView, directory: domain.DirectoryView) -> list[str]:
    """References of an IRCC mail that the directory does not know yet."""
    refs = _with_contacts(ircc_parties(ircc, with_providers=True), directory)
    return [ref for ref in refs if directory.record(ref) is None]


def missing_for_cpc(
    cpc: domain.RecordView, irccs: IrccLookup, directory: domain.DirectoryView
) -> list[str]:
    """Cited IRCCs and checkpoints, and the records they name, that are not known yet."""
    missing: list[str] = []
    refs: list[str] = []
    for checkpoint_id in domain.reference_ids(cpc.get("absCheckpoints")):
        checkpoint = directory.record(checkpoint_id)
        if checkpoint is None:
            missing.append(checkpoint_id)
        else:
            refs += domain.reference_ids(checkpoint.get("contactsToInform"))
    if domain.cites_irccs(cpc):
        for ircc_id in domain.reference_ids(cpc.get("absIRCCs")):
            ircc = irccs(ircc_id)
            if ircc is None:
                missing.append(ircc_id)
            else:
                refs += ircc_parties(ircc, with_providers=False)
    else:
        refs += domain.reference_ids(cpc.get("entityWhoGrantedPIC"))
    refs = _with_contacts(refs, directory)
    return missing + [ref for ref in refs if directory.record(ref) is None]


def missing_for_discrepancy(
    ircc_uid: str | None, ircc: domain.RecordView | None, directory: domain.DirectoryView
) -> list[str]:
    """The IRCC a discrepancy cites, then its CNA, when they are not known yet."""
    if ircc_uid and ircc is None:
        return [ircc_uid]
    refs = _with_contacts(domain.reference_ids((ircc or {}).get("absCNA")), directory)
    return [ref for ref in refs if directory.record(ref) is None]


def missing_for_cna(cna: str | None, directory: domain.DirectoryView) -> list[str]:
    """A utilization alert's CNA, then its contact persons, when they are not known yet."""
    refs = _with_contacts([cna] if cna else [], directory)
    return [ref for ref in refs if directory.record(ref) is None]
