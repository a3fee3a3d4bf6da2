"""Checkpoint HTTP API (v1): submit, amend and read communiqués."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field
from typing_extensions import TypeAliasType

from services.checkpoint import handlers, revisions
from services.checkpoint.context import CheckpointContext
from services.checkpoint.domain import Forbidden
from shared.auth import Principal, current_principal
from shared.http import PROBLEM_RESPONSES, FieldProblem, Problem, problem_response
from shared.logging import correlation_id
from shared.openapi import NON_BLANK_TEXT_PATTERN, RequestBody
from shared.records.common import LANGUAGES, Language, LongText
from shared.timestamps import UtcDateTime


async def get_ctx(request: Request) -> CheckpointContext:
    """The checkpoint context of this app."""
    ctx: CheckpointContext = request.app.state.ctx
    return ctx


Ctx = Annotated[CheckpointContext, Depends(get_ctx)]
Caller = Annotated[Principal, Depends(current_principal)]
router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)


class SubmitWarning(BaseModel):
    """Something accepted as sent that the submitter should look at; ``field`` names it."""

    field: str
    message: str


class SubmitResult(BaseModel):
    """The communiqué's UID, plus warnings that did not prevent publication (e.g. evidence
    of a communiqué without IRCC sent along with cited IRCCs: kept, and named here)."""

    uid: str
    warnings: list[SubmitWarning] = Field(default_factory=list)


class CommuniqueView(BaseModel):
    """A revision of a published communiqué; an older one is ``archived``."""

    uid: str = Field(description="UID of this revision")
    identifier: str
    government: str
    revision: int
    latest_revision: int
    latest_uid: str = Field(description="UID of the latest revision")
    status: Literal["current", "archived"]
    reason: dict[str, str] | None = Field(
        default=None, description="why this revision amended the one before (lstring)"
    )
    submitted_by: str = Field(description="user who submitted this revision")
    created_at: UtcDateTime = Field(description="when this revision was published")
    record: dict[str, Any]


def _view(rev: revisions.Revision) -> CommuniqueView:
    return CommuniqueView(
        uid=rev.uid,
        identifier=rev.identifier,
        government=rev.government,
        revision=rev.revision,
        latest_revision=rev.latest_revision,
        latest_uid=rev.latest_uid,
        status=rev.status,
        reason=rev.reason,
        submitted_by=rev.submitted_by,
        created_at=rev.created_at,
        record=rev.body,
    )


def _said(reason: dict[str, str]) -> dict[str, str]:
    if not any(text.strip() for text in reason.values()):
        raise ValueError("a reason is required: say why in at least one language")
    return reason


# Why a communiqué is amended, as an lstring (e.g. ``{"en": "wrong collection date"}``);
# one language at least must say something (the schema states it: one branch per language).
Reason = Annotated[
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
    AfterValidator(_said),
]


# Any JSON value, spelt out so that the document states at every depth what the plumbing
# refuses in strings and keys (``shared.hygiene``; ``state_plumbing`` adds the patterns).
RecordValue = TypeAliasType(
    "RecordValue", "dict[str, RecordValue] | list[RecordValue] | str | int | float | bool | None"
)


class AmendBody(RequestBody):
    """The next revision of a published communiqué, and why."""

    reason: Reason
    record: dict[str, RecordValue] = Field(
        description="the whole ``absCheckpointCommunique`` as for a submission; its "
        "header.identifier and government stay those of the communiqué"
    )


@router.post(
    "/communiques",
    response_model=SubmitResult,
    status_code=201,
    tags=["communiques"],
    responses={200: {"model": SubmitResult, "description": "idempotent replay"}},
)
async def submit(
    ctx: Ctx,
    caller: Caller,
    body: Annotated[dict[str, Any], Body()],
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Publish an ``absCheckpointCommunique``; a retry with the same Idempotency-Key and body
    returns the same UID, the same key with another body is refused (409)."""
    out = await handlers.submit(
        ctx, caller, body, idempotency_key=idempotency_key, correlation_id=correlation_id.get()
    )
    warnings = [SubmitWarning(field=w["field"], message=w["message"]) for w in out.warnings]
    result = SubmitResult(uid=out.uid, warnings=warnings)
    return JSONResponse(result.model_dump(), status_code=200 if out.replayed else 201)


