"""Timestamps as every API answer and event carries them: UTC, with an offset (``Z``).

Values are stored in UTC, but SQLite hands them back naive; an answer declared
``date-time`` (RFC 3339) must still carry its offset, so every response model types its
timestamps as :data:`UtcDateTime`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken to be UTC already (as it was stored)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# Validation makes the value aware; serialisation repeats it, so a model built without
# validation (``model_construct``) still answers with an offset. Pydantic writes UTC as "Z".
UtcDateTime = Annotated[
    datetime, AfterValidator(as_utc), PlainSerializer(as_utc, return_type=datetime)
]
