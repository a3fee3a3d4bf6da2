"""Who gets a copy of which mail (DESIGN.md §5): pure recipient resolution, no I/O.

Addresses come only from *published* directory records' ``emails`` [R1]; a reference the
directory cannot resolve (draft, withdrawn, unknown) yields nobody. Confidential fields are
stripped upstream before storage and events [P1]; the rules still check every flag and ignore
a flagged list even when present, since a copy sent cannot be taken back [P2].
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Protocol

Record = dict[str, Any]
RecordView = Mapping[str, Any]  # what the pure readers accept

LANGUAGES: tuple[str, ...] = ("en", "fr", "es", "ru", "zh", "ar")
DEFAULT_LANGUAGE = "en"
ABS_FOCAL_POINT_TYPES = frozenset({"NP-FP", "ABS-FP"})
EXPIRY_NOTICE_DAYS = 60
REVOKE_INTENT = 1

ROLE_ISSUING_CNA = "issuing-cna"
ROLE_PROVIDER_NFP = "provider-nfp"
ROLE_PROVIDER = "provider"
ROLE_PIC_HOLDER = "pic-holder"
ROLE_CHECKPOINT_CONTACT = "checkpoint-contact"
ROLE_USER_CNA = "user-cna"
ROLE_IRCC_CNA = "ircc-cna"
ROLE_ENTITY_WHO_GRANTED_PIC = "entity-who-granted-pic"
ROLE_SOURCE_COUNTRY_CNA = "source-country-cna"
ROLE_SOURCE_COUNTRY_NFP = "source-country-nfp"
ROLE_PROVIDER_CNA = "provider-cna"

# No whitespace or control characters: an address smuggling "\r\nBcc: ..." is dropped
# whole rather than split into something that looks deliverable.
_ADDRESS = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+")
_ADDRESS_SEPARATORS = re.compile(r"[,;]")


class DirectoryView(Protocol):
    """Read access to the published directory (focalPoint, authority, contact, absCheckpoint)."""

    def record(self, identifier: str) -> Record | None:
        """The latest published record with this header.identifier (``@rev`` ignored)."""

    def authorities(self, government: str) -> list[Record]:
        """Published ``authority`` records (CNAs) of a country (ISO-2, any case)."""

    def focal_points(self, government: str) -> list[Record]:
        """Published ABS ``focalPoint`` records of a country (see :func:`is_abs_focal_point`)."""


def reference_id(reference: object) -> str | None:
    """``{"identifier": "<id>[@rev]"}`` or a bare string → ``<id>``; anything else → None."""
    value = reference.get("identifier") if isinstance(reference, Mapping) else reference
    if not isinstance(value, str):
        return None
    identifier = value.split("@", 1)[0].strip()
    return identifier or None


def reference_ids(value: object) -> list[str]:
    """Identifiers (without revision) of one reference or a list of references."""
    items = value if isinstance(value, list) else [value]
    return [ident for ident in map(reference_id, items) if ident is not None]


def schema_of(record: RecordView) -> str | None:
    """``header.schema`` of a record."""
    header = record.get("header")
    return reference_id(header.get("schema")) if isinstance(header, Mapping) else None


def identifier_of(record: RecordView) -> str | None:
    """``header.identifier`` of a record, without any ``@rev``."""
    header = record.get("header")
    return reference_id(header.get("identifier")) if isinstance(header, Mapping) else None


def government_of(record: RecordView) -> str | None:
    """ISO-2 lower-case country of a record.

    Focal points come from the CBD registry and may carry only ``country``; for any other
    schema ``country`` is a postal address field and does not say whose authority it is.
    """
    code = reference_id(record.get("government"))
    if code is None and schema_of(record) == "focalPoint":
        code = reference_id(record.get("country"))
    return code.lower() if code else None


def is_abs_focal_point(record: RecordView) -> bool:
    """True for an ABS NFP: type codes include NP-FP or ABS-FP, or there are none at all."""
    codes: set[str] = set()
    for field in ("type", "types", "categories"):
        value = record.get(field)
        codes.update(code.upper() for code in reference_ids(value))
    return not codes or bool(codes & ABS_FOCAL_POINT_TYPES)


class InMemoryDirectory:
    """A :class:`DirectoryView` over a dict of published records (tests, local cache)."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records: dict[str, Record] = {}
        for record in records:
            self.add(record)

    def add(self, record: Record) -> None:
        """Store (or replace with) the latest published revision of a record."""
        identifier = identifier_of(record)
        if identifier is None:
            raise ValueError("record has no header.identifier")
        self._records[identifier] = record

    def remove(self, identifier: str) -> None:
        """Forget a withdrawn record; unknown identifiers are ignored."""
        key = reference_id(identifier)
        if key is not None:
            self._records.pop(key, None)

    def record(self, identifier: str) -> Record | None:
        """The stored record for ``<id>[@rev]``."""
        key = reference_id(identifier)
        return self._records.get(key) if key is not None else None

    def authorities(self, government: str) -> list[Record]:
        """Stored ``authority`` records of a country."""
        return self._of(government, "authority")

    def focal_points(self, government: str) -> list[Record]:
        """Stored ABS ``focalPoint`` records of a country."""
        return [r for r in self._of(government, "focalPoint") if is_abs_focal_point(r)]

    def _of(self, government: str, schema: str) -> list[Record]:
        code = government.lower()
        return [
            r for r in self._records.values() if schema_of(r) == schema and government_of(r) == code
        ]


