# ruff: noqa: N815
"""Building blocks shared by every ABSCH record ([C1]-[C4]) and the ``Record`` base.

Field names follow the real clearing-house JSON exactly, hence the camelCase.
"""

from __future__ import annotations

import html
import re
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.uid import BadReference, parse_reference

Language = Literal["en", "fr", "es", "ru", "zh", "ar"]
LANGUAGES: tuple[str, ...] = get_args(Language)
MAX_DESCRIPTION_CHARS = 300

# Size limits, so that one field cannot be huge and a whole record always fits in one
# Kafka message (1 MiB by default) with room to spare.
MAX_ID_CHARS = 128  # identifiers, codes and language tags
MAX_EMAIL_CHARS = 320  # 64 (local part) + "@" + 255 (domain)
MAX_URL_CHARS = 4_096  # longer than any real document link, signed URLs included
MAX_NAME_CHARS = 2_000  # names, titles and other short free text
MAX_TEXT_CHARS = 100_000  # descriptions and other long free text (per language)
MAX_ITEMS = 1_000  # entries of any list
# A record as UTF-8 JSON. An event carries the record and at most a copy of one of its
# fields (an IRCC's amendment reason), so 2 x 384 KiB plus the envelope stays < 1 MiB.
MAX_RECORD_BYTES = 384 * 1024

# Plausible dates of a permit, a collection or an access: a date outside is a typo
# (0001 or 9999) that would break date arithmetic downstream (expiry reminders).
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2200, 12, 31)

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_TAG_OR_COMMENT = re.compile(r"<!--.*?-->|<[^>]*>", re.DOTALL)
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)


# Validation context key of a draft: its shape is checked (types, text hygiene, sizes,
# dates), the publication rules (mandatory fields, conditional requirements, PIC/MAT true,
# cross-field rules) wait for publication, as the real clearing-house does.
DRAFT = "draft"


def is_draft(info: ValidationInfo | None) -> bool:
    """True when a record is validated as a draft (``context={DRAFT: True}``)."""
    context = info.context if info is not None else None
    return isinstance(context, dict) and context.get(DRAFT) is True


def rule_error(kind: str, message: str) -> PydanticCustomError:
    """An error of type ``kind`` to raise from a field validator."""
    # The message goes through the context so braces in user data are never templated.
    return PydanticCustomError(kind, "{detail}", {"detail": message})


class RuleErrors:
    """Collects rule violations and raises them as one ``ValidationError`` with field locs."""

    def __init__(self) -> None:
        self._details: list[InitErrorDetails] = []

    def add(
        self,
        loc: str | tuple[str | int, ...],
        message: str,
        value: object = None,
        *,
        kind: str = "record_rule",
    ) -> None:
        """Record one violation at ``loc`` (a field name or a path tuple)."""
        path = (loc,) if isinstance(loc, str) else loc
        self._details.append({"type": rule_error(kind, message), "loc": path, "input": value})

    def require(self, loc: str, message: str) -> None:
        """Record a conditionally required field that is missing."""
        self.add(loc, message, kind="conditional_required")

    def as_error(self, title: str) -> ValidationError:
        """The collected violations as one ``ValidationError``."""
        return ValidationError.from_exception_data(title, self._details)

    def raise_if_any(self, title: str) -> None:
        """Raise the collected violations; pydantic prefixes the locs when nested."""
        if self._details:
            raise self.as_error(title)


def plain_text(value: str) -> str:
    """Rich-text (HTML) field content as plain text."""
    return " ".join(html.unescape(_TAG_OR_COMMENT.sub(" ", value)).split())


def has_text(value: dict[str, str] | None) -> bool:
    """True when an lstring holds visible text in at least one language."""
    return any(plain_text(text) for text in (value or {}).values())


def is_missing(value: object) -> bool:
    """None, an empty list/string, or an lstring without visible text."""
    if value is None:
        return True
    if isinstance(value, dict):
        return not has_text(value)
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value
    return False


def too_long(value: dict[str, str] | None, limit: int = MAX_DESCRIPTION_CHARS) -> bool:
    """True when the plain text of any language exceeds ``limit`` characters."""
    return any(len(plain_text(text)) > limit for text in (value or {}).values())


def unique_emails(values: list[str] | None) -> list[str]:
    """Addresses in order, without case-insensitive duplicates."""
    seen: set[str] = set()
    result: list[str] = []
    for address in values or []:
        if address.lower() not in seen:
            seen.add(address.lower())
            result.append(address)
    return result


