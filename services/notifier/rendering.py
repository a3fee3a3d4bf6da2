"""E-mail rendering (DESIGN.md §5): a subject, a text part and an HTML part per kind and language.

``templates/<kind>.txt.j2`` and ``templates/<kind>.html.j2`` lay a mail out; every word of it
comes from ``templates/messages.<lang>.json`` (one catalogue per UN language, English as the
fallback). Record values reach the templates already localised and already reduced to plain
text (rich-text lstrings lose their tags); Jinja escapes everything in the HTML part, so no
record content is ever emitted as markup. Confidential values are replaced by the translated
"Confidential information" whenever their flag is set, even if the value is present.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.notifier import utilization
from services.notifier.domain import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    cites_irccs,
    is_confidential,
    reference_id,
)
from shared.uid import UidError, parse_uid

KIND_BY_EVENT: dict[str, str] = {
    "ircc.published": "ircc_published",
    "ircc.amended": "ircc_amended",
    "ircc.revoked": "ircc_revoked",
    "cpc.published": "cpc_published",
    "cpc.amended": "cpc_amended",
    "discrepancy.flagged": "discrepancy_flagged",
    "utilization.first_use": "utilization_first_use",
    "utilization.report": "utilization_report",
}
# The expiry reminder is not driven by an event but by the daily expiry check.
KINDS: tuple[str, ...] = (*KIND_BY_EVENT.values(), "ircc_expiry")
COMMERCIAL = "5E833A3F-87D1-4ADD-8701-9F1B76383017"
NON_COMMERCIAL = "60EA2F49-A9DD-406F-921A-8A1C9AA8DFDD"
CPC_KINDS = frozenset({"cpc_published", "cpc_amended"})
# Fields of a communiqué an amendment mail names by their label too (message key).
FIELD_LABELS = {
    "absCheckpoints": "checkpoints",
    "absIRCCs": "cited_irccs",
    "description": "description",
    "government": "issuing_country",
    "sourceCountries": "source_countries",
    "subjectMatter": "subject_matter",
}
TEMPLATES = Path(__file__).with_name("templates")
RTL_LANGUAGES = frozenset({"ar"})

_MAX_EVIDENCE_ITEMS = 20
_MAX_VALUE_CHARS = 300
_MAX_SUBJECT_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")

Label = str | Mapping[str, str]


@dataclass(frozen=True)
class DiscrepancyFacts:
    """What a discrepancy mail reports (from ``discrepancy.flagged``)."""

    rule: str
    cpc_uid: str
    ircc_uid: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MailContext:
    """Language-neutral facts of one mail; :func:`render` localises them.

    ``uid`` is the UID (with revision) of the record the mail is about: the IRCC, or the
    CPC for CPC and discrepancy mails. ``record`` is that IRCC or CPC in ABSCH shape.
    ``labels`` maps a referenced identifier (without ``@rev``) to a display name or lstring,
    e.g. a CNA's name or a cited IRCC's UID; unlabelled references show their identifier.
    An amended CPC's mail names the ``changed`` fields and the ``previous_uid`` it replaces.
    """

    uid: str
    public_base_url: str
    event_type: str
    record: Mapping[str, Any] = field(default_factory=dict)
    reason: Mapping[str, str] | None = None
    labels: Mapping[str, Label] = field(default_factory=dict)
    discrepancy: DiscrepancyFacts | None = None
    changed: tuple[str, ...] = ()
    previous_uid: str | None = None
    # Utilization alerts: ``uid`` is the first-use CPC, or "<PROVIDER>:<YYYY-MM>" for a
    # report (no record of its own: its mail links each IRCC instead).
    utilization: utilization.UtilizationFacts | None = None

    @property
    def permanent_link(self) -> str:
        """The verification link: the revision-less UID, always the latest revision [C6]."""
        return record_link(self.public_base_url, self.uid)


@dataclass(frozen=True)
class RenderedMail:
    """A mail ready for the SMTP adapter."""

    subject: str
    text: str
    html: str


def permanent_uid(uid: str) -> str:
    """The UID without its revision; text that is not a UID is returned unchanged."""
    try:
        return str(parse_uid(uid).without_revision())
    except UidError:
        return uid.strip()


def record_link(public_base_url: str, uid: str) -> str:
    """``<public_base_url>/v1/records/<UID without revision>``."""
    return f"{public_base_url.rstrip('/')}/v1/records/{quote(permanent_uid(uid), safe='')}"


def pick(value: object, language: str) -> str:
    """An lstring in ``language``, else English, else its first non-empty value."""
    if isinstance(value, str):
        return value
    if not isinstance(value, Mapping):
        return ""
    for key in (language, DEFAULT_LANGUAGE):
        text = value.get(key)
        if isinstance(text, str) and text.strip():
            return text
    return next((t for t in value.values() if isinstance(t, str) and t.strip()), "")


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML fragment; script and style content is dropped."""

    _SKIP = frozenset({"script", "style", "template", "head", "title"})
    _BREAK = frozenset({"br", "p", "div", "li", "tr", "ul", "ol", "table", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK or re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def plain_text(fragment: str) -> str:
    """Rich text (HTML) as plain text: tags, comments and scripts gone, entities decoded."""
    parser = _TextExtractor()
    parser.feed(fragment)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _one_line(text: str, limit: int = _MAX_SUBJECT_CHARS) -> str:
    # Subjects end up in a mail header: no line breaks, bounded length.
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@lru_cache(maxsize=len(LANGUAGES))
def catalog(language: str) -> dict[str, Any]:
    """The message catalogue of a UN language (raises for any other code)."""
    if language not in LANGUAGES:
        raise ValueError(f"no catalogue for language {language!r}")
    path = TEMPLATES / f"messages.{language}.json"
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


class _Localiser:
    """Turns record values into display strings in one language."""

    def __init__(self, ctx: MailContext, language: str, messages: dict[str, Any]) -> None:
        self.ctx, self.lang, self.m = ctx, language, messages

    def text(self, value: object, *, rich: bool = False) -> str:
        picked = pick(value, self.lang).strip()
        return (plain_text(picked) if rich else picked) or str(self.m["not_provided"])

    def refs(self, value: object) -> str:
        items = value if isinstance(value, list) else [value] if value else []
        names = [self._ref(item) for item in items]
        return "; ".join(n for n in names if n) or str(self.m["not_provided"])

    def _ref(self, reference: object) -> str:
        raw = reference.get("identifier") if isinstance(reference, Mapping) else reference
        key = reference_id(reference)
        label = self.ctx.labels.get(key) if key else None
        return pick(label, self.lang).strip() if label else str(raw or "")

    def countries(self, value: object) -> str:
        items = value if isinstance(value, list) else [value] if value else []
        codes = [(reference_id(item) or "").upper() for item in items]
        return ", ".join(c for c in codes if c) or str(self.m["not_provided"])

    def date(self, value: object) -> str:
        return value if isinstance(value, str) and value else str(self.m["not_provided"])

    def yes_no(self, value: object) -> str:
        return str(self.m["yes"] if value is True else self.m["no"])

    def guarded(self, flag: str, shown: str) -> str:
        # Flag set ⇒ the value is never shown, even if it slipped through upstream [P1].
        return str(self.m["confidential"]) if is_confidential(self.ctx.record, flag) else shown

    def usages(self, value: object) -> str:
        names = {COMMERCIAL: self.m["usages"]["commercial"]}
        names[NON_COMMERCIAL] = self.m["usages"]["non_commercial"]
        shown = []
        for term in value if isinstance(value, list) else []:
            key = (reference_id(term) or "").upper()
            custom = term.get("customValue") if isinstance(term, Mapping) else None
            shown.append(str(names.get(key) or pick(custom, self.lang) or key))
        return "; ".join(s for s in shown if s) or str(self.m["not_provided"])


def _ircc_view(loc: _Localiser) -> dict[str, str]:
    r = loc.ctx.record
    return {
        "title": loc.text(r.get("title")),
        "country": loc.countries(r.get("government")),
        "cna": loc.refs(r.get("absCNA")),
        "issued": loc.date(r.get("dateOfIssuance")),
        "expiry": loc.date(r.get("dateOfExpiry")),
        "providers": loc.guarded("providersConfidential", loc.refs(r.get("providers"))),
        "pic_holders": loc.guarded(
            "entitiesToWhomPICGrantedConfidential", loc.refs(r.get("entitiesToWhomPICGranted"))
        ),
        "subject_matter": loc.guarded(
            "subjectMatterConfidential", loc.text(r.get("subjectMatter"), rich=True)
        ),
        "usages": loc.guarded("usagesConfidential", loc.usages(r.get("usages"))),
        "pic": loc.yes_no(r.get("picGranted")),
        "mat": loc.yes_no(r.get("matEstablished")),
    }


def _cpc_view(loc: _Localiser) -> dict[str, str | None]:
    r = loc.ctx.record
    with_ircc = cites_irccs(r)
    return {
        "country": loc.countries(r.get("government")),
        "checkpoints": loc.refs(r.get("absCheckpoints")),
        "irccs": loc.refs(r.get("absIRCCs")) if with_ircc else None,
        "source_countries": None if with_ircc else loc.countries(r.get("sourceCountries")),
        "description": loc.text(r.get("description"), rich=True),
    }


def _changed_fields(loc: _Localiser) -> list[str]:
    """Each changed field by its label in the recipient's language and its ABSCH name."""
    shown = []
    for name in loc.ctx.changed:
        key = FIELD_LABELS.get(name)
        label = loc.m["labels"][key] if key else None
        shown.append(f"{label} ({name})" if label else name)
    return shown


def _evidence_lines(evidence: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in list(evidence.items())[:_MAX_EVIDENCE_ITEMS]:
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        shown = _one_line(shown, _MAX_VALUE_CHARS)
        lines.append(f"{key}: {shown}")
    return lines


def _discrepancy_view(loc: _Localiser) -> dict[str, Any]:
    facts = loc.ctx.discrepancy or DiscrepancyFacts(rule="", cpc_uid=loc.ctx.uid)
    link = record_link(loc.ctx.public_base_url, facts.ircc_uid) if facts.ircc_uid else None
    return {
        "rule": facts.rule or loc.m["not_provided"],
        "cpc_uid": facts.cpc_uid,
        "ircc_uid": facts.ircc_uid or loc.m["not_provided"],
        "ircc_link": link,
        "evidence": _evidence_lines(facts.evidence),
    }


def _utilization_view(loc: _Localiser) -> dict[str, Any]:
    assert loc.ctx.utilization is not None
    return utilization.view(
        loc.ctx.utilization,
        loc.lang,
        loc.m,
        link=lambda uid: record_link(loc.ctx.public_base_url, uid),
        label=loc.refs,
    )


def _view(kind: str, language: str, ctx: MailContext) -> dict[str, Any]:
    messages = catalog(language)
    loc = _Localiser(ctx, language, messages)
    reason = pick(ctx.reason or ctx.record.get("amendmentDescription"), language)
    view: dict[str, Any] = {
        "lang": language,
        "direction": "rtl" if language in RTL_LANGUAGES else "ltr",
        "m": messages,
        "k": messages["kinds"][kind],
        "uid": ctx.uid,
        "link": ctx.permanent_link,
        "event_type": ctx.event_type,
        "reason": plain_text(reason) if reason else "",
        "ircc": _ircc_view(loc) if kind.startswith("ircc_") else None,
        "cpc": _cpc_view(loc) if kind in CPC_KINDS else None,
        "changed": _changed_fields(loc),
        "previous_uid": ctx.previous_uid or messages["not_provided"],
        "discrepancy": _discrepancy_view(loc) if kind == "discrepancy_flagged" else None,
        "utilization": _utilization_view(loc) if ctx.utilization else None,
    }
    facts = {
        "uid": ctx.uid,
        "rule": view["discrepancy"]["rule"] if view["discrepancy"] else "",
        "expiry": view["ircc"]["expiry"] if view["ircc"] else "",
        **utilization.subject_facts(ctx.utilization, language),
    }
    view["subject"] = _one_line(str(messages["kinds"][kind]["subject"]).format(**facts))
    return view


def render(kind: str, language: str, context: MailContext) -> RenderedMail:
    """Render one mail; a language outside the six UN languages falls back to English."""
    if kind not in KINDS:
        raise ValueError(f"unknown mail kind {kind!r}; expected one of {', '.join(KINDS)}")
    code = (language or "").lower()
    view = _view(kind, code if code in LANGUAGES else DEFAULT_LANGUAGE, context)
    env = _environment()
    return RenderedMail(
        subject=view["subject"],
        text=env.get_template(f"{kind}.txt.j2").render(view),
        html=env.get_template(f"{kind}.html.j2").render(view),
    )