@dataclass(frozen=True)
class Recipient:
    """One mail recipient: ``address`` is lower-cased (dedup and delivery-log key)."""

    address: str
    language: str
    role: str
    record_identifier: str
    display: str = ""  # the address as the record spells it, for the To header
    # The government on whose side the copy goes (the IRCC's for its parties, the CPC's for
    # the user side, a source country's for its authorities): the delivery log shows the
    # delivery to that government only. None when nothing says (the Secretariat sees it).
    government: str | None = None


def recipient_language(record: RecordView) -> str:
    """The record's first ``header.languages`` entry among the six UN languages, else en."""
    header = record.get("header")
    languages = header.get("languages") if isinstance(header, Mapping) else None
    for language in languages if isinstance(languages, list) else []:
        if isinstance(language, str) and language.lower() in LANGUAGES:
            return language.lower()
    return DEFAULT_LANGUAGE


def emails_of(record: RecordView) -> list[str]:
    """Well-formed addresses of a record's ``emails`` (a list or one ``,``/``;`` string)."""
    raw = record.get("emails")
    entries = raw if isinstance(raw, list) else [raw]
    parts = (p.strip() for e in entries if isinstance(e, str) for p in _ADDRESS_SEPARATORS.split(e))
    return [part for part in parts if _ADDRESS.fullmatch(part)]


class _Collector:
    """Accumulates recipients in rule order, keeping the first role per address."""

    def __init__(self, directory: DirectoryView) -> None:
        self._directory = directory
        self._by_address: dict[str, Recipient] = {}

    @property
    def recipients(self) -> list[Recipient]:
        return list(self._by_address.values())

    def add_record(self, record: RecordView, role: str, government: str | None = None) -> bool:
        """Add a record's addresses on ``government``'s side (default: the record's own);
        True when it has any (even if already collected)."""
        identifier = identifier_of(record) or ""
        language = recipient_language(record)
        emails = emails_of(record)
        side = government or government_of(record)
        for display in emails:
            address = display.lower()
            if address not in self._by_address:
                self._by_address[address] = Recipient(
                    address, language, role, identifier, display, side
                )
        found = bool(emails)
        if schema_of(record) == "authority":
            # [R1]: an authority's contact persons get the copy too; one level only.
            for contact_id in reference_ids(record.get("contacts")):
                contact = self._directory.record(contact_id)
                if contact is not None and schema_of(contact) != "authority":
                    found = self.add_record(contact, role, side) or found
        return found

    def add_references(self, value: object, role: str, government: str | None = None) -> bool:
        """Add every published referenced record; True when any of them had an address."""
        found = False
        for identifier in reference_ids(value):
            record = self._directory.record(identifier)
            if record is not None:
                found = self.add_record(record, role, government) or found
        return found

    def add_authorities(self, government: str | None, role: str) -> None:
        for record in self._directory.authorities(government) if government else []:
            self.add_record(record, role, government)

    def add_focal_points(self, government: str | None, role: str) -> None:
        for record in self._directory.focal_points(government) if government else []:
            self.add_record(record, role, government)


def is_confidential(record: RecordView, flag: str) -> bool:
    """True unless ``flag`` is absent or false: anything else errs on the side of silence."""
    return record.get(flag) not in (None, False)


def _add_ircc_parties(
    collect: _Collector, ircc: RecordView, *, cna_role: str, with_providers: bool
) -> None:
    """An IRCC's CNA, its country's ABS NFPs, [its providers,] its PIC holders; flags honoured.
    All on the side of the IRCC's government, which named them."""
    gov = government_of(ircc)
    collect.add_references(ircc.get("absCNA"), cna_role, gov)
    collect.add_focal_points(gov, ROLE_PROVIDER_NFP)
    if with_providers and not is_confidential(ircc, "providersConfidential"):
        collect.add_references(ircc.get("providers"), ROLE_PROVIDER, gov)
    if not is_confidential(ircc, "entitiesToWhomPICGrantedConfidential"):
        collect.add_references(ircc.get("entitiesToWhomPICGranted"), ROLE_PIC_HOLDER, gov)


def recipients_for_ircc(record: RecordView, directory: DirectoryView) -> list[Recipient]:
    """Copies of an IRCC published, amended or revoked: CNA, NFPs, providers, PIC holders."""
    collect = _Collector(directory)
    _add_ircc_parties(collect, record, cna_role=ROLE_ISSUING_CNA, with_providers=True)
    return collect.recipients


def cites_irccs(cpc: RecordView) -> bool:
    """True for the IRCC branch of a CPC [K1]; the ``absIRCCsNotAvailable`` flag wins."""
    return cpc.get("absIRCCsNotAvailable") is not True and bool(reference_ids(cpc.get("absIRCCs")))


