"""Utilization alerts: who gets them and what the mails say, in every UN language."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from services.notifier import utilization
from services.notifier.domain import (
    LANGUAGES,
    ROLE_IRCC_CNA,
    ROLE_PROVIDER_CNA,
    ROLE_PROVIDER_NFP,
    InMemoryDirectory,
    recipients_for_first_use,
    recipients_for_utilization_report,
)
from services.notifier.rendering import MailContext, catalog, render
from shared.events.models import IrccUtilization, UtilizationFirstUse, UtilizationReport
from shared.records.countries import country_name
from tests.support.communiques import identifier
from tests.support.records import authority, checkpoint, contact, focal_point

IRCC_UID = "ABSCH-IRCC-MX-207443-2"
IRCC_LINK = "https://absch.example.org/v1/records/ABSCH-IRCC-MX-207443"
CPC_UID = "ABSCH-CPC-DE-1001-1"


def first_use(**extra: Any) -> UtilizationFirstUse:
    values: dict[str, Any] = {
        "provider_country": "mx",
        "user_country": "de",
        "ircc": "IRCC-MX",
        "ircc_uid": IRCC_UID,
        "cna": "CNA-MX",
        "cpc_uid": CPC_UID,
        "cited_at": datetime(2026, 11, 3, 9, 30, tzinfo=UTC),
    } | extra
    return UtilizationFirstUse(**values)


def report(**extra: Any) -> UtilizationReport:
    values: dict[str, Any] = {
        "provider_country": "mx",
        "month": "2026-11",
        "window_start": datetime(2026, 11, 1, tzinfo=UTC),
        "window_end": datetime(2026, 12, 1, tzinfo=UTC),
        "citations": 5,
        "users": {"de": 4, "fr": 1},
        "irccs": [
            IrccUtilization(ircc="IRCC-MX", citations=3, users={"de": 2, "fr": 1}),
            IrccUtilization(ircc="IRCC-MX-2", citations=2, users={"de": 2}),
        ],
        "checkpoints": {"CP-DE": 4, "CP-FR": 1},
        "discrepancies": {"USE_MISMATCH": 2, "IRCC_EXPIRED": 1},
    } | extra
    return UtilizationReport(**values)


def utilization_context(kind: str, base_url: str, **overrides: Any) -> MailContext:
    """A representative context of a utilization kind (the rendering suite uses it too)."""
    uids = {"IRCC-MX": IRCC_UID}  # IRCC-MX-2 is not known to the view
    if kind == "utilization_first_use":
        fields: dict[str, Any] = {
            "uid": CPC_UID,
            "utilization": utilization.first_use_facts(first_use(), uids.get),
        }
    else:
        fields = {
            "uid": "MX:2026-11",
            "labels": {"CP-DE": {"en": "German checkpoint", "fr": "Point allemand"}},
            "utilization": utilization.report_facts(report(), uids.get),
        }
    return MailContext(
        public_base_url=base_url, event_type=kind.replace("_", ".", 1), **fields | overrides
    )


@pytest.mark.parametrize("language", LANGUAGES)
def test_first_use_says_where_the_resources_are_now_utilized(language: str) -> None:
    mail = render(
        "utilization_first_use",
        language,
        utilization_context("utilization_first_use", "https://absch.example.org"),
    )

    germany = country_name("de", language)
    sentence = str(catalog(language)["utilization"]["now_utilized"]).format(country=germany)
    assert germany in mail.subject
    assert CPC_UID in mail.subject
    for part in (mail.text, mail.html):
        assert sentence in part
        assert country_name("mx", language) in part
        assert IRCC_UID in part
        assert IRCC_LINK in part
        assert "2026-11-03" in part


def test_first_use_of_an_ircc_the_view_does_not_know_shows_its_identifier() -> None:
    facts = utilization.first_use_facts(first_use(ircc_uid=None), lambda _ident: None)
    ctx = MailContext(
        uid=CPC_UID,
        public_base_url="https://absch.example.org",
        event_type="utilization.first_use",
        utilization=facts,
    )
    mail = render("utilization_first_use", "en", ctx)
    assert "IRCC-MX" in mail.text
    assert "/v1/records/IRCC-MX" not in mail.text  # no link to a record not known


@pytest.mark.parametrize("language", LANGUAGES)
def test_report_lists_irccs_users_checkpoints_and_discrepancies(language: str) -> None:
    ctx = utilization_context("utilization_report", "https://absch.example.org")
    mail = render("utilization_report", language, ctx)

    de, fr = country_name("de", language), country_name("fr", language)
    assert "MX:2026-11" in mail.subject
    assert country_name("mx", language) in mail.subject
    text = mail.text
    assert f"{IRCC_UID}{catalog(language)['colon']}3" in text
    assert f"{de} (2); {fr} (1)" in text  # IRCC-MX: most cited first
    assert f"IRCC-MX-2{catalog(language)['colon']}2" in text  # unknown UID: the identifier
    assert f"{de} (2)" in text
    checkpoint_de = "Point allemand" if language == "fr" else "German checkpoint"
    assert f"{checkpoint_de} (4); CP-FR (1)" in text
    assert "USE_MISMATCH (2); IRCC_EXPIRED (1)" in text
    assert f'href="{IRCC_LINK}"' in mail.html
    assert f"{de} (2); {fr} (1)" in mail.html
    assert mail.text.count(IRCC_LINK) == 1  # linked IRCCs only; no record of its own


def test_report_without_discrepancies_says_none() -> None:
    ctx = utilization_context("utilization_report", "https://absch.example.org")
    facts = utilization.report_facts(report(discrepancies={}), lambda _ident: None)
    mail = render("utilization_report", "es", replace(ctx, utilization=facts))
    none = str(catalog("es")["utilization"]["none"])
    label = str(catalog("es")["labels"]["discrepancies"])
    assert f"{label}{catalog('es')['colon']}{none}" in mail.text


def test_country_names_per_language_and_fallbacks() -> None:
    assert [country_name("mx", lang) for lang in LANGUAGES] == [
        "Mexico",
        "Mexique",
        "México",
        "Мексика",
        "墨西哥",
        "المكسيك",
    ]
    assert country_name("MX") == "Mexico"
    assert country_name("bo") == "Bolivia"  # the short name
    assert country_name("eu", "fr") == "Union européenne"
    assert country_name("xx", "fr") == "XX"
    assert country_name("mx", "de") == "Mexico"  # not a UN language: English


def _directory() -> tuple[InMemoryDirectory, dict[str, str]]:
    person = contact(["person@mx.example"], gov="mx")
    cna = authority("mx", ["cna@mx.example"], contacts=[{"identifier": identifier(person)}])
    other_cna = authority("mx", ["cna2@mx.example"], languages=["es"])
    records = [
        focal_point("mx", ["nfp@mx.example"]),
        focal_point("mx", ["cbd@mx.example"], type=["CBD-FP1"]),  # not an ABS NFP
        person,
        cna,
        other_cna,
        focal_point("de", ["nfp@de.example"]),
        authority("de", ["cna@de.example"]),
        checkpoint("de", contacts=[]) | {"emails": ["checkpoint@de.example"]},
    ]
    ids = {"cna": identifier(cna), "other": identifier(other_cna)}
    return InMemoryDirectory(records), ids


def test_first_use_goes_to_the_provider_nfp_and_the_irccs_cna_only() -> None:
    directory, ids = _directory()
    got = recipients_for_first_use("MX", ids["cna"], directory)
    assert {(r.address, r.role, r.government) for r in got} == {
        ("nfp@mx.example", ROLE_PROVIDER_NFP, "mx"),
        ("cna@mx.example", ROLE_IRCC_CNA, "mx"),
        ("person@mx.example", ROLE_IRCC_CNA, "mx"),  # the CNA's contact person [R1]
    }
    nobody_else = recipients_for_first_use("mx", None, directory)
    assert [r.address for r in nobody_else] == ["nfp@mx.example"]
    assert recipients_for_first_use("pe", None, directory) == []  # no NFP known


def test_report_goes_to_the_provider_nfp_and_all_its_cnas() -> None:
    directory, _ids = _directory()
    got = recipients_for_utilization_report("mx", directory)
    assert {(r.address, r.role, r.language) for r in got} == {
        ("nfp@mx.example", ROLE_PROVIDER_NFP, "en"),
        ("cna@mx.example", ROLE_PROVIDER_CNA, "en"),
        ("person@mx.example", ROLE_PROVIDER_CNA, "en"),
        ("cna2@mx.example", ROLE_PROVIDER_CNA, "es"),
    }
    assert {r.government for r in got} == {"mx"}
