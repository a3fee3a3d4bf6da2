"""UIDs ([C6], [C7]) and ``id@rev`` references ([C3])."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.uid import (
    MAX_SOLR_DOCUMENT_ID,
    SCHEMA_SHORT_CODES,
    SHORT_CODE_SCHEMAS,
    BadReference,
    Uid,
    UidError,
    canonical_prefix,
    format_reference,
    format_solr_id,
    format_uid,
    parse_reference,
    parse_solr_id,
    parse_uid,
    solr_id_of,
)

# --- examples ----------------------------------------------------------------------------


def test_short_codes_match_the_real_realm_configuration():
    assert SCHEMA_SHORT_CODES == {
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
    assert SHORT_CODE_SCHEMAS["IRCC"] == "absPermit"
    assert len(SHORT_CODE_SCHEMAS) == len(SCHEMA_SHORT_CODES)


@pytest.mark.parametrize(
    ("schema", "government", "document_id", "revision", "expected"),
    [
        ("absPermit", "mx", 207443, 2, "ABSCH-IRCC-MX-207443-2"),
        ("absPermit", "MX", 207443, None, "ABSCH-IRCC-MX-207443"),
        ("absCheckpointCommunique", "de", 1, 1, "ABSCH-CPC-DE-1-1"),
        ("authority", None, 5, 12, "ABSCH-CNA-SCBD-5-12"),
        ("focalPoint", "gb", 218377, None, "CHM-NFP-GB-218377"),
    ],
)
def test_format_uid(schema, government, document_id, revision, expected):
    assert format_uid(schema, government, document_id, revision) == expected


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (("nope", "mx", 1, 1), "unknown schema 'nope'"),
        (("absPermit", "mex", 1, 1), "government"),
        (("absPermit", "\ufb00", 1, 1), "government"),  # ligature "ff"
        (("absPermit", "mx", 0, 1), "document id must be a positive integer"),
        (("absPermit", "mx", 1, 0), "revision must be a positive integer"),
    ],
)
def test_format_uid_rejects(bad, message):
    with pytest.raises(UidError, match=message):
        format_uid(*bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ABSCH-IRCC-MX-207443-2", Uid("ABSCH", "IRCC", "MX", 207443, 2)),
        ("absch-ircc-ht-207608-2", Uid("ABSCH", "IRCC", "HT", 207608, 2)),
        ("Absch-Cpc-De-12-1", Uid("ABSCH", "CPC", "DE", 12, 1)),
        ("ABSCH-IRCC-MX-207443", Uid("ABSCH", "IRCC", "MX", 207443, None)),
        ("ABSCH-IRCC-MX-207443-123", Uid("ABSCH", "IRCC", "MX", 207443, 123)),
        ("  ABSCH-CNA-SCBD-7-1 ", Uid("ABSCH", "CNA", "SCBD", 7, 1)),
        ("CHM-NFP-GB-218377", Uid("CHM", "NFP", "GB", 218377, None)),
        ("ABSCH-NFP-GB-218377", Uid("ABSCH", "NFP", "GB", 218377, None)),
        # Dev/training markers are stripped wherever they sit, as the ABSCH record loader does.
        ("ABSCH-DEV-IRCC-MX-1-2", Uid("ABSCH", "IRCC", "MX", 1, 2)),
        ("absch-trg-cpc-de-3", Uid("ABSCH", "CPC", "DE", 3, None)),
        ("ABSCH-IRCC-DEV-MX-1-2", Uid("ABSCH", "IRCC", "MX", 1, 2)),
        ("ABSCH-IRCC-MX-1-2-dev", Uid("ABSCH", "IRCC", "MX", 1, 2)),
    ],
)
def test_parse_uid(text, expected):
    assert parse_uid(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "UID is empty"),
        ("ABSCH-XYZ-MX-1-2", "unknown schema code 'XYZ'"),
        ("BCH-IRCC-MX-1-2", "unknown UID prefix 'BCH'"),
        ("CHM-IRCC-MX-1-2", "prefix 'CHM' is only used for focal points"),
        ("ABSCH-IRCC-MEX-1-2", "government must be"),
        ("ABSCH-IRCC-M1-1-2", "government must be"),
        ("ABSCH-IRCC-MX-DRAFT", "document id must be a positive integer"),
        ("ABSCH-IRCC-MX-0-1", "document id must be a positive integer"),
        ("ABSCH-IRCC-MX--1-1", "UID must have 4 or 5"),
        ("ABSCH-IRCC-MX-1-0", "revision must be a positive integer"),
        ("ABSCH-IRCC-MX-1-x", "revision must be a positive integer"),
        ("ABSCH-IRCC-MX-1-2-3", "UID must have 4 or 5"),
        ("ABSCH-IRCC-MX", "UID must have 4 or 5"),
        ("ABSCH-DEV-TRG-IRCC-MX-1", "unknown schema code 'TRG'"),
        ("ABSCH-IRCC-MX-\uff11-2", "ASCII"),  # full-width digit one
        ("ABSCH-IRCC-MX-99999999999999999999-1", "too large"),
    ],
)
def test_parse_uid_says_what_is_wrong(text, message):
    with pytest.raises(UidError, match=message):
        parse_uid(text)


def test_uid_helpers():
    uid = parse_uid("absch-ircc-mx-207443-2")
    assert uid.schema == "absPermit"
    assert str(uid) == "ABSCH-IRCC-MX-207443-2"
    assert str(uid.without_revision()) == "ABSCH-IRCC-MX-207443"
    assert uid.with_revision(3) == Uid("ABSCH", "IRCC", "MX", 207443, 3)
    with pytest.raises(UidError):
        uid.with_revision(0)


def test_uid_error_is_a_value_error():
    assert issubclass(UidError, ValueError)
    assert issubclass(BadReference, ValueError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C84C7E6C-134C-F1B1-9A3B-B7443F135239@2", ("C84C7E6C-134C-F1B1-9A3B-B7443F135239", 2)),
        ("C84C7E6C-134C-F1B1-9A3B-B7443F135239", ("C84C7E6C-134C-F1B1-9A3B-B7443F135239", None)),
        (
            "DECLARE-ORGANISATION_3386_20240709020251617@1",
            ("DECLARE-ORGANISATION_3386_20240709020251617", 1),
        ),
        ("a.b@10", ("a.b", 10)),
        ("x" * 128, ("x" * 128, None)),
    ],
)
def test_parse_reference(text, expected):
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text", ["", "@1", "abc@", "abc@0", "abc@-1", "abc@1@2", "a b", "x" * 129, "abc@x", "é"]
)
def test_parse_reference_rejects(text):
    with pytest.raises(BadReference):
        parse_reference(text)


def test_format_reference():
    assert format_reference("ABC-1") == "ABC-1"
    assert format_reference("ABC-1", 3) == "ABC-1@3"
    for bad in (("", None), ("ABC", 0), ("A B", 1)):
        with pytest.raises(BadReference):
            format_reference(*bad)


# --- properties --------------------------------------------------------------------------

_codes = st.sampled_from(sorted(SHORT_CODE_SCHEMAS))
_governments = st.one_of(
    st.just("SCBD"), st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)
)
_ids = st.integers(min_value=1, max_value=2**63 - 1)


@st.composite
def uids(draw: st.DrawFn) -> Uid:
    code = draw(_codes)
    prefix = draw(st.sampled_from([canonical_prefix(code), "ABSCH"]))
    revision = draw(st.one_of(st.none(), _ids))
    return Uid(prefix, code, draw(_governments), draw(_ids), revision)


@given(uids(), st.sampled_from([str.upper, str.lower, str.title, str.swapcase]))
def test_round_trip(uid, case):
    text = str(uid)
    assert str(parse_uid(text)) == text
    assert parse_uid(case(text)) == uid


@given(uids(), st.sampled_from(["dev", "DEV", "trg", "Trg"]), st.integers(min_value=1, max_value=5))
def test_environment_marker_is_ignored(uid, marker, position):
    parts = str(uid).split("-")
    parts.insert(min(position, len(parts)), marker)
    assert parse_uid("-".join(parts)) == uid


@given(st.text(max_size=200))
@example("ABSCH-IRCC-MX-1-2")
@example("ABSCH-IRCC-ﬀ-1-2")  # a ligature that upper-cases to two ASCII letters
@example("ABSCH-IRCC-MX-1-²")
def test_arbitrary_text_raises_only_uid_error(text):
    try:
        result = parse_uid(text)
    except UidError:
        return
    assert isinstance(result, Uid)


@given(st.text(alphabet="ABSCHIRCPNFMXdevtrg0123456789- ", max_size=40))
def test_uid_like_text_raises_only_uid_error(text):
    try:
        uid = parse_uid(text)
    except UidError:
        return
    assert parse_uid(str(uid)) == uid


@given(st.text(max_size=150))
def test_arbitrary_reference_raises_only_bad_reference(text):
    try:
        identifier, revision = parse_reference(text)
    except BadReference:
        return
    assert parse_reference(format_reference(identifier, revision)) == (identifier, revision)


# --- Solr ids [C8] -------------------------------------------------------------------------


def _abs_hex_to_integer(hex_id: str) -> int:
    """ABSCH's ``hexToInteger``: characters 15-23 as hex."""
    return int(hex_id[15:24], 16)


