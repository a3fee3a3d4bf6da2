"""``UtcDateTime``: every timestamp an answer or an event carries is UTC, with ``Z``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from shared.timestamps import UtcDateTime, as_utc


class Stamped(BaseModel):
    at: UtcDateTime
    maybe: UtcDateTime | None = None


def test_a_naive_value_is_taken_as_utc_and_answers_with_z() -> None:
    """SQLite hands back what was stored in UTC without its offset."""
    stamped = Stamped(at=datetime(2026, 12, 5, 15, 31, 57, 685569))
    assert stamped.at.tzinfo is UTC
    assert json.loads(stamped.model_dump_json()) == {
        "at": "2026-12-05T15:31:57.685569Z",
        "maybe": None,
    }


def test_an_aware_value_is_converted_to_utc_not_relabelled() -> None:
    paris = timezone(timedelta(hours=1))
    stamped = Stamped(at=datetime(2026, 1, 1, 0, 30, tzinfo=paris))
    assert stamped.model_dump(mode="json")["at"] == "2025-12-31T23:30:00Z"


def test_text_with_an_offset_is_read_as_that_instant() -> None:
    stamped = Stamped.model_validate({"at": "2026-01-01T02:00:00+02:00"})
    assert stamped.model_dump(mode="json")["at"] == "2026-01-01T00:00:00Z"


def test_a_model_built_without_validation_still_answers_with_an_offset() -> None:
    stamped = Stamped.model_construct(at=datetime(2026, 1, 1), maybe=datetime(2026, 1, 2))
    assert stamped.model_dump(mode="json") == {
        "at": "2026-01-01T00:00:00Z",
        "maybe": "2026-01-02T00:00:00Z",
    }


def test_the_schema_says_date_time() -> None:
    """Serialisation keeps the declared type: a string of format ``date-time``."""
    for mode in ("validation", "serialization"):
        field = Stamped.model_json_schema(mode=mode)["properties"]["at"]
        assert field == {"format": "date-time", "title": "At", "type": "string"}


@given(st.datetimes(timezones=st.none() | st.timezones()))
def test_every_value_answers_as_the_same_instant_in_utc(value: datetime) -> None:
    text = TypeAdapter(UtcDateTime).dump_python(value, mode="json")
    assert text.endswith("Z")
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0)
    assert parsed == as_utc(value)
