"""Request and response bodies of the registry API."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import email_validator
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field
from typing_extensions import TypeAliasType

from services.registry.codes import AbschCode
from shared.auth import UNSCOPED_ROLES, Role
from shared.http import Problem
from shared.openapi import NON_BLANK_TEXT_PATTERN, ONE_LINE_PATTERN, RequestBody
from shared.records.common import LANGUAGES, Language, LongText, one_line
from shared.timestamps import UtcDateTime
from shared.uid import SOLR_ID_PREFIX

LString = dict[str, str]
# A revocation reason becomes the record's amendmentDescription, so the same bounds; at
# least one language must say something (the schema states it: one branch per language).
ReasonLString = Annotated[
    dict[Language, LongText],
    Field(
        min_length=1,
        max_length=len(LANGUAGES),
        json_schema_extra={
            "anyOf": [
                {
                    "properties": {lang: {"type": "string", "pattern": NON_BLANK_TEXT_PATTERN}},
                    "required": [lang],
                }
                for lang in LANGUAGES
            ]
        },
    ),
]


# A record as JSON, recursively: its document states that every string and key, however
# deep, is text without control characters (``state_plumbing`` adds the patterns that
# ``shared.hygiene`` enforces), where ``dict[str, Any]`` would promise anything.
RecordValue = TypeAliasType(
    "RecordValue",
    "str | int | float | bool | list[RecordValue] | dict[str, RecordValue] | None",
)
RecordJson = dict[str, RecordValue]


class ApiModel(BaseModel):
    """Response bodies: camelCase aliases on the wire, snake_case names in Python."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class RevocationView(ApiModel):
    """How and when an IRCC was revoked [P7]: the reason given, the moment the revoking
    revision was published, and that revision's UID."""

    reason: dict[str, str] = Field(description="the revocation reason (an lstring)")
    revoked_at: UtcDateTime = Field(alias="revokedAt")
    uid: str = Field(description="UID of the revision that revoked the certificate")


class RecordView(ApiModel):
    """A record revision (or draft) with its server numbers [C5]. Once an IRCC is revoked,
    every revision of it reads ``revoked``, with the reason and date [P7]."""

    uid: str | None = Field(description="UID of this revision; None for a draft")
    identifier: str
    schema_: str = Field(alias="schema")
    government: str | None
    document_id: int = Field(alias="documentID")
    revision: int | None
    latest_revision: int = Field(alias="latestRevision")
    status: Literal["draft", "current", "old-version", "revoked"]
    revocation: RevocationView | None = Field(
        default=None, description="set on every revision of a revoked IRCC"
    )
    record: dict[str, Any]


class RevisionSummary(ApiModel):
    """One entry of a record's history: labelled as the certificate's history is [P8], and
    with the certificate's status, which is ``revoked`` for every revision once it is [P7]."""

    uid: str
    revision: int
    amendment_intent: int | None = Field(alias="amendmentIntent")
    label: Literal["REVOKED", "OLD VERSION", "CURRENT VERSION"]
    status: Literal["current", "old-version", "revoked"]
    revocation: RevocationView | None = Field(
        default=None, description="set on every revision of a revoked IRCC"
    )
    published_at: UtcDateTime = Field(alias="publishedAt")


class ValidationIssueView(BaseModel):
    """One failure, as the clearing-house's validation API writes it."""

    code: AbschCode
    property: str = Field(description="the failing field's path, e.g. ``title`` or ``absCNA``")


class ValidationReport(BaseModel):
    """``POST /v1/records/{schema}/validate``: what publishing the record would refuse; no
    errors when it may be published."""

    errors: list[ValidationIssueView]


class PublishBody(RequestBody):
    """Optional message from an NAU to the publishing authority [W2]."""

    message: str | None = Field(default=None, max_length=1000)


class PublishResult(ApiModel):
    """A new revision, or a request waiting for the PA."""

    status: Literal["published", "requested"]
    document_id: int = Field(alias="documentID")
    revision: int | None = None
    uid: str | None = None
    request_id: int | None = Field(default=None, alias="requestId")


class BatchBody(RequestBody):
    """Records of one schema to save as drafts and, unless ``publish`` is false, publish."""

    records: list[RecordJson] = Field(min_length=1, max_length=500)
    publish: bool = Field(default=True, strict=True)


class BatchItem(ApiModel):
    """One record of a batch, in the order sent: its draft saved, published, a request
    opened for the PA, or refused. ``problem`` says why it was refused, or why its saved
    draft was not published."""

    index: int
    identifier: str | None
    status: Literal["draft", "published", "requested", "refused"]
    document_id: int | None = Field(default=None, alias="documentID")
    revision: int | None = None
    uid: str | None = None
    request_id: int | None = Field(default=None, alias="requestId")
    problem: Problem | None = None


class BatchResult(ApiModel):
    """Each item's outcome, and how many ended each way."""

    items: list[BatchItem]
    published: int
    requested: int
    drafts: int
    refused: int


# A file name without path or control characters; its extension says the format.
IMPORT_FILE_NAME = (
    r"^[^\x00-\x1f\x7f-\x9f/\\]{1,200}\.(?:[jJ][sS][oO][nN]|[cC][sS][vV]|[xX][lL][sS][xX])$"
)