def _scbd_extract_id(hex_id: str) -> int:
    """SCBD's other pages: strip ``52000000cbd08`` and read the rest as hex."""
    return int(hex_id.replace("52000000cbd08", ""), 16)


@pytest.mark.parametrize(
    ("document_id", "solr_id"),
    [
        (207608, "52000000cbd0800000032af8"),  # sample 09, a real id
        (1, "52000000cbd0800000000001"),
        (MAX_SOLR_DOCUMENT_ID, "52000000cbd0800fffffffff"),
    ],
)
def test_solr_ids_both_ways(document_id, solr_id):
    assert format_solr_id(document_id) == solr_id
    assert parse_solr_id(solr_id) == document_id
    assert parse_solr_id(solr_id.upper()) == document_id
    assert _abs_hex_to_integer(solr_id) == _scbd_extract_id(solr_id) == document_id


@pytest.mark.parametrize("document_id", [0, -1, MAX_SOLR_DOCUMENT_ID + 1, 2**63 - 1])
def test_a_document_id_without_a_solr_id(document_id):
    with pytest.raises(UidError, match="document id"):
        format_solr_id(document_id)
    assert solr_id_of(document_id) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "52000000cbd0800000032af",  # 23 characters
        "52000000cbd0800000032af80",  # 25
        "52000000cbd080000003zaf8",  # not hex
        "52000000cbd0180000032af8",  # a news item's prefix, not a national record's
        "52000000cbd0810000032af8",  # a documentID past 9 hex digits
        "52000000cbd0800000000000",  # documentID 0
        "ABSCH-IRCC-HT-207608-2",
        "207608",
    ],
)
def test_parse_solr_id_rejects(text):
    with pytest.raises(UidError):
        parse_solr_id(text)


@given(st.integers(min_value=1, max_value=MAX_SOLR_DOCUMENT_ID))
def test_every_solr_id_decodes_as_the_real_clients_do(document_id):
    solr_id = format_solr_id(document_id)
    assert len(solr_id) == 24
    assert parse_solr_id(solr_id) == document_id
    assert _abs_hex_to_integer(solr_id) == _scbd_extract_id(solr_id) == document_id


@given(st.text(max_size=40))
@example("52000000cbd0800000032af8")
@example("52000000cbd0800000032af\u0663")  # an Arabic-Indic digit is no hex digit
def test_arbitrary_text_raises_only_uid_error_as_solr_id(text):
    try:
        document_id = parse_solr_id(text)
    except UidError:
        return
    assert format_solr_id(document_id) == text.strip().lower()
