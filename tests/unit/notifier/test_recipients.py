"""Recipient resolution (DESIGN.md §5): who gets a copy of which mail."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier.domain import (
    InMemoryDirectory,
    Recipient,
    emails_of,
    expiry_notice_due,
    is_abs_focal_point,
    recipient_language,
    recipients_for_cpc,
    recipients_for_discrepancy,
    recipients_for_expiry,
    recipients_for_ircc,
)

Record = dict[str, Any]


# --- record builders (real ABSCH JSON shape) -------------------------------------------


def header(identifier: str, schema: str, languages: tuple[str, ...] = ("en",)) -> Record:
    return {"identifier": identifier, "schema": schema, "languages": list(languages)}


def ref(identifier: str) -> Record:
    return {"identifier": identifier}


def contact(identifier: str, *emails: str, languages: tuple[str, ...] = ("en",)) -> Record:
    return {
        "header": header(identifier, "contact", languages),
        "type": "person",
        "emails": list(emails),
    }


def authority(
    identifier: str,
    government: str,
    *emails: str,
    contacts: tuple[str, ...] = (),
    languages: tuple[str, ...] = ("en",),
) -> Record:
    record: Record = {
        "header": header(identifier, "authority", languages),
        "government": ref(government),
        "name": {"en": f"CNA {identifier}"},
        "emails": list(emails),
    }
    if contacts:
        record["contacts"] = [ref(f"{c}@1") for c in contacts]
    return record


def focal_point(
    identifier: str, government: str, *emails: str, types: list[str] | None = None
) -> Record:
    record: Record = {
        "header": header(identifier, "focalPoint"),
        "government": ref(government),
        "emails": list(emails),
    }
    if types is not None:
        record["type"] = types
    return record


def checkpoint(
    identifier: str, government: str, *, inform_all: bool, contacts: tuple[str, ...] = ()
) -> Record:
    return {
        "header": header(identifier, "absCheckpoint"),
        "government": ref(government),
        "name": {"en": f"Checkpoint {identifier}"},
        "informAllAuthorities": inform_all,
        "contactsToInform": [ref(f"{c}@1") for c in contacts],
    }


def ircc(
    identifier: str,
    government: str,
    cna: str,
    *,
    providers: tuple[str, ...] = (),
    pic_holders: tuple[str, ...] = (),
    **extra: Any,
) -> Record:
    record: Record = {
        "header": header(identifier, "absPermit"),
        "government": ref(government),
        "absCNA": ref(f"{cna}@2"),
        "title": {"en": f"Permit {identifier}"},
        "dateOfIssuance": "2024-01-10",
        "picGranted": True,
        "matEstablished": True,
    }
    if providers:
        record["providers"] = [ref(f"{p}@1") for p in providers]
    if pic_holders:
        record["entitiesToWhomPICGranted"] = [ref(f"{p}@1") for p in pic_holders]
    record.update(extra)
    return record


def cpc(government: str, checkpoints: tuple[str, ...], **fields: Any) -> Record:
    record: Record = {
        "header": header("CPC-1", "absCheckpointCommunique"),
        "government": ref(government),
        "title": {"en": "Communiqué"},
        "absCheckpoints": [ref(f"{c}@1") for c in checkpoints],
        "description": {"en": "Research use"},
    }
    record.update(fields)
    return record


def roles(recipients: list[Recipient]) -> dict[str, str]:
    return {r.address: r.role for r in recipients}


@pytest.fixture
def directory() -> InMemoryDirectory:
    """Mexico (provider) and Germany (user) plus a few parties; drafts are simply absent."""
    return InMemoryDirectory(
        [
            authority("CNA-MX", "mx", "cna@semarnat.example.mx", contacts=("CON-CNA-MX",)),
            contact("CON-CNA-MX", "officer@semarnat.example.mx", languages=("es",)),
            authority("CNA-MX-2", "mx", "second-cna@example.mx"),
            focal_point("NFP-MX", "mx", "nfp@example.mx", types=["NP-FP"]),
            focal_point("CBD-NFP-MX", "mx", "cbd-only@example.mx", types=["CBD-FP1"]),
            authority("CNA-BR", "br", "cna@example.br"),
            focal_point("NFP-BR", "br", "nfp@example.br"),
            authority("CNA-DE-1", "de", "cna1@example.de"),
            authority("CNA-DE-2", "de", "cna2@example.de"),
            focal_point("NFP-DE", "de", "nfp@example.de", types=["ABS-FP"]),
            contact("PROVIDER", "provider@example.mx"),
            contact("HOLDER", "holder@uni.example.de", languages=("de", "fr", "en")),
            contact("GRANTOR", "grantor@example.za"),
            authority("CNA-ZA", "za", "cna@example.za"),
            focal_point("NFP-ZA", "za", "nfp@example.za"),
            contact("CP-OFFICER", "officer@checkpoint.example.de"),
            checkpoint("CP-DE", "de", inform_all=False, contacts=("CP-OFFICER",)),
            checkpoint("CP-DE-ALL", "de", inform_all=True, contacts=("CP-OFFICER",)),
        ]
    )


# --- IRCC -------------------------------------------------------------------------------


def test_ircc_without_flags_reaches_cna_nfp_providers_and_pic_holders(directory):
    record = ircc("IRCC-1", "mx", "CNA-MX", providers=("PROVIDER",), pic_holders=("HOLDER",))

    assert roles(recipients_for_ircc(record, directory)) == {
        "cna@semarnat.example.mx": "issuing-cna",
        "officer@semarnat.example.mx": "issuing-cna",
        "nfp@example.mx": "provider-nfp",
        "provider@example.mx": "provider",
        "holder@uni.example.de": "pic-holder",
    }


@pytest.mark.parametrize("providers_confidential", [False, True])
@pytest.mark.parametrize("holders_confidential", [False, True])
def test_ircc_confidential_flags_silence_their_parties(
    directory, providers_confidential, holders_confidential
):
    # The lists are present even when flagged: upstream should have stripped them, but
    # the rule must not rely on that.
    record = ircc(
        "IRCC-1",
        "mx",
        "CNA-MX",
        providers=("PROVIDER",),
        pic_holders=("HOLDER",),
        providersConfidential=providers_confidential,
        entitiesToWhomPICGrantedConfidential=holders_confidential,
    )

    addresses = roles(recipients_for_ircc(record, directory))

    assert ("provider@example.mx" in addresses) is not providers_confidential
    assert ("holder@uni.example.de" in addresses) is not holders_confidential
    assert addresses["cna@semarnat.example.mx"] == "issuing-cna"
    assert addresses["nfp@example.mx"] == "provider-nfp"


def test_ircc_with_flags_and_stripped_lists_reaches_cna_and_nfp_only(directory):
    record = ircc(
        "IRCC-1",
        "mx",
        "CNA-MX",
        providersConfidential=True,
        entitiesToWhomPICGrantedConfidential=True,
    )

    assert set(roles(recipients_for_ircc(record, directory)).values()) == {
        "issuing-cna",
        "provider-nfp",
    }


def test_ircc_odd_flag_value_counts_as_confidential(directory):
    record = ircc(
        "IRCC-1",
        "mx",
        "CNA-MX",
        pic_holders=("HOLDER",),
        entitiesToWhomPICGrantedConfidential="yes",
    )

    assert "holder@uni.example.de" not in roles(recipients_for_ircc(record, directory))


def test_ircc_only_abs_focal_points_of_the_issuing_country(directory):
    addresses = roles(recipients_for_ircc(ircc("IRCC-1", "mx", "CNA-MX"), directory))

    assert "nfp@example.mx" in addresses
    assert "cbd-only@example.mx" not in addresses  # CBD-FP1 is not an ABS NFP
    assert "second-cna@example.mx" not in addresses  # only the issuing CNA
    assert "nfp@example.br" not in addresses


def test_drafts_and_unknown_references_yield_nobody(directory):
    record = ircc(
        "IRCC-1", "mx", "DRAFT-CNA", providers=("DRAFT-PROVIDER",), pic_holders=("DRAFT-HOLDER",)
    )

    assert roles(recipients_for_ircc(record, directory)) == {"nfp@example.mx": "provider-nfp"}


def test_authority_contact_that_is_a_draft_is_skipped():
    directory = InMemoryDirectory([authority("CNA-X", "mx", "cna@x.example", contacts=("GONE",))])

    assert [r.address for r in recipients_for_expiry(ircc("I", "mx", "CNA-X"), directory)] == [
        "cna@x.example"
    ]


def test_withdrawn_record_stops_counting(directory):
    directory.remove("PROVIDER@3")
    record = ircc("IRCC-1", "mx", "CNA-MX", providers=("PROVIDER",))

    assert "provider@example.mx" not in roles(recipients_for_ircc(record, directory))


def test_duplicate_addresses_are_collapsed_keeping_the_first_role():
    directory = InMemoryDirectory(
        [
            authority("CNA-X", "mx", "Desk@Example.MX"),
            focal_point("NFP-X", "mx", "desk@example.mx"),
            contact("HOLDER-X", "DESK@example.mx", "other@example.mx"),
        ]
    )
    record = ircc("IRCC-1", "mx", "CNA-X", pic_holders=("HOLDER-X",))

    recipients = recipients_for_ircc(record, directory)

    assert [(r.address, r.role) for r in recipients] == [
        ("desk@example.mx", "issuing-cna"),
        ("other@example.mx", "pic-holder"),
    ]
    assert recipients[0].display == "Desk@Example.MX"
    assert recipients[0].record_identifier == "CNA-X"


def test_recipient_language_and_identifier(directory):
    record = ircc("IRCC-1", "mx", "CNA-MX", pic_holders=("HOLDER",))

    by_address = {r.address: r for r in recipients_for_ircc(record, directory)}

    assert by_address["holder@uni.example.de"].language == "fr"  # "de" is not a UN language
    assert by_address["holder@uni.example.de"].record_identifier == "HOLDER"
    assert by_address["officer@semarnat.example.mx"].language == "es"
    assert by_address["officer@semarnat.example.mx"].record_identifier == "CON-CNA-MX"
    assert by_address["cna@semarnat.example.mx"].language == "en"


@pytest.mark.parametrize(
    ("languages", "expected"),
    [
        (["ar", "en"], "ar"),
        (["ZH"], "zh"),
        (["de", "ru"], "ru"),
        (["de"], "en"),
        ([], "en"),
        (None, "en"),
    ],
)
def test_recipient_language_choice(languages, expected):
    record: Record = {"header": {"identifier": "X", "schema": "contact"}}
    if languages is not None:
        record["header"]["languages"] = languages

    assert recipient_language(record) == expected


def test_recipient_language_without_header():
    assert recipient_language({"emails": ["a@b.example"]}) == "en"


def test_emails_are_validated_and_split():
    record = {
        "emails": [
            " a@one.example ; B@two.example",
            "not-an-address",
            "evil@x.example\r\nBcc: victim@y.example",
            "",
            42,
        ]
    }

    assert emails_of(record) == ["a@one.example", "B@two.example"]
    assert emails_of({"emails": "solo@one.example"}) == ["solo@one.example"]
    assert emails_of({}) == []


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (["NP-FP"], True),
        (["ABS-FP", "CBD-FP1"], True),
        ([{"identifier": "abs-fp"}], True),
        (["CBD-FP1"], False),
        ("CBD-FP2", False),
        (None, True),
        ([], True),
    ],
)
def test_abs_focal_point_types(types, expected):
    record = focal_point("F", "mx", "f@example.mx", types=types)

    assert is_abs_focal_point(record) is expected


def test_focal_point_with_country_only_belongs_to_that_country():
    record = {"header": header("F", "focalPoint"), "country": "MX", "emails": ["f@example.mx"]}
    directory = InMemoryDirectory([record])

    assert directory.focal_points("mx") == [record]
    assert directory.focal_points("MX") == [record]
    assert directory.authorities("mx") == []


def test_in_memory_directory_strips_revisions_and_replaces():
    directory = InMemoryDirectory()
    directory.add(contact("C-1", "old@example.org"))
    directory.add(contact("C-1", "new@example.org"))

    found = directory.record("C-1@7")

    assert found is not None
    assert found["emails"] == ["new@example.org"]
    assert directory.record("C-2") is None
    with pytest.raises(ValueError, match="identifier"):
        directory.add({"emails": ["x@example.org"]})


# --- CPC --------------------------------------------------------------------------------


def test_cpc_citing_one_ircc(directory):
    irccs = {"IRCC-MX": ircc("IRCC-MX", "mx", "CNA-MX", pic_holders=("HOLDER",))}
    record = cpc("de", ("CP-DE",), absIRCCs=[ref("IRCC-MX@1")])

    assert roles(recipients_for_cpc(record, irccs.get, directory)) == {
        "officer@checkpoint.example.de": "checkpoint-contact",
        "cna@semarnat.example.mx": "ircc-cna",
        "officer@semarnat.example.mx": "ircc-cna",
        "nfp@example.mx": "provider-nfp",
        "holder@uni.example.de": "pic-holder",
    }


def test_cpc_citing_irccs_from_several_countries(directory):
    irccs = {
        "IRCC-MX": ircc("IRCC-MX", "mx", "CNA-MX"),
        "IRCC-BR": ircc(
            "IRCC-BR",
            "br",
            "CNA-BR",
            pic_holders=("HOLDER",),
            entitiesToWhomPICGrantedConfidential=True,
        ),
    }
    asked: list[str] = []

    def lookup(identifier: str) -> Record | None:
        asked.append(identifier)
        return irccs.get(identifier)

    record = cpc("de", ("CP-DE",), absIRCCs=[ref("IRCC-MX@1"), ref("IRCC-BR@3")])

    addresses = roles(recipients_for_cpc(record, lookup, directory))

    assert asked == ["IRCC-MX", "IRCC-BR"]  # revision-less: the latest known IRCC counts
    assert addresses["cna@semarnat.example.mx"] == "ircc-cna"
    assert addresses["nfp@example.mx"] == "provider-nfp"
    assert addresses["cna@example.br"] == "ircc-cna"
    assert addresses["nfp@example.br"] == "provider-nfp"
    assert "holder@uni.example.de" not in addresses  # confidential on the BR IRCC
    assert "provider@example.mx" not in addresses  # providers are not copied on CPCs


def test_cpc_citing_an_unknown_ircc_reaches_the_user_side_only(directory):
    record = cpc("de", ("CP-DE",), absIRCCs=[ref("IRCC-NOT-YET@1")])

    assert roles(recipients_for_cpc(record, lambda _id: None, directory)) == {
        "officer@checkpoint.example.de": "checkpoint-contact"
    }


@pytest.mark.parametrize(
    ("checkpoint_id", "expected_user_cnas"),
    [("CP-DE", set()), ("CP-DE-ALL", {"cna1@example.de", "cna2@example.de"})],
)
def test_checkpoint_inform_all_authorities(directory, checkpoint_id, expected_user_cnas):
    record = cpc("de", (checkpoint_id,), absIRCCsNotAvailable=True, sourceCountries=[ref("za")])

    addresses = roles(recipients_for_cpc(record, lambda _id: None, directory))

    assert addresses["officer@checkpoint.example.de"] == "checkpoint-contact"
    assert {a for a, role in addresses.items() if role == "user-cna"} == expected_user_cnas
    assert "nfp@example.de" not in addresses  # user-country NFPs are not copied
    assert "cna@semarnat.example.mx" not in addresses


def test_cpc_unpublished_checkpoint_counts_for_nobody(directory):
    record = cpc("de", ("CP-DRAFT",), absIRCCsNotAvailable=True, sourceCountries=[ref("za")])

    assert set(roles(recipients_for_cpc(record, lambda _id: None, directory)).values()) == {
        "source-country-cna",
        "source-country-nfp",
    }


def test_cpc_without_ircc_goes_to_the_entity_who_granted_pic(directory):
    record = cpc(
        "de",
        ("CP-DE",),
        absIRCCsNotAvailable=True,
        entityWhoGrantedPIC=ref("GRANTOR@1"),
        sourceCountries=[ref("za")],
    )

    assert roles(recipients_for_cpc(record, lambda _id: None, directory)) == {
        "officer@checkpoint.example.de": "checkpoint-contact",
        "grantor@example.za": "entity-who-granted-pic",
    }


def test_cpc_without_ircc_nor_grantor_goes_to_every_source_country(directory):
    record = cpc(
        "de", ("CP-DE",), absIRCCsNotAvailable=True, sourceCountries=[ref("za"), ref("BR")]
    )

    assert roles(recipients_for_cpc(record, lambda _id: None, directory)) == {
        "officer@checkpoint.example.de": "checkpoint-contact",
        "cna@example.za": "source-country-cna",
        "nfp@example.za": "source-country-nfp",
        "cna@example.br": "source-country-cna",
        "nfp@example.br": "source-country-nfp",
    }


def test_cpc_grantor_that_is_a_draft_falls_back_to_source_countries(directory):
    record = cpc(
        "de",
        ("CP-DE",),
        absIRCCsNotAvailable=True,
        entityWhoGrantedPIC=ref("DRAFT-GRANTOR@1"),
        sourceCountries=[ref("za")],
    )

    addresses = roles(recipients_for_cpc(record, lambda _id: None, directory))

    assert addresses["cna@example.za"] == "source-country-cna"
    assert addresses["nfp@example.za"] == "source-country-nfp"


def test_cpc_not_available_flag_wins_over_a_stray_ircc_list(directory):
    irccs = {"IRCC-MX": ircc("IRCC-MX", "mx", "CNA-MX")}
    record = cpc(
        "de",
        ("CP-DE",),
        absIRCCsNotAvailable=True,
        absIRCCs=[ref("IRCC-MX@1")],
        sourceCountries=[ref("za")],
    )

    addresses = roles(recipients_for_cpc(record, irccs.get, directory))

    assert "cna@semarnat.example.mx" not in addresses
    assert "cna@example.za" in addresses


def test_cpc_dedups_across_user_and_provider_sides(directory):
    directory.add(contact("CP-OFFICER", "cna@semarnat.example.mx"))
    irccs = {"IRCC-MX": ircc("IRCC-MX", "mx", "CNA-MX")}
    record = cpc("de", ("CP-DE",), absIRCCs=[ref("IRCC-MX")])

    recipients = recipients_for_cpc(record, irccs.get, directory)

    assert [r.address for r in recipients].count("cna@semarnat.example.mx") == 1
    assert roles(recipients)["cna@semarnat.example.mx"] == "checkpoint-contact"


# --- whose side each copy is on (the delivery log shows a government its own only) -----


def sides(recipients: list[Recipient]) -> dict[str, str | None]:
    return {r.address: r.government for r in recipients}


def test_every_ircc_copy_is_on_the_issuing_government_side(directory):
    record = ircc("IRCC-1", "mx", "CNA-MX", providers=("PROVIDER",), pic_holders=("HOLDER",))

    # The German PIC holder's contact names no government; the IRCC that named it does.
    assert set(sides(recipients_for_ircc(record, directory)).values()) == {"mx"}
    assert set(sides(recipients_for_expiry(record, directory)).values()) == {"mx"}


def test_cpc_copies_split_between_the_user_and_each_provider_side(directory):
    irccs = {"IRCC-MX": ircc("IRCC-MX", "mx", "CNA-MX"), "IRCC-BR": ircc("IRCC-BR", "br", "CNA-BR")}
    record = cpc("de", ("CP-DE-ALL",), absIRCCs=[ref("IRCC-MX"), ref("IRCC-BR")])

    assert sides(recipients_for_cpc(record, irccs.get, directory)) == {
        "officer@checkpoint.example.de": "de",
        "cna1@example.de": "de",
        "cna2@example.de": "de",
        "cna@semarnat.example.mx": "mx",
        "officer@semarnat.example.mx": "mx",
        "nfp@example.mx": "mx",
        "cna@example.br": "br",
        "nfp@example.br": "br",
    }


def test_cpc_without_ircc_copies_are_on_the_source_country_side(directory):
    grantor = cpc(
        "de",
        ("CP-DE",),
        absIRCCsNotAvailable=True,
        entityWhoGrantedPIC=ref("GRANTOR@1"),
        sourceCountries=[ref("za")],
    )
    countries = cpc(
        "de", ("CP-DE",), absIRCCsNotAvailable=True, sourceCountries=[ref("za"), ref("BR")]
    )

    assert sides(recipients_for_cpc(grantor, lambda _id: None, directory)) == {
        "officer@checkpoint.example.de": "de",
        "grantor@example.za": "za",
    }
    assert sides(recipients_for_cpc(countries, lambda _id: None, directory)) == {
        "officer@checkpoint.example.de": "de",
        "cna@example.za": "za",
        "nfp@example.za": "za",
        "cna@example.br": "br",
        "nfp@example.br": "br",
    }


def test_discrepancy_copies_are_on_the_provider_country_side(directory):
    record = ircc("IRCC-MX", "mx", "CNA-MX")

    assert set(sides(recipients_for_discrepancy("MX", record, directory)).values()) == {"mx"}


# --- discrepancy and expiry -------------------------------------------------------------


def test_discrepancy_reaches_provider_nfp_and_ircc_cna(directory):
    record = ircc("IRCC-MX", "mx", "CNA-MX", pic_holders=("HOLDER",))

    assert roles(recipients_for_discrepancy("mx", record, directory)) == {
        "nfp@example.mx": "provider-nfp",
        "cna@semarnat.example.mx": "ircc-cna",
        "officer@semarnat.example.mx": "ircc-cna",
    }


def test_discrepancy_without_ircc_or_country(directory):
    assert roles(recipients_for_discrepancy("MX", None, directory)) == {
        "nfp@example.mx": "provider-nfp"
    }
    assert "nfp@example.br" in roles(
        recipients_for_discrepancy(None, ircc("I", "br", "CNA-BR"), directory)
    )
    assert recipients_for_discrepancy(None, None, directory) == []


def test_expiry_reaches_the_issuing_cna_only(directory):
    record = ircc("IRCC-MX", "mx", "CNA-MX", providers=("PROVIDER",), pic_holders=("HOLDER",))

    assert set(roles(recipients_for_expiry(record, directory)).values()) == {"issuing-cna"}


EXPIRY = date(2025, 6, 30)


@pytest.mark.parametrize(
    ("days_before", "due"),
    [(61, False), (60, True), (30, True), (1, True), (0, True), (-1, False)],
)
def test_expiry_notice_window(days_before, due):
    record = ircc("I", "mx", "CNA-MX", dateOfExpiry=EXPIRY.isoformat())
    today = EXPIRY - timedelta(days=days_before)

    assert expiry_notice_due(record, today=today, revoked=False, already_sent=False) is due


@pytest.mark.parametrize(
    ("record_extra", "revoked", "already_sent"),
    [
        ({"dateOfExpiry": "2025-06-30"}, True, False),
        ({"dateOfExpiry": "2025-06-30"}, False, True),
        ({"dateOfExpiry": "2025-06-30", "amendmentIntent": 1}, False, False),
        ({}, False, False),
        ({"dateOfExpiry": ""}, False, False),
        ({"dateOfExpiry": "30/06/2025"}, False, False),
    ],
)
def test_expiry_notice_never_due(record_extra, revoked, already_sent):
    record = ircc("I", "mx", "CNA-MX", **record_extra)

    assert not expiry_notice_due(
        record, today=date(2025, 6, 1), revoked=revoked, already_sent=already_sent
    )


# --- properties -------------------------------------------------------------------------

_local = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
_address = st.builds(lambda a, b: f"{a}@{b}.example", _local, _local)


@given(
    cna=st.lists(_address, max_size=3),
    providers=st.lists(_address, max_size=3),
    holders=st.lists(_address, max_size=3),
    providers_confidential=st.booleans(),
    holders_confidential=st.booleans(),
)
def test_recipients_are_unique_and_never_confidential(
    cna, providers, holders, providers_confidential, holders_confidential
):
    directory = InMemoryDirectory(
        [
            authority("CNA", "mx", *cna),
            contact("PROV", *providers),
            contact("HOLD", *holders),
        ]
    )
    record = ircc(
        "I",
        "mx",
        "CNA",
        providers=("PROV",),
        pic_holders=("HOLD",),
        providersConfidential=providers_confidential,
        entitiesToWhomPICGrantedConfidential=holders_confidential,
    )

    recipients = recipients_for_ircc(record, directory)
    addresses = [r.address for r in recipients]

    assert len(addresses) == len(set(addresses))
    assert all(a == a.lower() for a in addresses)
    allowed = set(cna)
    allowed |= set() if providers_confidential else set(providers)
    allowed |= set() if holders_confidential else set(holders)
    assert set(addresses) == {a.lower() for a in allowed}