# What a UID or header.identifier can hold (anything else is refused before the database).
RECORD_KEY = r"^[A-Za-z0-9_.@\-]+$"
# A cited IRCC, ``identifier[@revision]`` (spaces around are ignored); the revision within
# what a database integer holds.
IRCC_REFERENCE = r"^\s*[A-Za-z0-9_.\-]{1,128}(?:@0*[1-9][0-9]{0,17})?\s*$"


@router.get("/communiques/{uid}", response_model=CommuniqueView, tags=["communiques"])
async def get_communique(
    uid: Annotated[str, Path(max_length=140, pattern=RECORD_KEY)], ctx: Ctx
) -> CommuniqueView:
    """A communiqué by UID (with or without revision) or header.identifier; a UID with an
    older revision answers that revision, marked ``archived``."""
    return _view(await revisions.read(ctx, uid))


@router.post(
    "/communiques/{uid}/amend",
    response_model=SubmitResult,
    status_code=201,
    tags=["communiques"],
    responses={
        200: {"model": SubmitResult, "description": "idempotent replay"},
        409: {
            "description": "``uid`` names an older revision, another amendment came first, "
            "or the Idempotency-Key was used with another body"
        },
        422: {
            "description": "the record breaks a rule, changes header.identifier or "
            "government, or changes nothing (``errors`` names ``record.<field>``)"
        },
    },
)
async def amend(
    uid: Annotated[str, Path(max_length=140, pattern=RECORD_KEY)],
    ctx: Ctx,
    caller: Caller,
    body: AmendBody,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Publish the next revision of a communiqué with a reason (``cpc.amended``): who may
    submit it may amend it. ``uid`` is a UID (with a revision: it must be the latest) or
    the header.identifier; the older revision stays readable, archived. Idempotency-Key as
    for a submission."""
    reason = {str(lang): text for lang, text in body.reason.items()}
    out = await revisions.amend(
        ctx,
        caller,
        uid,
        body.record,
        reason,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id.get(),
    )
    warnings = [SubmitWarning(field=w["field"], message=w["message"]) for w in out.warnings]
    result = SubmitResult(uid=out.uid, warnings=warnings)
    return JSONResponse(result.model_dump(), status_code=200 if out.replayed else 201)


@router.get("/communiques", response_model=list[CommuniqueView], tags=["communiques"])
async def list_communiques(
    ctx: Ctx,
    government: str | None = Query(default=None, pattern=r"^[A-Za-z]{2}$"),
    ircc: str | None = Query(default=None, max_length=160, pattern=IRCC_REFERENCE),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
) -> list[CommuniqueView]:
    """Communiqués (their latest revisions) by issuing government and/or cited IRCC,
    newest first."""
    rows = await handlers.search(ctx, government=government, ircc=ircc, limit=limit, offset=offset)
    return [_view(r) for r in await revisions.current(ctx, rows)]


def install_error_mapping(app: FastAPI) -> None:
    """Map handler errors to problem+json."""

    @app.exception_handler(handlers.InvalidCommunique)
    async def _invalid(request: Request, exc: handlers.InvalidCommunique) -> JSONResponse:
        errors = [FieldProblem(field=e["field"], message=e["message"]) for e in exc.errors]
        return problem_response(
            Problem(title="Unprocessable Content", status=422, detail=str(exc), errors=errors),
            request,
        )

    @app.exception_handler(handlers.Conflict)
    async def _conflict(request: Request, exc: handlers.Conflict) -> JSONResponse:
        return problem_response(Problem(title="Conflict", status=409, detail=str(exc)), request)

    @app.exception_handler(handlers.NotFound)
    async def _nf(request: Request, exc: handlers.NotFound) -> JSONResponse:
        return problem_response(Problem(title="Not Found", status=404, detail=str(exc)), request)

    @app.exception_handler(Forbidden)
    async def _fb(request: Request, exc: Forbidden) -> JSONResponse:
        return problem_response(Problem(title="Forbidden", status=403, detail=str(exc)), request)
