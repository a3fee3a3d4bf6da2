"""Does a checkpoint communiqué declare commercial use? ([K3])

The CPC has no usage field in the real schema: its mandatory ``description`` must state the
type of use (research stage, pre-commercialisation, commercialisation). A structured field
wins when a sender adds one; accepted fields, in this order:

- ``usages`` or ``typeOfUse`` holding usage terms (one term or a list) of the IRCC domain:
  Commercial ``5E833A3F-…`` means declared, Non-commercial ``60EA2F49-…`` alone means not;
- ``commercialUse`` or ``typeOfUse`` as a JSON boolean.

Otherwise each sentence of ``description`` (every language key, HTML stripped) is read with
phrase lists for the six UN languages, after masking negated phrases such as
"non-commercial" or "sans but commercial". Pure code, no I/O.
"""

# ruff: noqa: RUF001 - the phrase lists are Cyrillic, Chinese and Arabic text on purpose.
from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

COMMERCIAL_TERM = "5E833A3F-87D1-4ADD-8701-9F1B76383017"
NON_COMMERCIAL_TERM = "60EA2F49-A9DD-406F-921A-8A1C9AA8DFDD"
UN_LANGUAGES = ("en", "fr", "es", "ru", "zh", "ar")
_TERM_FIELDS = ("usages", "typeOfUse")
_BOOLEAN_FIELDS = ("commercialUse", "typeOfUse")
_MAX_QUOTE = 500


@dataclass(frozen=True)
class CommercialUse:
    """What a CPC says about commercial use; ``language`` is empty for structured fields."""

    declared: bool
    source: Literal["field", "description"]
    quote: str
    language: str


# Positive phrases per language. Arabic attaches prefixes (al-, li-, wa-), so its stems are
# matched inside words; "بيع" (sale) only stands alone because it also occurs in "طبيعي".
_POSITIVE: dict[str, str] = {
    "en": (
        r"\bcommercial\w*|\bproduct\s+development\b|\bmarket(?:ed|ing)\b"
        r"|\bplac(?:ed|ing)\s+on\s+the\s+market\b|\bsales?\b|\bsold\b"
    ),
    "fr": (
        r"\bcommercia\w*|\bmise\s+sur\s+le\s+march[ée]\b|\bventes?\b"
        r"|\bd[ée]veloppement\s+de\s+produits?\b"
    ),
    "es": (
        r"\bcomercial\w*|\bventas?\b|\bdesarrollo\s+de\s+productos?\b"
        r"|\bpuesta\s+en\s+el\s+mercado\b"
    ),
    "ru": (
        r"\bкоммерч\w*|\bкоммерц\w*|\bпродаж\w*|\bвывод\w*\s+на\s+рынок"
        r"|\bразработк\w*\s+продукт\w*"
    ),
    "zh": r"商业化|商業化|商业|商業|商品化|商用|销售|銷售|上市|产品开发|產品開發",
    "ar": r"تجاري|تجارة|تسويق|(?<!\w)و?(?:ال|لل|ل|ب)?بيع(?!\w)",
}

# A negation word followed, within a few words, by a positive phrase of the same language.
_WINDOW = r"(?:\W+\w+){0,4}?\W+"
_NEGATION: dict[str, str] = {
    "en": (
        r"\bnon[\s\-‐‑]*commercial\w*"
        rf"|(?:\bnot\b(?!\s+only)|\bno\b|\bnever\b|\bwithout\b|n't\b|\bnor\b){_WINDOW}"
        rf"(?:{_POSITIVE['en']})"
    ),
    "fr": (
        r"\bnon[\s\-‐‑]*commercia\w*"
        rf"|(?:\bsans\b|\bpas\b|\bjamais\b|\baucune?\b|\bni\b){_WINDOW}(?:{_POSITIVE['fr']})"
    ),
    "es": (
        r"\bno[\s\-‐‑]*comercial\w*"
        rf"|(?:\bno\b|\bsin\b|\bnunca\b|\bning[uú]n[oa]?\b|\bni\b){_WINDOW}(?:{_POSITIVE['es']})"
    ),
    "ru": (
        r"\bне[\s\-]*коммерч\w*"
        rf"|(?:\bне\b|\bбез\b|\bни\b|\bнет\b){_WINDOW}(?:{_POSITIVE['ru']})"
    ),
    # 不仅 "not only", 非常 "very", 未来 "future", 无论 "whatever" are not negations.
    "zh": (
        r"非商[业業](?:化|性)?"
        r"|(?:不(?!仅|僅|但|论|論|同|久)|未(?!来|來|经|經)|无(?!论)|無(?!論)|没有|沒有|禁止|并非|並非)"
        rf"[^，。,.;；：:！？!?、\s]{{0,6}}?(?:{_POSITIVE['zh']})"
    ),
    "ar": (
        r"غير\s*(?:ال)?تجاري\w*"
        rf"|(?<!\w)و?(?:غير|لا|لن|ليس|ليست|بدون|دون|عدم){_WINDOW}\w*?(?:{_POSITIVE['ar']})"
    ),
}

