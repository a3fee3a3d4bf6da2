# ruff: noqa: N815
"""IRCC = ``absPermit`` (DOMAIN.md §2): fields, publication rules and confidentiality."""

from __future__ import annotations

from typing import Self

from pydantic import StrictBool, StrictInt, ValidationInfo, field_validator, model_validator

from shared.records.common import (
    IsoDate,
    Links,
    LongText,
    LString,
    MapLocation,
    NationalRecord,
    OptionalDate,
    Reference,
    References,
    RequiredShortLString,
    RuleErrors,
    ShortLString,
    Terms,
    is_draft,
    is_missing,
    rule_error,
)

USAGE_COMMERCIAL = "5E833A3F-87D1-4ADD-8701-9F1B76383017"
USAGE_NON_COMMERCIAL = "60EA2F49-A9DD-406F-921A-8A1C9AA8DFDD"
KEYWORD_OTHER = "5B6177DD-5E5E-434E-8CB7-D63D67D5EBED"
AMENDMENT_UPDATE = 0
AMENDMENT_REVOKE = 1

# Field group -> the flag that makes it confidential [P1].
CONFIDENTIAL_GROUPS: dict[str, str] = {
    "providers": "providersConfidential",
    "entitiesToWhomPICGranted": "entitiesToWhomPICGrantedConfidential",
    "subjectMatter": "subjectMatterConfidential",
    "usages": "usagesConfidential",
}


class AbsPermit(NationalRecord):
    """An IRCC; construction enforces the publication rules, naming each failing field.

    Field errors (missing mandatory fields, bad shapes, PIC/MAT not true) are reported
    first; the cross-field rules run once every field is individually valid.
    Normalisations: ``dateOfExpiry: ""`` becomes absent, ``keywordOther`` is dropped
    unless the "Other" keyword is chosen (as the real form does). A draft (``is_draft``)
    is normalised and shape-checked only: PIC/MAT and the rules wait for publication.
    """

    SCHEMA = "absPermit"
    DRAFTS = True

    absCNA: Reference
    title: RequiredShortLString
    referenceToNationalPermit: ShortLString | None = None
    dateOfIssuance: IsoDate
    dateOfExpiry: OptionalDate = None
    providers: References | None = None
    providersConfidential: StrictBool | None = None
    picGranted: StrictBool
    picInformation: LString | None = None
    picDocuments: Links | None = None
    entitiesToWhomPICGranted: References | None = None
    entitiesToWhomPICGrantedConfidential: StrictBool | None = None
    matEstablished: StrictBool
    matInformation: LString | None = None
    matDocuments: Links | None = None
    subjectMatter: LString | None = None
    subjectMatterConfidential: StrictBool | None = None
    keywords: Terms | None = None
    keywordOther: ShortLString | None = None
    specimens: Links | None = None
    taxonomies: Links | None = None
    gisFiles: Links | None = None
    gisMapCenter: MapLocation | None = None
    usages: Terms | None = None
    usagesConfidential: StrictBool | None = None
    usagesDescription: LString | None = None
    thirdPartyTransferCondition: LString | None = None
    permitFiles: Links | None = None
    permitDescription: LString | None = None
    relatedIRCCs: References | None = None
    amendmentIntent: StrictInt | None = None
    amendmentDescription: LString | None = None
    relevantInformation: LString | None = None
    relevantDocuments: Links | None = None
    notes: LongText | None = None

    @field_validator("picGranted", "matEstablished")
    @classmethod
    def _must_be_true(cls, value: bool, info: ValidationInfo) -> bool:
        if value is not True and not is_draft(info):
            what = "prior informed consent" if info.field_name == "picGranted" else "MAT"
            raise rule_error(
                "must_be_true", f"must be true: no IRCC can be published without {what}"
            )
        return value

    @field_validator("amendmentIntent")
    @classmethod
    def _intent(cls, value: int | None) -> int | None:
        if value not in (None, AMENDMENT_UPDATE, AMENDMENT_REVOKE):
            raise rule_error("amendment_intent", "must be 0 (update) or 1 (revoke)")
        return value

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Self:
        errors = RuleErrors()
        if is_draft(info):  # a draft is normalised; its rule errors wait for publication
            self._check_keywords(RuleErrors())
            return self
        self._check_confidential_groups(errors)
        self._check_keywords(errors)
        if self.dateOfExpiry is not None and self.dateOfExpiry < self.dateOfIssuance:
            errors.add(
                "dateOfExpiry", "must not be before dateOfIssuance", self.dateOfExpiry.isoformat()
            )
        for index, ref in enumerate(self.relatedIRCCs or []):
            if ref.record_id == self.header.identifier:
                errors.add(
                    ("relatedIRCCs", index, "identifier"),
                    "an IRCC cannot be related to itself",
                    ref.identifier,
                )
        if self.amendmentIntent is not None and is_missing(self.amendmentDescription):
            errors.require(
                "amendmentDescription",
                "is required when amendmentIntent is set (reason for update/revocation)",
            )
        errors.raise_if_any(type(self).__name__)
        return self

    def _check_confidential_groups(self, errors: RuleErrors) -> None:
        for field, flag in CONFIDENTIAL_GROUPS.items():
            if getattr(self, flag) is not True and is_missing(getattr(self, field)):
                errors.require(field, f"is required unless {flag} is true")

    def _check_keywords(self, errors: RuleErrors) -> None:
        if not self.has_keyword_other():
            self.keywordOther = None
        elif is_missing(self.keywordOther):
            errors.require("keywordOther", "is required when the 'Other' keyword is chosen")

    def has_keyword_other(self) -> bool:
        """True when the "Other" subject-matter keyword is chosen."""
        return any(term.identifier.upper() == KEYWORD_OTHER for term in self.keywords or [])

    def is_revocation(self) -> bool:
        """True for the revision that revokes the IRCC [P7]."""
        return self.amendmentIntent == AMENDMENT_REVOKE

    def confidential_groups(self) -> list[str]:
        """Names of the field groups flagged confidential."""
        return [field for field, flag in CONFIDENTIAL_GROUPS.items() if getattr(self, flag) is True]

    def strip_confidential(self) -> AbsPermit:
        """A copy without the flagged groups and without editor ``notes`` [P1].

        PIC/MAT details would also go when ``picGranted``/``matEstablished`` are false,
        but a valid IRCC always has both true [P3].
        """
        update: dict[str, None] = {field: None for field in self.confidential_groups()}
        update["notes"] = None
        return self.model_copy(update=update, deep=True)
