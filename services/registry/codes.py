"""Record failures in the clearing-house's own terms: ABSCH validation codes.

The real ``validate`` API answers ``{errors: [{code, property}]}`` (DOMAIN.md §7; CHD
``components/common/validation-error.md``). Every failure the registry reports about a
record is an *issue*, ``{"field", "message", "code"}``: the field path and message of the
problem+json, and the ABSCH code that ``{code, property}`` carries. The record models name
each failure's kind (the pydantic error ``type``: ``missing``, ``conditional_required``,
``one_line``, ...); :func:`code_for` maps a kind to its code. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

from pydantic import ValidationError

from shared.records import ROOT_FIELD
from shared.records.countries import is_known_government

AbschCode = Literal[
    "Error.Mandatory",
    "Error.MandatoryAnyOf",
    "Error.InvalidValue",
    "Error.InvalidProperty",
    "Error.UnspecifiedLocale",
    "Error.UnexpectedTerm",
    "Error.InvalidType",
]
ABSCH_CODES: tuple[str, ...] = get_args(AbschCode)
MANDATORY: AbschCode = "Error.Mandatory"
INVALID_VALUE: AbschCode = "Error.InvalidValue"
UNSPECIFIED_LOCALE: AbschCode = "Error.UnspecifiedLocale"
UNEXPECTED_TERM: AbschCode = "Error.UnexpectedTerm"
INVALID_TYPE: AbschCode = "Error.InvalidType"

# Something required is absent: a field, a conditionally required one, the text of an
# lstring in every language, the first entry of a list that needs one.
_MANDATORY_KINDS = frozenset({"missing", "conditional_required", "missing_text", "too_short"})
# The record models keep unknown fields (legacy data survives), so ``extra_forbidden`` only
# comes from a part that refuses them; ``Error.MandatoryAnyOf`` has no rule of the
# registry's schemas behind it (a CPC's collection dates would be one).
_BY_KIND: dict[str, AbschCode] = {
    "extra_forbidden": "Error.InvalidProperty",
    "lstring_language": UNSPECIFIED_LOCALE,
    "unknown_government": UNEXPECTED_TERM,
    "record_type": INVALID_TYPE,
    "int_from_float": INVALID_TYPE,
}
_LANGUAGES_LOC = ("header", "languages")
_ISO2 = re.compile(r"[A-Za-z]{2}")

Issue = dict[str, str]


def code_for(kind: str, loc: tuple[str | int, ...] = ()) -> AbschCode:
    """The ABSCH code of a failure of ``kind`` at ``loc``; ``Error.InvalidValue`` for every
    rule of a value (one-line text, lengths, dates, PIC/MAT true, cross-field rules)."""
    if tuple(loc[:2]) == _LANGUAGES_LOC:
        return UNSPECIFIED_LOCALE  # the record's languages: none given, or not a UN one
    if kind in _MANDATORY_KINDS:
        return MANDATORY
    if kind in _BY_KIND:
        return _BY_KIND[kind]
    if kind.endswith(("_type", "_parsing")):
        return INVALID_TYPE
    return INVALID_VALUE


def issue(field: str, message: str, code: AbschCode) -> Issue:
    """One failing field of a record."""
    return {"field": field, "message": message, "code": code}


def record_issues(exc: ValidationError) -> list[Issue]:
    """The issues of a record the models refused, one per failure, in their order."""
    out: list[Issue] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        field = ".".join(str(part) for part in loc) or ROOT_FIELD
        out.append(issue(field, error["msg"], code_for(error["type"], loc)))
    return out


def unique(issues: Iterable[Issue]) -> list[Issue]:
    """``issues`` without repeats of a (field, code), first one kept: two checks may find
    the same fault (the registry's government check and the record model's)."""
    seen: set[tuple[str, str]] = set()
    out: list[Issue] = []
    for item in issues:
        key = (item["field"], item.get("code", ""))
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def government_issue(schema: str, body: Mapping[str, Any]) -> Issue | None:
    """What is wrong with a record's ``government`` [C1], checked before anything else: it
    decides whose record this is. Absent on a national record (a contact may go without:
    it belongs to its author's government), not a term, or not a country the system knows
    (an ISO 3166 alpha-2 code, or ``eu``). None when it is fine."""
    term = body.get("government")
    if term is None:
        if schema == "contact":
            return None
        return issue("government", "is required: the government whose record this is", MANDATORY)
    if not isinstance(term, Mapping):
        return issue("government", 'must be a term: {"identifier": "<iso2>"}', INVALID_TYPE)
    code = term.get("identifier")
    if code is None or (isinstance(code, str) and not code.strip()):
        return issue("government", "is required: the government whose record this is", MANDATORY)
    if not isinstance(code, str):
        return issue("government.identifier", "must be a string", INVALID_TYPE)
    if not _ISO2.fullmatch(code):
        return issue(
            "government.identifier",
            f"{code[:40]!r} is not an ISO 3166 alpha-2 code: name the government by its "
            "two-letter code (e.g. 'mx'), not by a name or a three-letter code",
            INVALID_VALUE,
        )
    if not is_known_government(code):
        return issue(
            "government.identifier",
            f"{code!r} is no country the clearing-house knows (ISO 3166-1 alpha-2)",
            code_for("unknown_government"),
        )
    return None
