"""Envelope, catalogue and codec: what goes on the wire and what comes back."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import CATALOG, DecodeError, UnknownEventType, decode_event, new_event
from shared.events.catalog import EventSpec
from shared.events.codec import NotWanted
from shared.events.envelope import EventData
from shared.events.models import DiscrepancyEvent, IrccEvent
from shared.events.topics import Topic, all_topics, dlq_name, topic_name


def _ircc_event() -> Any:
    data = IrccEvent(
        uid="ABSCH-IRCC-MX-12-1",
        identifier="X-1",
        document_id=12,
        revision=1,
        government="mx",
        record={"header": {"identifier": "X-1"}},
    )
    return new_event(
        "ircc.published", source="registry", subject=data.uid, data=data, correlation_id="corr-1"
    )


def test_envelope_is_cloudevents_structured_json() -> None:
    wire = json.loads(_ircc_event().to_json_bytes())
    assert wire["specversion"] == "1.0"
    assert wire["type"] == "ircc.published"
    assert wire["source"] == "/absch/registry"
    assert wire["subject"] == "ABSCH-IRCC-MX-12-1"
    assert wire["datacontenttype"] == "application/json"
    assert wire["schemaversion"] == 1
    assert wire["correlationid"] == "corr-1"
    assert wire["time"].endswith("Z")
    assert wire["data"]["document_id"] == 12


def test_round_trip_gives_the_typed_payload() -> None:
    event = _ircc_event()
    back = decode_event(event.to_json_bytes())
    assert back == event
    assert isinstance(back.data, IrccEvent)


def test_aliased_fields_use_their_wire_names() -> None:
    from shared.events.models import DirectoryRecordPublished

    data = DirectoryRecordPublished(
        uid="ABSCH-CNA-MX-1-1",
        schema_="authority",
        identifier="A",
        document_id=1,
        revision=1,
        record={},
    )
    event = new_event("directory.record.published", source="registry", subject=data.uid, data=data)
    wire = json.loads(event.to_json_bytes())
    assert wire["data"]["schema"] == "authority"
    assert decode_event(event.to_json_bytes()).data.schema_ == "authority"


def test_payload_must_match_the_type() -> None:
    data = DiscrepancyEvent(id="d", rule="IRCC_REVOKED", cpc_uid="c", user_country="de")
    with pytest.raises(TypeError, match=r"ircc\.published carries IrccEvent"):
        new_event("ircc.published", source="monitor", subject="x", data=data)


def test_an_event_may_be_given_its_id() -> None:
    data = DiscrepancyEvent(id="d", rule="IRCC_REVOKED", cpc_uid="c", user_country="de")
    given = new_event(
        "discrepancy.flagged", source="monitor", subject="c", data=data, event_id="x1"
    )
    assert given.id == "x1"
    assert decode_event(given.to_json_bytes()).id == "x1"
    drawn = {
        new_event("discrepancy.flagged", source="monitor", subject="c", data=data).id
        for _ in range(2)
    }
    assert len(drawn) == 2  # random by default
    assert "x1" not in drawn
    with pytest.raises(ValidationError):
        new_event("discrepancy.flagged", source="monitor", subject="c", data=data, event_id="")


def test_readers_ignore_unknown_fields() -> None:
    wire = json.loads(_ircc_event().to_json_bytes())
    wire["futureextension"] = "x"
    wire["data"]["new_optional_field"] = 1
    assert decode_event(json.dumps(wire)).data.uid == "ABSCH-IRCC-MX-12-1"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "missing string 'type'"),
        (b'{"type": 3}', "missing string 'type'"),
    ],
)
def test_garbage_is_a_decode_error(raw: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_event(raw)


def test_invalid_payload_names_the_fields() -> None:
    wire = json.loads(_ircc_event().to_json_bytes())
    del wire["data"]["uid"]
    wire["data"]["revision"] = 0
    with pytest.raises(DecodeError, match=r"data\.uid.*data\.revision|data\.revision.*data\.uid"):
        decode_event(json.dumps(wire))


def test_unknown_type_is_distinguished_from_garbage() -> None:
    wire = json.loads(_ircc_event().to_json_bytes())
    wire["type"] = "ircc.teleported"
    with pytest.raises(UnknownEventType):
        decode_event(json.dumps(wire))


def test_a_type_outside_only_is_not_validated() -> None:
    wire = json.loads(_ircc_event().to_json_bytes())
    wire["data"] = {"uid": 42}  # invalid, but never looked at
    with pytest.raises(NotWanted):
        decode_event(json.dumps(wire), only=frozenset({"cpc.published"}))
    with pytest.raises(DecodeError, match=r"invalid ircc\.published"):
        decode_event(json.dumps(wire), only=frozenset({"ircc.published"}))


def test_newer_schema_version_than_known_is_refused() -> None:
    wire = json.loads(_ircc_event().to_json_bytes())
    wire["schemaversion"] = 2
    with pytest.raises(DecodeError, match="unsupported schemaversion 2"):
        decode_event(json.dumps(wire))


class _V2(EventData):
    uid: str
    government_code: str


def test_older_versions_are_upcast() -> None:
    catalog = {"x.happened": EventSpec("x.happened", Topic.IRCC, _V2, version=2)}

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"uid": data["uid"], "government_code": data["gov"].upper()}

    raw = json.dumps(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/absch/registry",
            "type": "x.happened",
            "subject": "s",
            "time": "2026-01-01T00:00:00Z",
            "schemaversion": 1,
            "correlationid": "c",
            "data": {"uid": "u", "gov": "mx"},
        }
    )
    event = decode_event(raw, catalog=catalog, upcasters={("x.happened", 1): v1_to_v2})
    assert event.schemaversion == 2
    assert event.data == _V2(uid="u", government_code="MX")
    with pytest.raises(DecodeError, match=r"no upcaster for x\.happened v1"):
        decode_event(raw, catalog=catalog, upcasters={})


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_raises_only_decode_errors(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_event(raw)


def test_every_type_lives_on_a_known_topic() -> None:
    assert {spec.topic for spec in CATALOG.values()} == set(Topic)
    for name, spec in CATALOG.items():
        assert name == spec.name
        assert name.split(".")[0] in spec.topic.value


def test_topic_names() -> None:
    assert topic_name(Topic.IRCC) == "absch.ircc.v1"
    assert topic_name(Topic.IRCC, "t1.") == "t1.absch.ircc.v1"
    assert dlq_name("absch.cpc.v1") == "absch.cpc.v1.dlq"
    assert len(all_topics()) == 12
    assert "absch.notification.v1.dlq" in all_topics()
