"""E-mail rendering: every kind in every UN language, no confidential value, no raw HTML."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from services.notifier.domain import LANGUAGES
from services.notifier.rendering import (
    COMMERCIAL,
    KIND_BY_EVENT,
    KINDS,
    NON_COMMERCIAL,
    DiscrepancyFacts,
    MailContext,
    RenderedMail,
    catalog,
    permanent_uid,
    pick,
    plain_text,
    render,
)
from tests.unit.notifier.test_utilization import utilization_context

BASE_URL = "https://absch.example.org/"
IRCC_UID = "ABSCH-IRCC-MX-207443-2"
IRCC_LINK = "https://absch.example.org/v1/records/ABSCH-IRCC-MX-207443"
CPC_UID = "ABSCH-CPC-DE-1001-1"
CPC_LINK = "https://absch.example.org/v1/records/ABSCH-CPC-DE-1001"
AMENDED_UID = "ABSCH-CPC-DE-1001-2"
SENTINEL = "SENTINEL-CONFIDENTIAL-7f3a"
IRCC_KINDS = [kind for kind in KINDS if kind.startswith("ircc_")]


def ircc_record(**extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "header": {"identifier": "IRCC-MX", "schema": "absPermit", "languages": ["en"]},
        "government": {"identifier": "mx"},
        "absCNA": {"identifier": "CNA-MX@2"},
        "title": {"en": "Permit SEMARNAT/42", "fr": "Permis SEMARNAT/42"},
        "dateOfIssuance": "2024-01-10",
        "dateOfExpiry": "2026-01-10",
        "providers": [{"identifier": "PROVIDER@1"}],
        "entitiesToWhomPICGranted": [{"identifier": "HOLDER@1"}],
        "subjectMatter": {"en": "<div><!--block-->Seeds of <b>Zea mays</b></div>"},
        "usages": [{"identifier": NON_COMMERCIAL}],
        "picGranted": True,
        "matEstablished": True,
    }
    record.update(extra)
    return record


def cpc_record(**extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "header": {"identifier": "CPC-DE", "schema": "absCheckpointCommunique"},
        "government": {"identifier": "de"},
        "absCheckpoints": [{"identifier": "CP-DE@1"}],
        "absIRCCs": [{"identifier": "IRCC-MX@2"}],
        "description": {"en": "<p>Basic research on <i>Zea mays</i></p>"},
    }
    record.update(extra)
    return record


LABELS = {
    "CNA-MX": {"en": "SEMARNAT", "es": "Secretaría de Medio Ambiente"},
    "PROVIDER": "Comunidad de San Juan",
    "HOLDER": "University of Bonn",
    "CP-DE": {"en": "German checkpoint"},
    "IRCC-MX": IRCC_UID,
}


def context_for(kind: str, **overrides: Any) -> MailContext:
    """A representative context for each kind."""
    if kind == "cpc_published":
        fields: dict[str, Any] = {"uid": CPC_UID, "record": cpc_record()}
    elif kind == "cpc_amended":
        fields = {
            "uid": AMENDED_UID,
            "record": cpc_record(),
            "reason": {"en": "Wrong collection date", "fr": "Date de collecte erronée"},
            "changed": ("dateCollected", "description"),
            "previous_uid": CPC_UID,
        }
    elif kind == "discrepancy_flagged":
        facts = DiscrepancyFacts(
            rule="USE_MISMATCH",
            cpc_uid=CPC_UID,
            ircc_uid=IRCC_UID,
            evidence={"declared_use": "commercial", "ircc_usages": ["non-commercial"]},
        )
        fields = {"uid": CPC_UID, "discrepancy": facts}
    elif kind.startswith("utilization_"):
        return utilization_context(kind, BASE_URL, **overrides)
    else:
        fields = {"uid": IRCC_UID, "record": ircc_record()}
    if kind in ("ircc_amended", "ircc_revoked"):
        fields["reason"] = {"en": "Corrected the permit number", "fr": "Numéro corrigé"}
    event_type = {v: k for k, v in KIND_BY_EVENT.items()}.get(kind, "ircc.expiry_due")
    fields = {"labels": LABELS, **fields, **overrides}
    return MailContext(public_base_url=BASE_URL, event_type=event_type, **fields)


def all_parts(mail: RenderedMail) -> str:
    return "\n".join((mail.subject, mail.text, mail.html))


@pytest.mark.parametrize(("kind", "language"), list(itertools.product(KINDS, LANGUAGES)))
def test_every_kind_renders_in_every_language(kind, language):
    ctx = context_for(kind)

    mail = render(kind, language, ctx)

    assert mail.subject.strip()
    assert mail.text.strip()
    assert mail.html.strip()
    assert "\n" not in mail.subject
    assert "\r" not in mail.subject
    assert ctx.uid in mail.subject
    link = CPC_LINK if ctx.uid.startswith("ABSCH-CPC-") else IRCC_LINK
    assert link in mail.text
    assert f'href="{link}"' in mail.html
    assert ctx.uid in mail.text  # the UID with its revision
    assert f'lang="{language}"' in mail.html


@pytest.mark.parametrize("kind", KINDS)
def test_the_six_languages_read_differently(kind):
    mails = [render(kind, language, context_for(kind)) for language in LANGUAGES]

    for part in ("subject", "text", "html"):
        values = [getattr(mail, part) for mail in mails]
        assert len(set(values)) == len(LANGUAGES), part


@pytest.mark.parametrize("kind", KINDS)
def test_non_english_mails_carry_no_english_sentences(kind):
    english = catalog("en")
    intro = english["kinds"][kind]["intro"]
    footer = english["footer"]

    for language in LANGUAGES[1:]:
        text = render(kind, language, context_for(kind)).text
        assert intro not in text
        assert footer not in text


def test_catalogues_have_the_same_keys_and_placeholders():
    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: shape(item) for key, item in value.items()}
        return sorted(p for p in ("{uid}", "{rule}", "{expiry}") if p in value)

    reference = shape(catalog("en"))
    for language in LANGUAGES:
        assert shape(catalog(language)) == reference, language


@pytest.mark.parametrize("language", LANGUAGES)
def test_unknown_language_falls_back_to_english(language):
    ctx = context_for("ircc_published")
    english = render("ircc_published", "en", ctx)

    assert render("ircc_published", "de", ctx) == english
    assert render("ircc_published", "", ctx) == english
    assert render("ircc_published", language.upper(), ctx) == render(
        "ircc_published", language, ctx
    )


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown mail kind"):
        render("ircc_deleted", "en", context_for("ircc_published"))


@pytest.mark.parametrize(("kind", "language"), list(itertools.product(IRCC_KINDS, LANGUAGES)))
def test_confidential_values_never_appear(kind, language):
    # Upstream strips flagged fields; here they slipped through on purpose.
    record = ircc_record(
        providers=[{"identifier": f"{SENTINEL}-P@1"}],
        providersConfidential=True,
        entitiesToWhomPICGranted=[{"identifier": "HOLDER@1"}],
        entitiesToWhomPICGrantedConfidential=True,
        subjectMatter={"en": f"<p>{SENTINEL} seeds</p>", language: f"{SENTINEL} local"},
        subjectMatterConfidential=True,
        usages=[{"identifier": "X", "customValue": {"en": SENTINEL}}, {"identifier": COMMERCIAL}],
        usagesConfidential=True,
    )
    labels = {**LABELS, "HOLDER": SENTINEL, f"{SENTINEL}-P": SENTINEL}
    ctx = context_for(kind, labels=labels, record=record)

    mail = render(kind, language, ctx)

    assert SENTINEL not in all_parts(mail)
    confidential = catalog(language)["confidential"]
    assert mail.text.count(confidential) == 4  # providers, PIC holders, subject, usages
    assert catalog(language)["usages"]["commercial"] not in mail.text


def test_html_escapes_script_in_plain_fields():
    record = ircc_record(title={"en": "<script>alert('x')</script> Permit"})

    mail = render("ircc_published", "en", context_for("ircc_published", record=record))

    assert "<script" not in mail.html
    assert "&lt;script&gt;" in mail.html
    assert "<script>alert('x')</script> Permit" in mail.text  # text/plain shows it as written


def test_rich_text_is_reduced_to_text_in_both_parts():
    record = ircc_record(
        subjectMatter={
            "en": "<div><!--block-->Seeds of <b>Zea mays</b><script>alert(1)</script>"
            '<img src=x onerror="alert(2)"></div><p>Fish &amp; chips &lt;b&gt;</p>'
        }
    )

    mail = render("ircc_published", "en", context_for("ircc_published", record=record))

    assert "Seeds of Zea mays\nFish & chips <b>" in mail.text
    assert "alert" not in mail.text
    assert "alert" not in mail.html
    assert "<b>" not in mail.html
    assert "<img" not in mail.html
    assert "Fish &amp; chips &lt;b&gt;" in mail.html


def test_lstrings_pick_the_recipient_language_then_english_then_any():
    ctx = context_for("ircc_amended")

    assert "Numéro corrigé" in render("ircc_amended", "fr", ctx).text
    assert "Permis SEMARNAT/42" in render("ircc_amended", "fr", ctx).text
    assert "Corrected the permit number" in render("ircc_amended", "es", ctx).text
    assert "Secretaría de Medio Ambiente" in render("ircc_amended", "es", ctx).text
    only_russian = context_for("ircc_revoked", reason={"ru": "Отозван по запросу"})
    assert "Отозван по запросу" in render("ircc_revoked", "zh", only_russian).text


def test_reason_falls_back_to_the_amendment_description():
    record = ircc_record(amendmentDescription={"en": "<p>Permit cancelled</p>"}, amendmentIntent=1)
    ctx = context_for("ircc_revoked", record=record, reason=None)

    mail = render("ircc_revoked", "en", ctx)

    assert "Permit cancelled" in mail.text
    assert "<p>Permit cancelled" not in mail.html


def test_ircc_content_is_shown():
    mail = render("ircc_published", "fr", context_for("ircc_published"))

    for expected in (
        "MX",
        "SEMARNAT",
        "2024-01-10",
        "2026-01-10",
        "Comunidad de San Juan",
        "University of Bonn",
        "Seeds of Zea mays",
        "Non commerciale",
        "Oui",
    ):
        assert expected in mail.text, expected


def test_expiry_mail_names_the_date_in_the_subject():
    mail = render("ircc_expiry", "ru", context_for("ircc_expiry"))

    assert "2026-01-10" in mail.subject


def test_cpc_with_ircc_lists_the_cited_uids():
    mail = render("cpc_published", "es", context_for("cpc_published"))

    assert IRCC_UID in mail.text
    assert "German checkpoint" in mail.text
    assert "DE" in mail.text
    assert "Basic research on Zea mays" in mail.text
    assert catalog("es")["ircc_not_available"] not in mail.text


def test_cpc_without_ircc_names_the_source_countries():
    record = cpc_record(absIRCCsNotAvailable=True, sourceCountries=[{"identifier": "za"}])
    del record["absIRCCs"]

    mail = render("cpc_published", "fr", context_for("cpc_published", record=record))

    assert "CCRI non disponible" in mail.text
    assert "ZA" in mail.text


def test_amended_cpc_mail_says_why_and_which_fields_changed():
    for language, reason, label in (
        ("fr", "Date de collecte erronée", "Description des informations recueillies"),
        ("en", "Wrong collection date", "Description of the information collected"),
        ("zh", "Wrong collection date", catalog("zh")["labels"]["description"]),
    ):
        mail = render("cpc_amended", language, context_for("cpc_amended"))
        for part in (mail.text, mail.html):
            assert reason in part
            assert f"{label} (description)" in part
            assert "dateCollected" in part
            assert CPC_UID in part  # the revision it replaces
            assert catalog(language)["labels"]["changed_fields"] in part
        assert AMENDED_UID in mail.subject
    assert "<li>dateCollected</li>" in mail.html
    # Still the communiqué itself, as in the first copy.
    assert IRCC_UID in mail.text
    assert "Basic research on Zea mays" in mail.text


def test_discrepancy_mail_reports_rule_uids_and_evidence():
    mail = render("discrepancy_flagged", "en", context_for("discrepancy_flagged"))

    assert "USE_MISMATCH" in mail.subject
    for expected in ("USE_MISMATCH", CPC_UID, IRCC_UID, IRCC_LINK, "declared_use: commercial"):
        assert expected in mail.text
    assert "ircc_usages: [&#34;non-commercial&#34;]" in mail.html


def test_arabic_html_is_right_to_left():
    assert 'dir="rtl"' in render("cpc_published", "ar", context_for("cpc_published")).html
    assert 'dir="ltr"' in render("cpc_published", "en", context_for("cpc_published")).html


def test_subject_cannot_be_split_into_headers():
    ctx = context_for("ircc_published", uid="ABSCH-IRCC-MX-1-1\r\nBcc: x@evil.example")

    subject = render("ircc_published", "en", ctx).subject

    assert "\r" not in subject
    assert "\n" not in subject


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        ("ABSCH-IRCC-MX-207443-2", "ABSCH-IRCC-MX-207443"),
        ("absch-ircc-mx-207443-12", "ABSCH-IRCC-MX-207443"),
        ("ABSCH-IRCC-MX-207443", "ABSCH-IRCC-MX-207443"),
        ("not a uid", "not a uid"),
    ],
)
def test_permanent_uid(uid, expected):
    assert permanent_uid(uid) == expected


def test_pick():
    assert pick({"fr": "un", "en": "one"}, "fr") == "un"
    assert pick({"fr": "un", "en": "one"}, "zh") == "one"
    assert pick({"ru": "один", "en": " "}, "zh") == "один"
    assert pick("plain", "fr") == "plain"
    assert pick(None, "fr") == ""


def test_plain_text():
    assert plain_text("<p>a <b>b</b></p><p>c&nbsp;d</p><style>p{}</style>") == "a b\nc d"
    assert plain_text("<script>alert(1)") == ""
