"""Checkpoint HTTP API (v1): submit and read communiqués."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.checkpoint import handlers
from services.checkpoint.adapters.tables import CommuniqueRow
from services.checkpoint.context import CheckpointContext
from services.checkpoint.domain import Forbidden
from shared.auth import Principal, current_principal
from shared.http import PROBLEM_RESPONSES, FieldProblem, Problem, problem_response
from shared.logging import correlation_id
from shared.timestamps import UtcDateTime


def get_ctx(request: Request) -> CheckpointContext:
    """The checkpoint context of this app."""
    ctx: CheckpointContext = request.app.state.ctx
    return ctx


Ctx = Annotated[CheckpointContext, Depends(get_ctx)]
Caller = Annotated[Principal, Depends(current_principal)]
router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)


class SubmitResult(BaseModel):
    """The communiqué's UID, plus warnings that did not prevent publication."""

    uid: str
    warnings: list[str] = Field(default_factory=list)


class CommuniqueView(BaseModel):
    """A published communiqué."""

    uid: str
    identifier: str
    government: str
    submitted_by: str
    created_at: UtcDateTime
    record: dict[str, Any]


def _view(row: CommuniqueRow) -> CommuniqueView:
    return CommuniqueView(
        uid=row.uid,
        identifier=row.identifier,
        government=row.government,
        submitted_by=row.submitted_by,
        created_at=row.created_at,
        record=row.body,
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
    result = SubmitResult(uid=out.uid, warnings=out.warnings)
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
    """A communiqué by UID (with or without revision) or header.identifier."""
    return _view(await handlers.get(ctx, uid))


@router.get("/communiques", response_model=list[CommuniqueView], tags=["communiques"])
async def list_communiques(
    ctx: Ctx,
    government: str | None = Query(default=None, pattern=r"^[A-Za-z]{2}$"),
    ircc: str | None = Query(default=None, max_length=160, pattern=IRCC_REFERENCE),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
) -> list[CommuniqueView]:
    """Communiqués by issuing government and/or cited IRCC, newest first."""
    rows = await handlers.search(ctx, government=government, ircc=ircc, limit=limit, offset=offset)
    return [_view(r) for r in rows]


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
