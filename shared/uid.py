"""Unique identifiers of published records ([C6], [C7]) and ``id@rev`` references ([C3]).

A UID reads ``<prefix>-<short code>-<GOVERNMENT>-<documentID>[-<revision>]``, e.g.
``ABSCH-IRCC-MX-207443-2``; the revision-less form is the permanent link to the latest
revision. The real ABSCH client never writes an environment marker itself (its ``uniqueID``
filter concatenates the realm's ``uIdPrefix``, which is ``ABSCH`` even for ABS-DEV), but its
record loader strips the first ``-dev``/``-trg`` it finds anywhere in a UID before splitting
it, so :func:`parse_uid` drops one ``DEV``/``TRG`` segment at any position after the prefix.

The real Solr index names a national record by a 24-hex ``id`` whose characters 15-23 are
the documentID ([C8]); :func:`format_solr_id` and :func:`parse_solr_id` convert both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEMA_SHORT_CODES: dict[str, str] = {
    "absPermit": "IRCC",
    "absCheckpointCommunique": "CPC",
    "absCheckpoint": "CP",
    "authority": "CNA",
    "contact": "CON",
    "focalPoint": "NFP",
    "measure": "MSR",
    "absProcedure": "PRO",
    "database": "NDB",
}
SHORT_CODE_SCHEMAS: dict[str, str] = {code: schema for schema, code in SCHEMA_SHORT_CODES.items()}

ABSCH_PREFIX = "ABSCH"
CHM_PREFIX = "CHM"
NO_GOVERNMENT = "SCBD"
ENVIRONMENT_MARKERS = frozenset({"DEV", "TRG"})

MAX_ID = 2**63 - 1  # documentID and revision must fit a signed 64-bit column
_MAX_UID_LENGTH = 128
_GOVERNMENT = re.compile(r"[A-Z]{2}")
_DIGITS = re.compile(r"[0-9]+")
_REFERENCE = re.compile(r"([A-Za-z0-9_.\-]{1,128})(?:@([0-9]+))?")
_REFERENCE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")

# Solr ids of national records [C8]: ABSCH's ``integerToHex(d, "nationalrecord")`` writes the
# hex documentID over the end of ``52000000cbd0800000000000`` and ``hexToInteger`` reads
# characters 15-23 back; SCBD's other pages strip ``52000000cbd08``. We emit the 15 fixed
# characters every real id of a national record starts with (``52000000cbd0800``, sample
# 09) and 9 hex digits, so both decoders give the documentID back.
SOLR_ID_PREFIX = "52000000cbd0800"
SOLR_ID_DIGITS = 9
MAX_SOLR_DOCUMENT_ID = 16**SOLR_ID_DIGITS - 1
_SOLR_ID = re.compile(SOLR_ID_PREFIX + r"([0-9a-f]{9})", re.IGNORECASE)


class UidError(ValueError):
    """A text is not a valid record UID; the message says which part is wrong."""


class BadReference(ValueError):
    """A reference identifier is not ``<id>[@<revision>]``."""


def canonical_prefix(short_code: str) -> str:
    """The prefix the real system writes for a short code (focal points live in the CHM)."""
    return CHM_PREFIX if short_code == "NFP" else ABSCH_PREFIX


@dataclass(frozen=True, slots=True)
class Uid:
    """A parsed UID; ``str()`` gives the canonical upper-case form."""

    prefix: str
    short_code: str
    government: str
    document_id: int
    revision: int | None = None

    def __post_init__(self) -> None:
        _check_prefix(self.prefix, self.short_code)
        _check_government(self.government)
        _check_positive(self.document_id, "document id")
        if self.revision is not None:
            _check_positive(self.revision, "revision")

    @property
    def schema(self) -> str:
        """The record schema name, e.g. ``absPermit``."""
        return SHORT_CODE_SCHEMAS[self.short_code]

    def without_revision(self) -> Uid:
        """The permanent link form, always resolving to the latest revision."""
        return self.with_revision(None)

    def with_revision(self, revision: int | None) -> Uid:
        """The same record at another revision."""
        return Uid(self.prefix, self.short_code, self.government, self.document_id, revision)

    def __str__(self) -> str:
        base = f"{self.prefix}-{self.short_code}-{self.government}-{self.document_id}"
        return base if self.revision is None else f"{base}-{self.revision}"


def format_uid(
    schema: str, government: str | None, document_id: int, revision: int | None = None
) -> str:
    """Build the canonical UID of a record; ``government=None`` gives ``SCBD``."""
    code = SCHEMA_SHORT_CODES.get(schema)
    if code is None:
        raise UidError(f"unknown schema {schema!r}")
    gov = NO_GOVERNMENT if government is None else government
    if gov.isascii():  # upper-casing "ﬀ" would forge the valid-looking "FF"
        gov = gov.upper()
    return str(Uid(canonical_prefix(code), code, gov, document_id, revision))


def parse_uid(text: str) -> Uid:
    """Parse a UID in any letter case, with or without revision or a dev/training marker."""
    if not isinstance(text, str):
        raise UidError("UID must be a string")
    raw = text.strip()
    if not raw:
        raise UidError("UID is empty")
    if len(raw) > _MAX_UID_LENGTH:
        raise UidError(f"UID is longer than {_MAX_UID_LENGTH} characters")
    if not raw.isascii():
        raise UidError("UID must contain only ASCII characters")
    parts = _drop_environment(raw.upper().split("-"))
    if len(parts) not in (4, 5):
        raise UidError(
            "UID must have 4 or 5 '-'-separated parts "
            f"(prefix-code-government-documentID[-revision]), got {len(parts)}"
        )
    prefix, code, government, document = parts[:4]
    _check_prefix(prefix, code)  # before the numbers, so the first wrong part is named
    _check_government(government)
    document_id = _parse_positive(document, "document id")
    revision = _parse_positive(parts[4], "revision") if len(parts) == 5 else None
    return Uid(prefix, code, government, document_id, revision)


def parse_reference(identifier: str) -> tuple[str, int | None]:
    """Split ``<id>[@<revision>]`` into the record identifier and the pinned revision."""
    if not isinstance(identifier, str):
        raise BadReference("reference identifier must be a string")
    match = _REFERENCE.fullmatch(identifier)
    if match is None:
        raise BadReference(
            f"reference {identifier[:140]!r} must be 1-128 characters of A-Z a-z 0-9 - _ . "
            "optionally followed by @<revision>"
        )
    record_id, revision = match.group(1), match.group(2)
    if revision is None:
        return record_id, None
    number = int(revision)
    if number < 1 or number > MAX_ID:
        raise BadReference(f"revision in reference {identifier!r} must be a positive integer")
    return record_id, number


def format_reference(identifier: str, revision: int | None = None) -> str:
    """Build ``<id>`` or ``<id>@<revision>``."""
    if not _REFERENCE_ID.fullmatch(identifier):
        raise BadReference(
            f"reference {identifier[:140]!r} must be 1-128 characters of A-Z a-z 0-9 - _ ."
        )
    if revision is None:
        return identifier
    if isinstance(revision, bool) or revision < 1 or revision > MAX_ID:
        raise BadReference("reference revision must be a positive integer")
    return f"{identifier}@{revision}"


def format_solr_id(document_id: int) -> str:
    """The real index's ``id`` of the record with ``document_id`` [C8] (lower-case hex).

    Raises ``UidError`` for a documentID the 9 hex digits cannot hold (over 68.7 billion).
    """
    _check_positive(document_id, "document id")
    if document_id > MAX_SOLR_DOCUMENT_ID:
        raise UidError(f"document id {document_id} does not fit the 9 hex digits of a Solr id")
    return f"{SOLR_ID_PREFIX}{document_id:0{SOLR_ID_DIGITS}x}"


def solr_id_of(document_id: int) -> str | None:
    """:func:`format_solr_id`, or None when the documentID has no Solr id."""
    try:
        return format_solr_id(document_id)
    except UidError:
        return None


def parse_solr_id(text: str) -> int:
    """The documentID a national record's Solr ``id`` holds (any letter case) [C8].

    Only ids with the national-record prefix are accepted: the index's other kinds of
    record (meetings, notifications, news) use other prefixes and are not ours.
    """
    if not isinstance(text, str):
        raise UidError("Solr id must be a string")
    match = _SOLR_ID.fullmatch(text.strip())
    if match is None:
        raise UidError(
            f"Solr id must be {SOLR_ID_PREFIX!r} followed by {SOLR_ID_DIGITS} hex digits"
        )
    document_id = int(match.group(1), 16)
    if document_id == 0:
        raise UidError("the document id of a Solr id must be a positive integer")
    return document_id


def _drop_environment(parts: list[str]) -> list[str]:
    for index in range(1, len(parts)):
        if parts[index] in ENVIRONMENT_MARKERS:
            return parts[:index] + parts[index + 1 :]
    return parts


def _parse_positive(text: str, what: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise UidError(f"{what} must be a positive integer, got {text!r}")
    if len(text) > 19:
        raise UidError(f"{what} {text!r} is too large")
    return int(text)


def _check_positive(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UidError(f"{what} must be a positive integer, got {value!r}")
    if value > MAX_ID:
        raise UidError(f"{what} {value} is too large")


def _check_prefix(prefix: str, short_code: str) -> None:
    if prefix not in (ABSCH_PREFIX, CHM_PREFIX):
        raise UidError(f"unknown UID prefix {prefix!r} (expected ABSCH or CHM)")
    if short_code not in SHORT_CODE_SCHEMAS:
        raise UidError(f"unknown schema code {short_code!r}")
    # ABSCH-NFP-… is tolerated: the ABSCH record loader resolves any ABS-prefixed UID.
    if prefix == CHM_PREFIX and short_code != "NFP":
        raise UidError(f"prefix 'CHM' is only used for focal points (NFP), not {short_code!r}")


def _check_government(government: str) -> None:
    if government != NO_GOVERNMENT and not _GOVERNMENT.fullmatch(government):
        raise UidError(
            f"government must be an upper-case ISO 3166 alpha-2 code or SCBD, got {government!r}"
        )
