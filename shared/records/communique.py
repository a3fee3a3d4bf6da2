# ruff: noqa: N815
"""Checkpoint communiqué = ``absCheckpointCommunique`` (DOMAIN.md §3)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, StrictBool, model_validator

from shared.records.common import (
    Countries,
    Links,
    LongText,
    LString,
    MapLocation,
    NationalRecord,
    OptionalDate,
    Reference,
    References,
    RequiredLString,
    RequiredShortLString,
    RuleErrors,
    ShortLString,
    Terms,
    is_missing,
)

# Evidence that only belongs to the "IRCC not available" branch. The real web form deletes
# these when IRCCs are cited [K1], but its API stores what a national system pushes: so do we,
# and name them in a warning (see ``mixed_branch_fields``).
NO_IRCC_BRANCH_FIELDS: tuple[str, ...] = (
    "sourceCountries",
    "entityWhoGrantedPIC",
    "subjectMatter",
    "specimens",
    "taxonomies",
    "gisFiles",
    "gisMapCenter",
    "keywords",
    "evidenceOfPIC",
    "evidenceOfMAT",
    "entityToWhomPICGranted",
)


class AbsCheckpointCommunique(NationalRecord):
    """A CPC; ``government`` is the issuing (user) country.

    With IRCCs cited, no-IRCC evidence sent along is kept as sent (neither an error nor
    dropped): the monitor compares ``sourceCountries`` with the cited IRCCs.
    With ``absIRCCsNotAvailable`` true, ``sourceCountries`` and ``subjectMatter`` carry the
    evidence and ``absIRCCs`` must be empty.
    """

    SCHEMA = "absCheckpointCommunique"

    title: RequiredShortLString
    absCheckpoints: References = Field(min_length=1)
    absIRCCsNotAvailable: StrictBool | None = None
    absIRCCs: References | None = None
    sourceCountries: Countries | None = None
    subjectMatter: LString | None = None
    specimens: Links | None = None
    taxonomies: Links | None = None
    gisFiles: Links | None = None
    gisMapCenter: MapLocation | None = None
    keywords: Terms | None = None
    keywordOther: ShortLString | None = None
    evidenceOfPIC: LString | None = None
    entityWhoGrantedPIC: Reference | None = None
    entityToWhomPICGranted: Reference | None = None
    evidenceOfMAT: LString | None = None
    dateOfAccess: OptionalDate = None
    description: RequiredLString
    personsAtCheckpoint: References | None = None
    dateCollected: OptionalDate = None
    dateCollectedFrom: OptionalDate = None
    dateCollectedTo: OptionalDate = None
    relevantInformation: LString | None = None
    relevantDocuments: Links | None = None
    notes: LongText | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        errors = RuleErrors()
        self._check_collection_dates(errors)
        if self.absIRCCsNotAvailable is True:
            self._check_without_ircc(errors)
        else:
            self._check_with_ircc(errors)
        errors.raise_if_any(type(self).__name__)
        return self

    def _check_collection_dates(self, errors: RuleErrors) -> None:
        start, end = self.dateCollectedFrom, self.dateCollectedTo
        if start is not None and end is not None and start > end:
            errors.add("dateCollectedTo", "must not be before dateCollectedFrom", end.isoformat())
        if self.dateCollected is not None or (start is not None and end is not None):
            return
        if start is None and end is None:
            errors.require(
                "dateCollected", "dateCollected or dateCollectedFrom + dateCollectedTo is required"
            )
        else:
            missing = "dateCollectedTo" if end is None else "dateCollectedFrom"
            errors.require(missing, "is required for a collection period (or give dateCollected)")

    def _check_without_ircc(self, errors: RuleErrors) -> None:
        if self.absIRCCs:
            errors.add("absIRCCs", "must be empty when absIRCCsNotAvailable is true")
        for field in ("sourceCountries", "subjectMatter"):
            if is_missing(getattr(self, field)):
                errors.require(field, "is required when absIRCCsNotAvailable is true")

    def _check_with_ircc(self, errors: RuleErrors) -> None:
        if not self.absIRCCs:
            errors.require("absIRCCs", "is required unless absIRCCsNotAvailable is true")

    def cites_irccs(self) -> bool:
        """True on the IRCC branch."""
        return self.absIRCCsNotAvailable is not True

    def mixed_branch_fields(self) -> list[str]:
        """No-IRCC evidence fields that hold something although IRCCs are cited [K1]."""
        if not self.cites_irccs():
            return []
        return [field for field in NO_IRCC_BRANCH_FIELDS if not is_missing(getattr(self, field))]

    def own_country_in_sources(self) -> bool:
        """True when the issuing country lists itself as a source (worth a warning)."""
        own = self.government.identifier
        return any(country.identifier == own for country in self.sourceCountries or [])