def recipients_for_cpc(
    record: RecordView, irccs: Callable[[str], RecordView | None], directory: DirectoryView
) -> list[Recipient]:
    """Copies of a published CPC: user-country side first, then the provider side [CP1].

    ``irccs`` is called with each cited IRCC's identifier *without* ``@rev`` and returns
    the latest known revision (or None): current CNA and confidentiality flags count, not
    those of the revision the user presented.
    """
    collect = _Collector(directory)
    government = government_of(record)
    for checkpoint_id in reference_ids(record.get("absCheckpoints")):
        checkpoint = directory.record(checkpoint_id)
        if checkpoint is None:
            continue
        user_side = government or government_of(checkpoint)
        collect.add_references(
            checkpoint.get("contactsToInform"), ROLE_CHECKPOINT_CONTACT, user_side
        )
        if checkpoint.get("informAllAuthorities") is True:
            collect.add_authorities(user_side, ROLE_USER_CNA)
    if cites_irccs(record):
        for ircc_id in reference_ids(record.get("absIRCCs")):
            ircc = irccs(ircc_id)
            if ircc is not None:
                _add_ircc_parties(collect, ircc, cna_role=ROLE_IRCC_CNA, with_providers=False)
    else:
        _add_source_side(collect, record)
    return collect.recipients


def _add_source_side(collect: _Collector, cpc: RecordView) -> None:
    """No IRCC: whoever granted PIC, else every CNA and ABS NFP of the source countries."""
    countries = [country.lower() for country in reference_ids(cpc.get("sourceCountries"))]
    # The grantor is on the provider side: the source country when the CPC names one, else
    # the grantor record's own government.
    grantor_side = countries[0] if len(countries) == 1 else None
    grantor = cpc.get("entityWhoGrantedPIC")
    if collect.add_references(grantor, ROLE_ENTITY_WHO_GRANTED_PIC, grantor_side):
        return
    # An entity that resolves to nobody (draft, no e-mail) must not leave the provider
    # side uninformed: [CP1] says the Party that granted PIC is informed regardless.
    for country in countries:
        collect.add_authorities(country, ROLE_SOURCE_COUNTRY_CNA)
        collect.add_focal_points(country, ROLE_SOURCE_COUNTRY_NFP)


def recipients_for_discrepancy(
    provider_country: str | None, ircc: RecordView | None, directory: DirectoryView
) -> list[Recipient]:
    """Utilization alert: the provider country's (else the IRCC's) ABS NFPs and the IRCC's CNA."""
    collect = _Collector(directory)
    country = provider_country or (government_of(ircc) if ircc is not None else None)
    side = country.lower() if country else None
    collect.add_focal_points(side, ROLE_PROVIDER_NFP)
    if ircc is not None:
        collect.add_references(ircc.get("absCNA"), ROLE_IRCC_CNA, side)
    return collect.recipients


def recipients_for_first_use(
    provider_country: str, cna: str | None, directory: DirectoryView
) -> list[Recipient]:
    """Utilization first use: the provider country's ABS NFPs and the cited IRCC's CNA (with
    its contact persons). Never the user country, a checkpoint or a PIC holder."""
    collect = _Collector(directory)
    side = provider_country.lower()
    collect.add_focal_points(side, ROLE_PROVIDER_NFP)
    if cna:
        collect.add_references(cna, ROLE_IRCC_CNA, side)
    return collect.recipients


def recipients_for_utilization_report(
    provider_country: str, directory: DirectoryView
) -> list[Recipient]:
    """Monthly utilization report: the provider country's ABS NFPs and every published
    authority (CNA) of that government."""
    collect = _Collector(directory)
    side = provider_country.lower()
    collect.add_focal_points(side, ROLE_PROVIDER_NFP)
    collect.add_authorities(side, ROLE_PROVIDER_CNA)
    return collect.recipients


def recipients_for_expiry(ircc: RecordView, directory: DirectoryView) -> list[Recipient]:
    """Expiry reminder [P9]: the issuing CNA only."""
    collect = _Collector(directory)
    collect.add_references(ircc.get("absCNA"), ROLE_ISSUING_CNA, government_of(ircc))
    return collect.recipients


def expiry_date(ircc: RecordView) -> date | None:
    """``dateOfExpiry`` as a date; absent, empty or malformed → None."""
    value = ircc.get("dateOfExpiry")
    if not isinstance(value, str) or not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


_WINDOW = timedelta(days=EXPIRY_NOTICE_DAYS)


def expiry_notice_due(ircc: RecordView, *, today: date, revoked: bool, already_sent: bool) -> bool:
    """True from 60 days before ``dateOfExpiry`` through that day, once, never if revoked."""
    # A revocation revision (amendmentIntent 1 [P7]) is revoked even if the caller missed it.
    if revoked or already_sent or ircc.get("amendmentIntent") == REVOKE_INTENT:
        return False
    expiry = expiry_date(ircc)
    if expiry is None:
        return False
    # A date in the first days of year 1 has no 60 days before it (OverflowError).
    start = expiry - timedelta(days=EXPIRY_NOTICE_DAYS) if expiry > date.min + _WINDOW else date.min
    return start <= today <= expiry