class ImportFile(RequestBody):
    """One file to import: its name, whose extension says the format (``.json``: ABSCH
    record JSON or a Solr search response; ``.csv``/``.xlsx``: the IRCC bulk-upload
    spreadsheet), and its bytes in base64."""

    name: str = Field(pattern=IMPORT_FILE_NAME, max_length=205)
    content: str = Field(
        min_length=1,
        max_length=1_400_000,
        pattern=r"^[A-Za-z0-9+/]*={0,2}$",
        description="the file's bytes, base64 (RFC 4648, no line breaks)",
    )


class ImportBody(RequestBody):
    """Files whose records to save for the caller's government and, unless ``publish`` is
    false, publish (an NAU's open requests). ``dryRun`` checks without writing."""

    model_config = ConfigDict(populate_by_name=True)

    files: list[ImportFile] = Field(min_length=1, max_length=20)
    publish: bool = Field(default=True, strict=True)
    dry_run: bool = Field(default=False, strict=True, alias="dryRun")


class ImportItem(BatchItem):
    """One record of an import: where it came from (``file``, and ``position``: ``row 7``,
    ``index 2``, ``docs[3]``, or ``file`` when the file could not be read) and its
    batch outcome. In a dry run, ``status`` is what the item would get."""

    file: str
    position: str
    schema_: str | None = Field(alias="schema")


class ImportResult(ApiModel):
    """Each item's outcome, in file order (a spreadsheet's new contacts before its rows),
    and how many ended each way."""

    items: list[ImportItem]
    dry_run: bool = Field(alias="dryRun")
    published: int
    requested: int
    drafts: int
    refused: int


class RevokeBody(RequestBody):
    """Revocation reason, as an lstring (e.g. ``{"en": "permit withdrawn"}``)."""

    reason: ReasonLString


class RejectBody(RequestBody):
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
    created_at: UtcDateTime = Field(alias="createdAt")
    uid: str | None = None


GOVERNMENT_PATTERN = r"^[A-Za-z]{2}$"
SOLR_ID_PATTERN = f"^{SOLR_ID_PREFIX}[0-9a-f]{{9}}$"
# email-validator refuses special-use domain names (RFC 6761: ``x@lab.test``), whatever
# their case; "format: email" alone would promise them.
SPECIAL_USE_DOMAIN = "[.@](?:{})$".format(
    "|".join(
        "".join(f"[{c.upper()}{c}]" if c.isalpha() else re.escape(c) for c in name)
        for name in email_validator.SPECIAL_USE_DOMAIN_NAMES
    )
)


def _role_requirements() -> dict[str, Any]:
    """What a role needs besides name and email, as the handler checks it: a government for
    every role but the unscoped ones, and also a checkpoint for the ``checkpoint`` role."""
    unscoped = sorted(r.value for r in UNSCOPED_ROLES)
    scoped = sorted(r.value for r in Role if r not in UNSCOPED_ROLES and r is not Role.CHECKPOINT)
    government = {"type": "string", "pattern": GOVERNMENT_PATTERN}
    checkpoint = {"type": "string", "minLength": 1, "maxLength": 128}
    return {
        "anyOf": [
            {"properties": {"role": {"enum": unscoped}}},
            {
                "properties": {"role": {"enum": scoped}, "government": government},
                "required": ["government"],
            },
            {
                "properties": {
                    "role": {"const": Role.CHECKPOINT.value},
                    "government": government,
                    "checkpoint": checkpoint,
                },
                "required": ["government", "checkpoint"],
            },
        ]
    }


class UserCreate(RequestBody):
    """A user to designate. The government is required for every role but the unscoped
    ones (``admin``, ``operator``: ignored for them), the checkpoint for ``checkpoint``."""

    model_config = ConfigDict(json_schema_extra=_role_requirements())

    name: Annotated[str, AfterValidator(one_line)] = Field(
        min_length=1, max_length=200, json_schema_extra={"pattern": ONE_LINE_PATTERN}
    )
    email: EmailStr = Field(json_schema_extra={"not": {"pattern": SPECIAL_USE_DOMAIN}})
    role: Role
    government: str | None = Field(default=None, pattern=GOVERNMENT_PATTERN)
    checkpoint: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="absCheckpoint identifier (checkpoint role)",
    )


class UserCreated(BaseModel):
    """The new user's id, first access token and secret (shown this once, never again)."""

    id: str
    token: str
    expires_at: UtcDateTime = Field(description="when the access token stops working")
    secret: str = Field(description="exchanged at POST /v1/tokens for a fresh access token")
    role: Role
    government: str | None


class TokenRequest(RequestBody):
    """A user's secret, to exchange for a fresh access token."""

    # token_urlsafe(32) gives 43 characters; the bounds keep junk away from the database.
    secret: str = Field(min_length=20, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


class TokenIssued(BaseModel):
    """A fresh access token."""

    token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: UtcDateTime


class VerificationView(BaseModel):
    """Validity of an IRCC revision."""

    status: Literal["valid", "superseded", "revoked", "expired", "unknown"]
    latest_uid: str | None


class SearchItem(ApiModel):
    """A published record in search results, with the numbers the real index knows it by."""

    uid: str
    schema_: str = Field(alias="schema")
    government: str | None
    identifier: str
    title: str
    revoked: bool
    document_id: int = Field(alias="documentID", ge=1)
    solr_id: str | None = Field(
        alias="solrId",
        pattern=SOLR_ID_PATTERN,
        description="the record's ``id`` in the real ABSCH Solr index [C8]: "
        f"{SOLR_ID_PREFIX!r} and the documentID in 9 hex digits (null past 0xFFFFFFFFF); "
        "GET /v1/records/{solrId} resolves it",
    )


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
    created_at: UtcDateTime = Field(alias="createdAt")
