"""Commercial-use detection on checkpoint communiqués ([K3])."""

# ruff: noqa: RUF001 - fixtures are Chinese, Cyrillic and Arabic text on purpose.

from __future__ import annotations

import pytest

from services.monitor.commercial import (
    COMMERCIAL_TERM,
    NON_COMMERCIAL_TERM,
    CommercialUse,
    commercial_use,
    plain_text,
)


def _described(language: str, text: str) -> dict[str, object]:
    return {"description": {language: text}}


POSITIVE = [
    ("en", "Research towards the commercialisation of an enzyme."),
    ("en", "Research towards commercialization in the US."),
    ("en", "Pre-commercial screening of plant extracts."),
    ("en", "Product development for a cosmetics line."),
    ("en", "The compound will be marketed from 2026."),
    ("en", "Extracts offered for sale to partners."),
    ("fr", "Utilisation commerciale des extraits."),
    ("fr", "Recherche en vue de la commercialisation d'un produit."),
    ("fr", "Mise sur le marché d'un cosmétique."),
    ("es", "Uso comercial de los extractos."),
    ("es", "Comercialización de un producto farmacéutico."),
    ("ru", "Коммерческое использование экстракта."),
    ("ru", "Коммерциализация нового продукта."),
    ("zh", "用于商业化开发。"),
    ("zh", "本产品将上市销售。"),
    ("ar", "الاستخدام التجاري للمستخلص"),
    ("ar", "تسويق المنتج في الأسواق"),
]

NEGATED = [
    ("en", "Non-commercial research only."),
    ("en", "non commercial taxonomic study"),
    ("en", "Not for commercial purposes."),
    ("en", "The samples will not be used for commercial purposes."),
    ("en", "It won't be commercialised."),
    ("fr", "Recherche à des fins non commerciales."),
    ("fr", "Recherche sans but commercial."),
    ("fr", "Le produit ne sera pas commercialisé."),
    ("es", "Investigación no comercial."),
    ("es", "Sin fines comerciales."),
    ("ru", "Некоммерческое исследование."),
    ("ru", "Образцы не будут использоваться в коммерческих целях."),
    ("zh", "非商业研究。"),
    ("zh", "本研究不用于商业目的。"),
    ("ar", "لأغراض غير تجارية"),
    ("ar", "بحث غير تجاري"),
]


@pytest.mark.parametrize(("language", "text"), POSITIVE)
def test_commercial_statement_is_detected_in_each_language(language: str, text: str) -> None:
    found = commercial_use(_described(language, text))

    assert found == CommercialUse(True, "description", text, language)


@pytest.mark.parametrize(("language", "text"), NEGATED)
def test_negated_statement_is_not_commercial(language: str, text: str) -> None:
    found = commercial_use(_described(language, text))

    assert found is not None
    assert found.declared is False
    assert found.quote == text
    assert found.language == language


@pytest.mark.parametrize(
    "text",
    ["Basic taxonomic research on ants.", "دراسة الموارد الطبيعية", "非常重要的研究"],
)
def test_description_without_use_statement_says_nothing(text: str) -> None:
    assert commercial_use({"description": {"en": text}}) is None


def test_missing_description_says_nothing() -> None:
    assert commercial_use({}) is None


def test_positive_sentence_wins_over_negated_one() -> None:
    text = "<p>Non-commercial research at first.</p><p>Commercialisation is planned later.</p>"

    found = commercial_use(_described("en", text))

    assert found == CommercialUse(True, "description", "Commercialisation is planned later.", "en")


def test_both_uses_in_one_sentence_count_as_commercial() -> None:
    found = commercial_use(_described("en", "For commercial and non-commercial purposes"))

    assert found is not None
    assert found.declared is True


def test_not_only_is_not_a_negation() -> None:
    found = commercial_use(_described("en", "Not only research but also commercial use"))

    assert found is not None
    assert found.declared is True


def test_chinese_words_that_only_look_negated_still_count() -> None:
    found = commercial_use(_described("zh", "不仅用于研究，也用于商业开发"))

    assert found is not None
    assert found.declared is True


def test_html_is_stripped_before_matching_and_quoting() -> None:
    text = "<div><!--block-->Screening <b>for</b> <em>commercial</em> use&nbsp;only</div>"

    found = commercial_use(_described("en", text))

    assert found == CommercialUse(True, "description", "Screening for commercial use only", "en")


def test_text_under_the_wrong_language_key_reports_the_matching_language() -> None:
    found = commercial_use(_described("en", "Uso comercial de extractos"))

    assert found is not None
    assert found.language == "es"


def test_structured_usage_term_wins_over_description() -> None:
    cpc = {
        "usages": [{"identifier": COMMERCIAL_TERM.lower()}],
        "description": {"en": "Non-commercial research"},
    }

    assert commercial_use(cpc) == CommercialUse(True, "field", f"usages: {COMMERCIAL_TERM}", "")


def test_structured_non_commercial_term_declares_no_commercial_use() -> None:
    cpc = {"typeOfUse": {"identifier": NON_COMMERCIAL_TERM}, "description": {"en": "for sale"}}

    found = commercial_use(cpc)

    assert found is not None
    assert (found.declared, found.source) == (False, "field")


@pytest.mark.parametrize("value", [True, False])
def test_structured_boolean_field_is_read(value: bool) -> None:
    found = commercial_use({"commercialUse": value, "description": {"en": "Commercial use"}})

    assert found == CommercialUse(value, "field", f"commercialUse: {str(value).lower()}", "")


def test_plain_text_splits_blocks_and_decodes_entities() -> None:
    assert plain_text("<p>a &amp; b</p><p>c</p>") == "a & b\n\nc"
