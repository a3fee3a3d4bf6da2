# ruff: noqa: N815
"""Directory records: checkpoints (§4), CNAs, contacts and focal points (§5)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, StrictBool, ValidationInfo, model_validator

from shared.records.common import (
    MAX_DESCRIPTION_CHARS,
    MAX_ITEMS,
    BlockLString,
    Code,
    Codes,
    CountryTerm,
    Email,
    Links,
    LongText,
    LString,
    NationalRecord,
    NonBlank,
    Record,
    Reference,
    References,
    RequiredShortLString,
    RuleErrors,
    ShortLString,
    ShortText,
    ShortTexts,
    Term,
    Terms,
    is_draft,
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

Phones = Annotated[list[NonBlank], Field(max_length=MAX_ITEMS)]
Emails = Annotated[list[Email], Field(max_length=MAX_ITEMS)]


class AbsCheckpoint(NationalRecord):
    """A checkpoint; configures who in the user country gets CPC copies [CP1].

    ``jurisdictionName`` is required for a sub-national, community or other jurisdiction.
    With the national one it is kept as sent: the real web form clears it there, but its
    API stores what a national system pushes (sample 05 carries one).
    """

    SCHEMA = "absCheckpoint"
    DRAFTS = True

    name: RequiredShortLString
    responsibilities: LString | None = None
    jurisdiction: Term | None = None
    jurisdictionName: ShortLString | None = None
    informAllAuthorities: StrictBool
    contactsToInform: References | None = None
    relevantInformation: LString | None = None
    relevantDocuments: Links | None = None
    notes: LongText | None = None

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Self:
        if is_draft(info):  # a draft's rules wait for its publication
            return self
        errors = RuleErrors()
        if too_long(self.responsibilities):
            errors.add("responsibilities", _TOO_LONG)
        level = self.jurisdiction.identifier.upper() if self.jurisdiction else None
        if level in NAMED_JURISDICTIONS and is_missing(self.jurisdictionName):
            errors.require(
                "jurisdictionName",
                "is required for a sub-national, community or other jurisdiction",
            )
        errors.raise_if_any(type(self).__name__)
        return self


class Authority(NationalRecord):
    """A competent national authority (CNA); its ``emails`` receive notifications [R1]."""

    SCHEMA = "authority"
    DRAFTS = True

    name: RequiredShortLString
    address: BlockLString | None = None
    city: RequiredShortLString
    state: ShortLString | None = None
    postalCode: ShortLString | None = None
    country: CountryTerm
    phones: Phones = Field(min_length=1)
    faxes: ShortTexts | None = None
    email_list: Emails = Field(alias="emails", min_length=1)
    websites: Links | None = None
    contacts: References | None = None
    responsibleForAll: StrictBool
    responsibilities: LString | None = None
    policyBasisForCompetency: LString | None = None
    policyBasisForCompetencyRef: References | None = None
    absJurisdiction: Terms | None = None
    absJurisdictionName: ShortLString | None = None
    absGeneticResourceTypes: Terms | None = None
    absGeneticResourceAreas: Terms | None = None
    relevantInformation: LString | None = None
    relevantDocuments: Links | None = None
    notes: LongText | None = None

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Self:
        if is_draft(info):  # a draft's rules wait for its publication
            return self
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
    DRAFTS = True

    government: CountryTerm | None = None
    type: Literal["person", "organization"]
    prefix: ShortLString | None = None
    firstName: ShortText | None = None
    middleName: ShortText | None = None
    lastName: ShortText | None = None
    gender: Term | None = None
    designation: ShortLString | None = None
    department: ShortLString | None = None
    contactOrganization: Reference | None = None
    organization: ShortLString | None = None
    organizationAcronym: ShortLString | None = None
    organizationType: Term | None = None
    address: BlockLString | None = None
    city: ShortLString | None = None
    state: ShortLString | None = None
    postalCode: ShortLString | None = None
    country: CountryTerm | None = None
    phones: ShortTexts | None = None
    faxes: ShortTexts | None = None
    email_list: Emails = Field(alias="emails", min_length=1)
    websites: Links | None = None
    addressType: ShortText | None = None
    relevantInformation: LString | None = None
    relevantDocuments: Links | None = None
    notes: LongText | None = None

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Self:
        if is_draft(info):  # a draft's rules wait for its publication
            return self
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
    DRAFTS = True

    categories: Codes | None = None
    type: Codes | Code | None = None
    title: ShortLString | None = None
    description: LongText | None = None
    firstName: ShortText | None = None
    middleName: ShortText | None = None
    lastName: ShortText | None = None
    gender: Term | None = None
    organization: ShortLString | None = None
    organizationAcronym: ShortLString | None = None
    organizationType: Term | None = None
    designation: ShortLString | None = None
    department: ShortLString | None = None
    addressLine1: ShortLString | None = None
    addressLine2: ShortLString | None = None
    city: ShortLString | None = None
    state: ShortLString | None = None
    postalCode: ShortLString | None = None
    country: CountryTerm | None = None
    phones: ShortTexts | None = None
    mobiles: ShortTexts | None = None
    faxes: ShortTexts | None = None
    email_list: Emails = Field(alias="emails", min_length=1)
    websites: Links | None = None

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