def _check_languages(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - set(LANGUAGES))
    if unknown:
        # Keys are unbounded input: name a few, shortened, not all of them.
        shown = ", ".join(repr(key[:20]) for key in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise rule_error(
            "lstring_language",
            f"unknown language key(s) {shown}{more}; expected {', '.join(LANGUAGES)}",
        )
    return value


def _require_text(value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
    if not has_text(value) and not is_draft(info):
        raise rule_error("missing_text", "text is required in at least one language")
    return value


# One-line fields (names, titles, codes) refuse every control character and the Unicode
# line and paragraph separators: a CR/LF in a name would start a new line in a mail.
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Multi-line fields keep tabs and line breaks and refuse the other control characters.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _describe(char: str) -> str:
    return {"\r": "CR", "\n": "LF", "\t": "TAB"}.get(char, f"U+{ord(char):04X}")


def one_line(value: str) -> str:
    """A one-line text: no line break, tab or other control character."""
    found = _NOT_ONE_LINE.search(value)
    if found:
        raise rule_error(
            "one_line",
            f"must be one line without control characters (found {_describe(found.group())})",
        )
    return value


def text_block(value: str) -> str:
    """A multi-line text: line breaks and tabs, but no other control character."""
    found = _NOT_TEXT.search(value)
    if found:
        raise rule_error(
            "control_character", f"must not contain control characters ({_describe(found.group())})"
        )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise rule_error("blank", "must not be blank")
    return value


def _email(value: str) -> str:
    address = value.strip()
    if len(address) > 254 or not _EMAIL.fullmatch(address):
        raise rule_error("email", f"{value[:100]!r} is not a valid e-mail address")
    return address


def _iso_date(value: object) -> object:
    if isinstance(value, date) and not isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            raise rule_error("date_invalid", f"{value!r} is not a calendar date") from None
    else:
        raise rule_error("date_format", "date must be a YYYY-MM-DD string")
    if not EARLIEST_DATE <= parsed <= LATEST_DATE:
        raise rule_error(
            "date_range",
            f"{parsed.isoformat()} is not a plausible date: expected "
            f"{EARLIEST_DATE.isoformat()} to {LATEST_DATE.isoformat()}",
        )
    return parsed


def _optional_iso_date(value: object) -> object:
    # The real client turns an emptied date picker into "" and drops it on save.
    return None if value is None or value == "" else _iso_date(value)


Code = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS), AfterValidator(one_line)]
ShortText = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS), AfterValidator(one_line)]
# A short text whose form field is a text area (postal addresses).
ShortBlock = Annotated[
    str, StringConstraints(max_length=MAX_NAME_CHARS), AfterValidator(text_block)
]
LongText = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS), AfterValidator(text_block)]
# lstrings: at most one value per language (unknown keys are refused), each bounded.
LString = Annotated[
    dict[str, LongText], Field(max_length=MAX_ITEMS), AfterValidator(_check_languages)
]
RequiredLString = Annotated[LString, AfterValidator(_require_text)]
ShortLString = Annotated[
    dict[str, ShortText], Field(max_length=MAX_ITEMS), AfterValidator(_check_languages)
]
RequiredShortLString = Annotated[ShortLString, AfterValidator(_require_text)]
BlockLString = Annotated[
    dict[str, ShortBlock], Field(max_length=MAX_ITEMS), AfterValidator(_check_languages)
]
NonBlank = Annotated[ShortText, AfterValidator(_not_blank)]
NonBlankCode = Annotated[Code, AfterValidator(_not_blank)]
Url = Annotated[
    str,
    StringConstraints(max_length=MAX_URL_CHARS),
    AfterValidator(one_line),
    AfterValidator(_not_blank),
]
Email = Annotated[str, StringConstraints(max_length=MAX_EMAIL_CHARS), AfterValidator(_email)]
ShortTexts = Annotated[list[ShortText], Field(max_length=MAX_ITEMS)]
Codes = Annotated[list[Code], Field(max_length=MAX_ITEMS)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
OptionalDate = Annotated[date | None, BeforeValidator(_optional_iso_date)]


class Part(BaseModel):
    """A nested value; unknown keys are kept so legacy data survives a round trip."""

    model_config = ConfigDict(extra="allow")


class Term(Part):
    """Thesaurus term or country: ``{identifier, customValue?}``."""

    identifier: NonBlankCode
    # The "Other" term's own words; the real form gives them a text area.
    customValue: BlockLString | None = None


class CountryTerm(Term):
    """A country term; the identifier is normalised to lower-case ISO 3166 alpha-2."""

    @field_validator("identifier")
    @classmethod
    def _iso2(cls, value: str) -> str:
        if not _COUNTRY.fullmatch(value):
            raise rule_error("country", f"{value[:40]!r} is not a two-letter ISO country code")
        return value.lower()


class Reference(Part):
    """Link to another record: ``{identifier: "<id>[@<revision>]"}`` ([C3])."""

    identifier: str  # parse_reference bounds it (1-128 characters and a revision)

    @field_validator("identifier")
    @classmethod
    def _reference(cls, value: str) -> str:
        try:
            parse_reference(value)
        except BadReference as exc:
            raise rule_error("reference", str(exc)) from None
        return value

    @property
    def record_id(self) -> str:
        """The referenced record's identifier without the pinned revision."""
        return parse_reference(self.identifier)[0]

    @property
    def revision(self) -> int | None:
        """The pinned revision, or None for "latest"."""
        return parse_reference(self.identifier)[1]


class Link(Part):
    """A URL with optional display name, tags and language."""

    url: Url
    name: ShortText | None = None
    tag: ShortText | None = None
    tags: ShortTexts | None = None
    language: Code | None = None


class MapLocation(Part):
    """Map centre of a GIS block."""

    zoom: int
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(allow_inf_nan=False)


References = Annotated[list[Reference], Field(max_length=MAX_ITEMS)]
Links = Annotated[list[Link], Field(max_length=MAX_ITEMS)]
Terms = Annotated[list[Term], Field(max_length=MAX_ITEMS)]
Countries = Annotated[list[CountryTerm], Field(max_length=MAX_ITEMS)]


class Header(Part):
    """Record envelope; ``schema`` is held as ``schema_name`` (``BaseModel.schema`` exists)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)

    identifier: str = Field(pattern=r"^[A-Za-z0-9_-]{11,128}$")
    schema_name: Code = Field(alias="schema")
    languages: list[Language] = Field(min_length=1, max_length=len(LANGUAGES))


class Record(BaseModel):
    """Base of every record model; ``SCHEMA`` is the ``header.schema`` it accepts.

    A JSON field whose name clashes with a method (``emails``) is held under another
    attribute name with the JSON name as alias; dumps always use the JSON names.
    """

    SCHEMA: ClassVar[str] = ""
    # True when the model honours draft validation (``is_draft``): its publication rules
    # stand aside for a draft. Records published without drafts (CPCs) keep them always.
    DRAFTS: ClassVar[bool] = False
    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)

    header: Header

    @field_validator("header")
    @classmethod
    def _schema_matches(cls, header: Header) -> Header:
        if cls.SCHEMA and header.schema_name != cls.SCHEMA:
            errors = RuleErrors()
            errors.add(
                "schema",
                f"expected schema {cls.SCHEMA!r}, got {header.schema_name!r}",
                header.schema_name,
                kind="schema_mismatch",
            )
            errors.raise_if_any("Header")
        return header

    @model_validator(mode="after")
    def _fits_in_a_message(self) -> Self:
        # Unknown keys are kept (extra="allow"), so field limits alone bound nothing.
        size = len(self.model_dump_json(by_alias=True, exclude_none=True).encode())
        if size > MAX_RECORD_BYTES:
            errors = RuleErrors()
            errors.add(
                (),
                f"the record is {size} bytes as JSON; at most {MAX_RECORD_BYTES} are accepted",
                kind="record_too_large",
            )
            errors.raise_if_any(type(self).__name__)
        return self

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict in the real ABSCH shape; absent optional fields are omitted."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)

    def emails(self) -> list[str]:
        """Addresses held by the record itself; none for IRCCs, CPCs and checkpoints."""
        return []

    def languages(self) -> list[str]:
        """The record's languages, in header order."""
        return list(self.header.languages)

    def government_code(self) -> str | None:
        """Lower-case ISO-2 of ``government``, when the record has one."""
        government = getattr(self, "government", None)
        return government.identifier if isinstance(government, CountryTerm) else None


class NationalRecord(Record):
    """A record published by one government."""

    government: CountryTerm
