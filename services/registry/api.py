"""Registry HTTP API (v1)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from services.registry.adapters.tables import RecordRow, RequestRow, RevisionRow
from services.registry.context import RegistryContext
from services.registry.domain import Forbidden, RuleViolation
from services.registry.handlers import queries, records, users, workflow
from services.registry.handlers.errors import Conflict, InvalidRecord, NotFound
from services.registry.schemas import (
    NotificationView,
    PublishBody,
    PublishResult,
    RecordView,
    RejectBody,
    RequestView,
    RevisionSummary,
    RevokeBody,
    SearchItem,
    SearchPage,
    UserCreate,
    UserCreated,
    VerificationView,
)
from shared.auth import Principal, bearer_token
from shared.http import PROBLEM_RESPONSES, FieldProblem, Problem, problem_response
from shared.logging import correlation_id
from shared.uid import MAX_ID


def get_ctx(request: Request) -> RegistryContext:
    """The registry context of this app."""
    ctx: RegistryContext = request.app.state.ctx
    return ctx


Ctx = Annotated[RegistryContext, Depends(get_ctx)]


async def current_principal(request: Request, ctx: Ctx) -> Principal:
    """The authenticated caller (401 without a valid token)."""
    return await ctx.verifier.verify(bearer_token(request))


async def optional_principal(request: Request, ctx: Ctx) -> Principal | None:
    """The caller when a token is given; anonymous otherwise."""
    if "authorization" not in request.headers:
        return None
    return await ctx.verifier.verify(bearer_token(request))


Caller = Annotated[Principal, Depends(current_principal)]
RequestId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
MaybeCaller = Annotated[Principal | None, Depends(optional_principal)]

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)
RECORD_EXAMPLE = {
    "header": {
        "identifier": "BFE622A8-17A5-6AA6-C534-5E0E5357279F",
        "schema": "authority",
        "languages": ["en"],
    },
    "government": {"identifier": "af"},
    "name": {"en": "CNA"},
}


def record_view(row: RecordRow, rev: RevisionRow | None) -> RecordView:
    """API view of a revision, or of the draft when ``rev`` is None."""
    if rev is None:
        status, body = "draft", row.draft or {}
    elif row.revoked and rev.revision == row.latest_revision:
        status, body = "revoked", rev.body
    else:
        status = "current" if rev.revision == row.latest_revision else "old-version"
        body = rev.body
    return RecordView(
        uid=rev.uid if rev else None,
        identifier=row.identifier,
        schema_=row.schema_name,
        government=row.government,
        document_id=row.document_id,
        revision=rev.revision if rev else None,
        latest_revision=row.latest_revision,
        status=status,
        record=body,
    )


@router.put("/records/{schema}/{identifier}", response_model=RecordView, tags=["records"])
async def save_draft(
    schema: str,
    identifier: str,
    caller: Caller,
    ctx: Ctx,
    body: Annotated[dict[str, Any], Body(examples=[RECORD_EXAMPLE])],
) -> RecordView:
    """Save a draft (validated; confidential parts stripped before storage)."""
    row = await records.save_draft(ctx, caller, schema, identifier, body)
    return record_view(row, None)


@router.post(
    "/records/{schema}/{identifier}/publish", response_model=PublishResult, tags=["records"]
)
async def publish(
    schema: str, identifier: str, caller: Caller, ctx: Ctx, body: PublishBody | None = None
) -> PublishResult:
    """PA: publish the draft as a new revision. NAU: open a request to the PA."""
    out = await records.publish(
        ctx,
        caller,
        schema,
        identifier,
        message=body.message if body else None,
        correlation_id=correlation_id.get(),
    )
    return _publish_result(out)


@router.post(
    "/records/absPermit/{identifier}/revoke", response_model=PublishResult, tags=["records"]
)
async def revoke(identifier: str, body: RevokeBody, caller: Caller, ctx: Ctx) -> PublishResult:
    """Revoke a published IRCC with a reason (final revision, record frozen)."""
    out = await records.revoke(
        ctx, caller, identifier, body.reason, correlation_id=correlation_id.get()
    )
    return _publish_result(out)


def _publish_result(out: records.PublishOutcome) -> PublishResult:
    if out.request_id is not None:
        return PublishResult(
            status="requested", document_id=out.document_id, request_id=out.request_id
        )
    return PublishResult(
        status="published", document_id=out.document_id, revision=out.revision, uid=out.uid
    )


@router.get("/records/{uid}", response_model=RecordView, tags=["records"])
async def get_record(
    uid: str,
    caller: MaybeCaller,
    ctx: Ctx,
    draft: bool = Query(default=False, description="the draft, not a revision"),
) -> RecordView:
    """A record by UID (with or without revision), ``identifier[@rev]`` or documentID."""
    row, rev = await records.read(ctx, caller, uid, draft=draft)
    return record_view(row, rev)


@router.get("/records/{uid}/revisions", response_model=list[RevisionSummary], tags=["records"])
async def get_revisions(uid: str, ctx: Ctx) -> list[RevisionSummary]:
    """Every published revision, oldest first, labelled as the certificate does [P8]."""
    row, revs = await records.revisions(ctx, uid)

    def label(r: RevisionRow) -> str:
        if r.amendment_intent == 1:
            return "REVOKED"
        return "CURRENT VERSION" if r.revision == row.latest_revision else "OLD VERSION"

    return [
        RevisionSummary(
            uid=r.uid,
            revision=r.revision,
            amendment_intent=r.amendment_intent,
            label=label(r),
            published_at=r.published_at,
        )
        for r in revs
    ]


@router.get("/verify/{uid}", response_model=VerificationView, tags=["public"])
async def verify(uid: str, ctx: Ctx) -> VerificationView:
    """Public check of an IRCC: valid, superseded, revoked, expired or unknown."""
    out = await queries.verify(ctx, uid)
    return VerificationView(status=out.status.value, latest_uid=out.latest_uid)


@router.get("/search", response_model=SearchPage, tags=["public"])
async def search(
    ctx: Ctx,
    q: str | None = Query(default=None, max_length=200),
    schema: str | None = Query(default=None, max_length=64),
    government: str | None = Query(default=None, pattern=r"^[A-Za-z]{2}$"),
    page: int = Query(default=1, ge=1, le=10_000),
    page_size: int = Query(default=20, ge=1, le=100),
) -> SearchPage:
    """Free text over titles, subject-matter and keywords in all languages, plus filters."""
    total, hits = await queries.search(
        ctx, q=q, schema=schema, government=government, page=page, page_size=page_size
    )
    items = [
        SearchItem(
            uid=h.uid,
            schema_=h.schema,
            government=h.government,
            identifier=h.identifier,
            title=h.title,
            revoked=h.revoked,
        )
        for h in hits
    ]
    return SearchPage(total=total, page=page, page_size=page_size, items=items)


def _request_view(req: RequestRow, uid: str | None = None) -> RequestView:
    return RequestView(
        id=req.id,
        document_id=req.document_id,
        action=req.action,
        state=req.state,
        result=req.result,
        reason=req.reason,
        message=req.message,
        requested_by=req.requested_by,
        decided_by=req.decided_by,
        created_at=req.created_at,
        uid=uid,
    )


@router.get("/requests", response_model=list[RequestView], tags=["workflow"])
async def list_requests(caller: Caller, ctx: Ctx) -> list[RequestView]:
    """Requests of the caller's government."""
    return [_request_view(r) for r in await workflow.requests_for(ctx, caller)]


