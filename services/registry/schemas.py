"""Request and response bodies of the registry API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

from shared.auth import Role
from shared.records.common import LANGUAGES, LongText, one_line

LString = dict[str, str]
# A revocation reason becomes the record's amendmentDescription, so the same bounds.
ReasonLString = Annotated[dict[str, LongText], Field(min_length=1, max_length=len(LANGUAGES))]


class ApiModel(BaseModel):
    """Response bodies: camelCase aliases on the wire, snake_case names in Python."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class RecordView(ApiModel):
    """A record revision (or draft) with its server numbers [C5]."""

    uid: str | None = Field(description="UID of this revision; None for a draft")
    identifier: str
    schema_: str = Field(alias="schema")
    government: str | None
    document_id: int = Field(alias="documentID")
    revision: int | None
    latest_revision: int = Field(alias="latestRevision")
    status: Literal["draft", "current", "old-version", "revoked"]
    record: dict[str, Any]


class RevisionSummary(ApiModel):
    """One entry of a record's history [P8]."""

    uid: str
    revision: int
    amendment_intent: int | None = Field(alias="amendmentIntent")
    label: Literal["REVOKED", "OLD VERSION", "CURRENT VERSION"]
    published_at: datetime = Field(alias="publishedAt")


class PublishBody(BaseModel):
    """Optional message from an NAU to the publishing authority [W2]."""

    message: str | None = Field(default=None, max_length=1000)


class PublishResult(ApiModel):
    """A new revision, or a request waiting for the PA."""

    status: Literal["published", "requested"]
    document_id: int = Field(alias="documentID")
    revision: int | None = None
    uid: str | None = None
    request_id: int | None = Field(default=None, alias="requestId")


class RevokeBody(BaseModel):
    """Revocation reason, as an lstring (e.g. ``{"en": "permit withdrawn"}``)."""

    reason: ReasonLString


class RejectBody(BaseModel):
    """Why the PA refuses a request."""

    reason: str = Field(min_length=1, max_length=2000)


class RequestView(ApiModel):
    """A publication request [W3]."""

    id: int
    document_id: int = Field(alias="documentID")
    action: str
    state: str
    result: str | None
    reason: str | None
    message: str | None
    requested_by: str = Field(alias="requestedBy")
    decided_by: str | None = Field(alias="decidedBy")
    created_at: datetime = Field(alias="createdAt")
    uid: str | None = None


class UserCreate(BaseModel):
    """A user to designate."""

    name: Annotated[str, AfterValidator(one_line)] = Field(min_length=1, max_length=200)
    email: EmailStr
    role: Role
    government: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    checkpoint: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="absCheckpoint identifier (checkpoint role)",
    )


class UserCreated(BaseModel):
    """The new user's id and first token."""

    id: str
    token: str
    role: Role
    government: str | None


class VerificationView(BaseModel):
    """Validity of an IRCC revision."""

    status: Literal["valid", "superseded", "revoked", "expired", "unknown"]
    latest_uid: str | None


class SearchItem(ApiModel):
    """A published record in search results."""

    uid: str
    schema_: str = Field(alias="schema")
    government: str | None
    identifier: str
    title: str
    revoked: bool


class SearchPage(BaseModel):
    """One page of search results."""

    total: int
    page: int
    page_size: int
    items: list[SearchItem]


class NotificationView(ApiModel):
    """A user notification [W4]."""

    id: int
    type: Literal["documentNotification"] = "documentNotification"
    action: str
    iteration: int
    info: str | None
    request_id: int | None = Field(alias="requestId")
    identifier: str
    schema_: str = Field(alias="schema")
    title: str
    state: str
    created_at: datetime = Field(alias="createdAt")