_POSITIVE_RE = {lang: re.compile(p, re.IGNORECASE) for lang, p in _POSITIVE.items()}
_NEGATION_RE = re.compile("|".join(f"(?:{p})" for p in _NEGATION.values()), re.IGNORECASE)
_BLOCK_TAG = re.compile(r"</?(?:p|div|br|li|ul|ol|h[1-6]|tr|td|th|table|blockquote)\b[^>]*>", re.I)
_COMMENT_OR_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.DOTALL)
_SENTENCE_END = re.compile(r"[\r\n]+|(?<=[.!?;])\s+|(?<=[。！？；؟؛])")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


def plain_text(value: str) -> str:
    """Text of a rich-text (HTML) value: tags and comments removed, entities decoded."""
    text = _BLOCK_TAG.sub("\n", value)
    text = _COMMENT_OR_TAG.sub("", text)
    return _SPACES.sub(" ", html.unescape(text)).strip()


def commercial_use(cpc: dict[str, Any]) -> CommercialUse | None:
    """Commercial use declared (or explicitly excluded) by a CPC; ``None`` when it says nothing."""
    from_field = _from_fields(cpc)
    if from_field is not None:
        return from_field
    return _from_description(cpc.get("description"))


def _from_fields(cpc: dict[str, Any]) -> CommercialUse | None:
    for name in _TERM_FIELDS:
        ids = _term_ids(cpc.get(name))
        if COMMERCIAL_TERM in ids:
            return CommercialUse(True, "field", f"{name}: {COMMERCIAL_TERM}", "")
        if NON_COMMERCIAL_TERM in ids:
            return CommercialUse(False, "field", f"{name}: {NON_COMMERCIAL_TERM}", "")
    for name in _BOOLEAN_FIELDS:
        value = cpc.get(name)
        if isinstance(value, bool):
            return CommercialUse(value, "field", f"{name}: {str(value).lower()}", "")
    return None


def _term_ids(value: Any) -> set[str]:
    items = value if isinstance(value, list) else [value]
    ids = (item.get("identifier") if isinstance(item, dict) else item for item in items)
    return {ident.strip().upper() for ident in ids if isinstance(ident, str)}


def _from_description(description: Any) -> CommercialUse | None:
    negated: CommercialUse | None = None
    for key, sentence in _sentences(description):
        masked = _NEGATION_RE.sub(lambda match: " " * len(match.group()), sentence)
        language = _positive_language(masked, key)
        if language is not None:
            return CommercialUse(True, "description", _quote(sentence), language)
        if negated is None and masked != sentence:
            negation_language = _positive_language(sentence, key) or key
            negated = CommercialUse(False, "description", _quote(sentence), negation_language)
    return negated


def _sentences(description: Any) -> Iterator[tuple[str, str]]:
    """(language key, sentence) pairs, UN languages first so that results are stable."""
    if isinstance(description, str):
        description = {"en": description}
    if not isinstance(description, dict):
        return
    extra = sorted(k for k in description if isinstance(k, str) and k not in UN_LANGUAGES)
    for key in (*UN_LANGUAGES, *extra):
        value = description.get(key)
        if not isinstance(value, str):
            continue
        for sentence in _SENTENCE_END.split(plain_text(value)):
            if sentence.strip():
                yield key, sentence.strip()


def _positive_language(text: str, key: str) -> str | None:
    """Language whose phrase list matches ``text``, trying the text's own key first.

    Every list is tried because real records carry text under the wrong language key.
    """
    order = (key, *(lang for lang in UN_LANGUAGES if lang != key))
    for language in order:
        pattern = _POSITIVE_RE.get(language)
        if pattern is not None and pattern.search(text):
            return language
    return None


def _quote(sentence: str) -> str:
    return sentence if len(sentence) <= _MAX_QUOTE else sentence[: _MAX_QUOTE - 1] + "…"
