"""CloudEvents 1.0 envelope (structured JSON mode) used for every Kafka message."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

DataT = TypeVar("DataT", bound=BaseModel)


class EventData(BaseModel):
    """Base of every event payload: frozen, unknown fields ignored (readers stay tolerant)."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", serialize_by_alias=True, populate_by_name=True
    )


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 envelope with the ``schemaversion`` and ``correlationid`` extensions."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1)
    source: str = Field(pattern=r"^/absch/[a-z]+$")
    type: str = Field(min_length=1)
    subject: str = Field(min_length=1, description="UID of the record the event is about")
    time: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: Literal["application/json"] = "application/json"
    schemaversion: int = Field(default=1, ge=1)
    correlationid: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1)
    data: DataT

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def to_json_bytes(self) -> bytes:
        """Wire form: UTF-8 JSON."""
        return self.model_dump_json().encode()

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict of the whole envelope."""
        return self.model_dump(mode="json")
