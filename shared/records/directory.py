# ruff: noqa: N815
"""Directory records: checkpoints (§4), CNAs, contacts and focal points (§5)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, StrictBool, model_validator

from shared.records.common import (
    MAX_DESCRIPTION_CHARS,
    CountryTerm,
    Email,
    Link,
    LString,
    NationalRecord,
    NonBlank,
    Record,
    Reference,
    RequiredLString,
    RuleErrors,
    Term,
    is_missing,
    too_long,
    unique_emails,
)

JURISDICTION_NATIONAL = "7437F880-7B12-4F26-AA91-CED37250DD0A"
JURISDICTION_SUBNATIONAL = "DEBB019D-8647-40EC-8AE5-10CA88572F6E"
JURISDICTION_COMMUNITY = "9627DF2B-FFAC-4F85-B075-AF783FF2A0B5"
JURISDICTION_OTHER = "5B6177DD-5E5E-434E-8CB7-D63D67D5EBED"
NAMED_JURISDICTIONS = frozenset(
    {JURISDICTION_SUBNATIONAL, JURISDICTION_COMMUNITY, JURISDICTION_OTHER}
)
ABS_NFP_CODES = frozenset({"NP-FP", "ABS-FP"})

_TOO_LONG = f"must be at most {MAX_DESCRIPTION_CHARS} characters of text"

Phones = list[NonBlank]
Emails = list[Email]


class AbsCheckpoint(NationalRecord):
    """A checkpoint; configures who in the user country gets CPC copies [CP1].

    ``jurisdictionName`` is dropped for the national jurisdiction, as the real form does.
    """

    SCHEMA = "absCheckpoint"

    name: RequiredLString
    responsibilities: LString | None = None
    jurisdiction: Term | None = None
    jurisdictionName: LString | None = None
    informAllAuthorities: StrictBool
    contactsToInform: list[Reference] | None = None
    relevantInformation: LString | None = None
    relevantDocuments: list[Link] | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        errors = RuleErrors()
        if too_long(self.responsibilities):
            errors.add("responsibilities", _TOO_LONG)
        level = self.jurisdiction.identifier.upper() if self.jurisdiction else None
        if level == JURISDICTION_NATIONAL:
            self.jurisdictionName = None
        elif level in NAMED_JURISDICTIONS and is_missing(self.jurisdictionName):
            errors.require(
                "jurisdictionName",
                "is required for a sub-national, community or other jurisdiction",
            )
        errors.raise_if_any(type(self).__name__)
        return self


class Authority(NationalRecord):
    """A competent national authority (CNA); its ``emails`` receive notifications [R1]."""

    SCHEMA = "authority"

    name: RequiredLString
    address: LString | None = None
    city: RequiredLString
    state: LString | None = None
    postalCode: LString | None = None
    country: CountryTerm
    phones: Phones = Field(min_length=1)
    faxes: list[str] | None = None
    email_list: Emails = Field(alias="emails", min_length=1)
    websites: list[Link] | None = None
    contacts: list[Reference] | None = None
    responsibleForAll: StrictBool
    responsibilities: LString | None = None
    policyBasisForCompetency: LString | None = None
    policyBasisForCompetencyRef: list[Reference] | None = None
    absJurisdiction: list[Term] | None = None
    absJurisdictionName: LString | None = None
    absGeneticResourceTypes: list[Term] | None = None
    absGeneticResourceAreas: list[Term] | None = None
    relevantInformation: LString | None = None
    relevantDocuments: list[Link] | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        errors = RuleErrors()
        if not self.responsibleForAll and is_missing(self.responsibilities):
            errors.require("responsibilities", "is required when responsibleForAll is false")
        elif too_long(self.responsibilities):
            errors.add("responsibilities", _TOO_LONG)
        errors.raise_if_any(type(self).__name__)
        return self

    def emails(self) -> list[str]:
        """The record's ``emails``, without duplicates."""
        return unique_emails(self.email_list)


class Contact(Record):
    """A person or organisation contact; ``government`` is optional."""

    SCHEMA = "contact"

    government: CountryTerm | None = None
    type: Literal["person", "organization"]
    prefix: LString | None = None
    firstName: str | None = None
    middleName: str | None = None
    lastName: str | None = None
    gender: Term | None = None
    designation: LString | None = None
    department: LString | None = None
    contactOrganization: Reference | None = None
    organization: LString | None = None
    organizationAcronym: LString | None = None
    organizationType: Term | None = None
    address: LString | None = None
    city: LString | None = None
    state: LString | None = None
    postalCode: LString | None = None
    country: CountryTerm | None = None
    phones: list[str] | None = None
    faxes: list[str] | None = None
    email_list: Emails = Field(alias="emails", min_length=1)
    websites: list[Link] | None = None
    addressType: str | None = None
    relevantInformation: LString | None = None
    relevantDocuments: list[Link] | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        errors = RuleErrors()
        needed = ("firstName", "lastName") if self.type == "person" else ("organization", "country")
        for field in needed:
            if is_missing(getattr(self, field)):
                errors.require(field, f"is required for a contact of type {self.type!r}")
        errors.raise_if_any(type(self).__name__)
        return self

    def emails(self) -> list[str]:
        """The record's ``emails``, without duplicates."""
        return unique_emails(self.email_list)


class FocalPoint(NationalRecord):
    """A national focal point, read-only copy of the CBD NFP registry (prefix ``CHM``)."""

    SCHEMA = "focalPoint"

    categories: list[str] | None = None
    type: list[str] | str | None = None
    title: LString | None = None
    description: str | None = None
    firstName: str | None = None
    middleName: str | None = None
    lastName: str | None = None
    gender: Term | None = None
    organization: LString | None = None
    organizationAcronym: LString | None = None
    organizationType: Term | None = None
    designation: LString | None = None
    department: LString | None = None
    addressLine1: LString | None = None
    addressLine2: LString | None = None
    city: LString | None = None
    state: LString | None = None
    postalCode: LString | None = None
    country: CountryTerm | None = None
    phones: list[str] | None = None
    mobiles: list[str] | None = None
    faxes: list[str] | None = None
    email_list: Emails = Field(alias="emails", min_length=1)
    websites: list[Link] | None = None

    def codes(self) -> set[str]:
        """Focal point type codes from ``categories`` and ``type``, upper-case."""
        types = [self.type] if isinstance(self.type, str) else self.type or []
        return {code.strip().upper() for code in [*(self.categories or []), *types]}

    def is_abs_nfp(self) -> bool:
        """True for an ABS (Nagoya Protocol) NFP rather than a CBD one.

        A record without any type code is taken as an ABS NFP: only the ABS registry
        feeds this service, and dropping its only contact would silence notifications.
        """
        codes = self.codes()
        return not codes or bool(codes & ABS_NFP_CODES)

    def emails(self) -> list[str]:
        """The record's ``emails``, without duplicates."""
        return unique_emails(self.email_list)