@router.post("/requests/{request_id}/approve", response_model=RequestView, tags=["workflow"])
async def approve(request_id: RequestId, caller: Caller, ctx: Ctx) -> RequestView:
    """PA approves: the requested revision is published."""
    req, uid = await workflow.approve(ctx, caller, request_id, correlation_id=correlation_id.get())
    return _request_view(req, uid)


@router.post("/requests/{request_id}/reject", response_model=RequestView, tags=["workflow"])
async def reject(request_id: RequestId, body: RejectBody, caller: Caller, ctx: Ctx) -> RequestView:
    """PA rejects with a reason."""
    return _request_view(await workflow.reject(ctx, caller, request_id, body.reason))


@router.post("/requests/{request_id}/recall", response_model=RequestView, tags=["workflow"])
async def recall(request_id: RequestId, caller: Caller, ctx: Ctx) -> RequestView:
    """The requester withdraws its request."""
    return _request_view(await workflow.recall(ctx, caller, request_id))


@router.get("/notifications", response_model=list[NotificationView], tags=["workflow"])
async def notifications(caller: Caller, ctx: Ctx) -> list[NotificationView]:
    """The caller's requests, decisions and reminders [W4]."""
    rows = await workflow.notifications_for(ctx, caller)
    return [
        NotificationView(
            id=n.id,
            action=n.action,
            iteration=n.iteration,
            info=n.info,
            request_id=n.request_id,
            identifier=n.identifier,
            schema_=n.schema_name,
            title=n.title,
            state=n.state,
            created_at=n.created_at,
        )
        for n in rows
    ]


@router.post("/users", response_model=UserCreated, status_code=201, tags=["identity"])
async def create_user(body: UserCreate, caller: Caller, ctx: Ctx) -> UserCreated:
    """Admin designates NFPs; NFP its PA, NAUs and CNA readers; PA checkpoint operators."""
    user, token = await users.create_user(
        ctx,
        caller,
        name=body.name,
        email=str(body.email),
        role=body.role,
        government=body.government,
        checkpoint=body.checkpoint,
    )
    return UserCreated(id=user.id, token=token, role=body.role, government=user.government)


well_known = APIRouter()


@well_known.get("/.well-known/jwks.json", tags=["identity"])
async def jwks(ctx: Ctx) -> dict[str, Any]:
    """Public keys that verify the registry's tokens."""
    return {"keys": [ctx.key.jwk()]}


def install_error_mapping(app: FastAPI) -> None:
    """Map handler errors to problem+json."""

    @app.exception_handler(NotFound)
    async def _nf(request: Request, exc: NotFound) -> JSONResponse:
        return problem_response(Problem(title="Not Found", status=404, detail=str(exc)), request)

    @app.exception_handler(Conflict)
    async def _cf(request: Request, exc: Conflict) -> JSONResponse:
        return problem_response(Problem(title="Conflict", status=409, detail=str(exc)), request)

    @app.exception_handler(Forbidden)
    async def _fb(request: Request, exc: Forbidden) -> JSONResponse:
        return problem_response(Problem(title="Forbidden", status=403, detail=str(exc)), request)

    @app.exception_handler(InvalidRecord)
    async def _ir(request: Request, exc: InvalidRecord) -> JSONResponse:
        errors = [FieldProblem(field=e["field"], message=e["message"]) for e in exc.errors]
        return problem_response(
            Problem(title="Unprocessable Content", status=422, detail=str(exc), errors=errors),
            request,
        )

    @app.exception_handler(RuleViolation)
    async def _rv(request: Request, exc: RuleViolation) -> JSONResponse:
        errors = [FieldProblem(field=exc.field, message=str(exc))] if exc.field else None
        return problem_response(
            Problem(
                title="Unprocessable Content", status=exc.status, detail=str(exc), errors=errors
            ),
            request,
        )
