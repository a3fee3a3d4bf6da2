"""Registry HTTP API (v1)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.convertors import StringConvertor, register_url_convertor

from services.registry.adapters.tables import RecordRow, RequestRow, RevisionRow
from services.registry.context import RegistryContext
from services.registry.domain import INTENT_REVOKE, REGISTRY_SCHEMAS
from services.registry.handlers import (
    audit,
    batch,
    export,
    importing,
    queries,
    records,
    users,
    validation,
    workflow,
)
from services.registry.importer import ImportedItem, read_file
from services.registry.importer.items import refusal as item_refusal
from services.registry.problems import REFUSALS, problem_for
from services.registry.schemas import (
    BatchBody,
    BatchItem,
    BatchResult,
    ImportBody,
    ImportItem,
    ImportResult,
    NotificationView,
    PublishBody,
    PublishResult,
    RecordJson,
    RecordView,
    RejectBody,
    RequestView,
    RevisionSummary,
    RevocationView,
    RevokeBody,
    SearchItem,
    SearchPage,
    TokenIssued,
    TokenRequest,
    UserCreate,
    UserCreated,
    ValidationIssueView,
    ValidationReport,
    VerificationView,
)
from shared.auth import DeclaresBearer, Principal, bearer_token
from shared.http import (
    PROBLEM_RESPONSES,
    problem_response,
)
from shared.logging import correlation_id
from shared.uid import MAX_ID


async def get_ctx(request: Request) -> RegistryContext:
    """The registry context of this app."""
    ctx: RegistryContext = request.app.state.ctx
    return ctx


Ctx = Annotated[RegistryContext, Depends(get_ctx)]


async def current_principal(request: Request, ctx: Ctx, _bearer: DeclaresBearer) -> Principal:
    """The authenticated caller (401 without a valid token)."""
    return await ctx.verifier.verify(bearer_token(request))


async def optional_principal(
    request: Request, ctx: Ctx, _bearer: DeclaresBearer
) -> Principal | None:
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


def revocation_view(rev: RevisionRow | None) -> RevocationView | None:
    """The reason and date of a revocation, from the revision that revoked [P7]."""
    if rev is None or rev.amendment_intent != INTENT_REVOKE:
        return None
    reason = rev.body.get("amendmentDescription")
    return RevocationView(
        reason=dict(reason) if isinstance(reason, dict) else {},
        revoked_at=rev.published_at,
        uid=rev.uid,
    )


def revision_status(
    row: RecordRow, rev: RevisionRow
) -> Literal["current", "old-version", "revoked"]:
    """A revoked certificate is revoked in every revision, old ones included [P7]."""
    if row.revoked:
        return "revoked"
    return "current" if rev.revision == row.latest_revision else "old-version"


def record_view(
    row: RecordRow, rev: RevisionRow | None, revocation: RevisionRow | None = None
) -> RecordView:
    """API view of a revision (with the revision that revoked it, if any), or of the draft
    when ``rev`` is None."""
    status: Literal["draft", "current", "old-version", "revoked"] = "draft"
    body = row.draft or {}
    if rev is not None:
        status, body = revision_status(row, rev), rev.body
    return RecordView(
        uid=rev.uid if rev else None,
        identifier=row.identifier,
        schema_=row.schema_name,
        government=row.government,
        document_id=row.document_id,
        revision=rev.revision if rev else None,
        latest_revision=row.latest_revision,
        status=status,
        revocation=revocation_view(revocation) if rev is not None else None,
        record=body,
    )


class RecordSchemaConvertor(StringConvertor):
    """A path segment naming a schema the registry keeps, so that ``/v1/records/0/revisions``
    is only a record's history, never a draft ``revisions`` of a schema ``0`` (the 405 for
    it lists the methods of the history alone)."""

    regex = "|".join(sorted(REGISTRY_SCHEMAS))


register_url_convertor("record_schema", RecordSchemaConvertor())
RecordSchema = Annotated[
    str,
    PathParam(
        description="a schema the registry keeps (any other is not a route: 404)",
        json_schema_extra={"enum": sorted(REGISTRY_SCHEMAS)},
    ),
]
# header.identifier's own rule: a draft at any other URL could never match its header.
RecordIdentifier = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{11,128}$")]


class DraftIdentifierConvertor(StringConvertor):
    """A path segment other than ``validate`` and ``batch`` (never identifiers: 11
    characters at least), so that ``/v1/records/{schema}/validate`` and ``.../batch`` are
    only those endpoints (their 405 lists POST alone)."""

    regex = "(?!(?:validate|batch)$)[^/]+"


register_url_convertor("draft_identifier", DraftIdentifierConvertor())


@router.put(
    "/records/{schema:record_schema}/{identifier:draft_identifier}",
    response_model=RecordView,
    tags=["records"],
    responses={
        403: {"description": "the record is another government's, or the role edits none"},
        422: {
            "description": "header.identifier or header.schema is not the URL's (field "
            "``header``); the government is absent or unknown (``government``); or the "
            "record's shape is broken (types, one-line text, lengths, dates, size): "
            "``errors`` names each field, ``validation`` gives the ABSCH codes"
        },
    },
)
async def save_draft(
    schema: RecordSchema,
    identifier: RecordIdentifier,
    caller: Caller,
    ctx: Ctx,
    body: Annotated[RecordJson, Body(examples=[RECORD_EXAMPLE])],
) -> RecordView:
    """Save a draft (confidential parts stripped before storage). The body is a record of
    ``schema`` whose ``header.identifier`` and ``header.schema`` are the URL's: a 422 names
    ``header`` when they are not. A draft may be incomplete, as in the real clearing-house:
    only its shape is checked here; publishing checks everything (see ``validate``)."""
    row = await records.save_draft(ctx, caller, schema, identifier, body)
    return record_view(row, None)


@router.post(
    "/records/{schema:record_schema}/validate",
    response_model=ValidationReport,
    tags=["records"],
    responses={403: {"description": "the record is another government's, or the role edits none"}},
)
async def validate_record(
    schema: RecordSchema,
    caller: Caller,
    ctx: Ctx,
    body: Annotated[RecordJson, Body(examples=[RECORD_EXAMPLE])],
) -> ValidationReport:
    """What publishing this record of ``schema`` would refuse, the clearing-house's way:
    ``{errors: [{code, property}]}`` with its codes (``Error.Mandatory``,
    ``Error.InvalidValue``, ...), empty when it may be published. Nothing is stored; a
    publication refused carries the same list in its problem (``validation``)."""
    found = await validation.validate(ctx, caller, schema, body)
    return ValidationReport(
        errors=[ValidationIssueView(code=i["code"], property=i["field"]) for i in found]
    )


@router.post(
    "/records/{schema:record_schema}/batch",
    response_model=BatchResult,
    tags=["records"],
    responses={200: {"description": "each item's outcome, in the order sent (refused items too)"}},
)
async def save_batch(
    schema: RecordSchema, body: BatchBody, caller: Caller, ctx: Ctx
) -> BatchResult:
    """Save up to 500 records of ``schema`` and, unless ``publish`` is false, publish each
    (an NAU's opens a request for the PA), in one transaction. Each item passes the checks
    of ``PUT`` then ``POST .../publish``; an item refused writes nothing and the others go
    on, and an item whose publication is refused keeps its saved draft. ``problem`` on an
    item is the problem document the single calls would have answered."""
    outcomes = await batch.save_many(
        ctx,
        caller,
        schema,
        [dict(r) for r in body.records],
        publish=body.publish,
        correlation_id=correlation_id.get(),
    )
    items = [
        BatchItem(
            index=o.index,
            identifier=o.identifier,
            status=o.status,
            document_id=o.document_id,
            revision=o.published.revision if o.published else None,
            uid=o.published.uid if o.published else None,
            request_id=o.published.request_id if o.published else None,
            problem=problem_for(o.refusal) if o.refusal is not None else None,
        )
        for o in outcomes
    ]
    return BatchResult(
        items=items,
        published=sum(i.status == "published" for i in items),
        requested=sum(i.status == "requested" for i in items),
        drafts=sum(i.status == "draft" for i in items),
        refused=sum(i.status == "refused" for i in items),
    )


@router.post(
    "/import",
    response_model=ImportResult,
    tags=["records"],
    responses={
        200: {"description": "each item's outcome, file by file (refused items too)"},
        403: {"description": "the caller acts for no government"},
    },
)
async def import_files(body: ImportBody, caller: Caller, ctx: Ctx) -> ImportResult:
    """Import files national systems already hold, for the caller's government only: ABSCH
    record JSON (a documents-API body or a list of them), Solr search responses
    (``response.docs``) and the IRCC bulk-upload spreadsheet (``.xlsx``, ``.csv``; its new
    contacts become ``SIMP-<GUID>`` contact records, saved before the IRCCs citing them).
    Records are grouped per schema and go through ``POST /v1/records/{schema}/batch``'s
    checks and workflow; an item of another government is refused (403), a row or file
    that cannot be read is refused naming its column or part (422), and the others go
    on. ``dryRun`` checks everything and writes nothing."""
    items: list[ImportedItem] = []
    for f in body.files:
        try:
            data = base64.b64decode(f.content, validate=True)
        except binascii.Error as exc:
            items.append(
                ImportedItem(f.name, "file", None, None, error=item_refusal("content", str(exc)))
            )
            continue
        items.extend(read_file(f.name, data, government=caller.government))
    outcomes = await importing.import_items(
        ctx,
        caller,
        items,
        publish=body.publish,
        dry_run=body.dry_run,
        correlation_id=correlation_id.get(),
    )
    answered = []
    for index, o in enumerate(outcomes):
        out = o.outcome.published if o.outcome else None
        answered.append(
            ImportItem(
                index=index,
                file=o.item.file,
                position=o.item.position,
                schema_=o.item.schema,
                identifier=o.item.identifier,
                status=o.status,
                document_id=o.outcome.document_id if o.outcome else None,
                revision=out.revision if out else None,
                uid=out.uid if out else None,
                request_id=out.request_id if out else None,
                problem=problem_for(o.refusal) if o.refusal is not None else None,
            )
        )
    return ImportResult(
        items=answered,
        dry_run=body.dry_run,
        published=sum(i.status == "published" for i in answered),
        requested=sum(i.status == "requested" for i in answered),
        drafts=sum(i.status == "draft" for i in answered),
        refused=sum(i.status == "refused" for i in answered),
    )


@router.post(
    "/records/{schema:record_schema}/{identifier}/publish",
    response_model=PublishResult,
    tags=["records"],
    responses={
        422: {
            "description": "the draft cannot be published: ``errors`` names each field and "
            "``validation`` lists them as ``POST /v1/records/{schema}/validate`` does"
        }
    },
)
async def publish(
    schema: RecordSchema,
    identifier: str,
    caller: Caller,
    ctx: Ctx,
    body: PublishBody | None = None,
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
    reason: dict[str, str] = {str(lang): text for lang, text in body.reason.items()}
    out = await records.revoke(ctx, caller, identifier, reason, correlation_id=correlation_id.get())
    return _publish_result(out)


def _publish_result(out: records.PublishOutcome) -> PublishResult:
    if out.request_id is not None:
        return PublishResult(
            status="requested", document_id=out.document_id, request_id=out.request_id
        )
    return PublishResult(
        status="published", document_id=out.document_id, revision=out.revision, uid=out.uid
    )


# Anonymous callers read published records; a token shows its government's drafts too.
@router.get(
    "/records/{uid}",
    response_model=RecordView,
    tags=["records"],
    openapi_extra={"security": [{}]},
)
async def get_record(
    uid: str,
    caller: MaybeCaller,
    ctx: Ctx,
    draft: bool = Query(default=False, description="the draft, not a revision"),
) -> RecordView:
    """A record by UID (with or without revision), ``identifier[@rev]``, documentID or the
    real index's Solr ``id`` (``52000000cbd0800`` + the documentID in 9 hex digits).
    Every revision of a revoked IRCC reads ``revoked``, with the reason and date [P7]."""
    found = await records.read(ctx, caller, uid, draft=draft)
    return record_view(found.row, found.revision, found.revocation)


@router.get("/records/{uid}/revisions", response_model=list[RevisionSummary], tags=["records"])
async def get_revisions(uid: str, ctx: Ctx) -> list[RevisionSummary]:
    """Every published revision, oldest first, labelled as the certificate does [P8], with
    the certificate's status: once revoked, every revision says so, with reason and date."""
    row, revs = await records.revisions(ctx, uid)
    revoked = revocation_view(revs[-1]) if row.revoked and revs else None

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
            status=revision_status(row, r),
            revocation=revoked,
            published_at=r.published_at,
        )
        for r in revs
    ]


@router.get(
    "/audit/drafts/{schema:record_schema}/{identifier}",
    response_model=RecordView,
    tags=["records"],
    responses={403: {"description": "only the Secretariat (admin) audits drafts"}},
)
async def audit_draft(
    schema: RecordSchema, identifier: RecordIdentifier, caller: Caller, ctx: Ctx
) -> RecordView:
    """The Secretariat reads a government's draft; each reading is logged (who, which
    record). ``GET /v1/records/{uid}?draft=true`` refuses the Secretariat such a draft."""
    row = await audit.read_draft(ctx, caller, schema, identifier)
    return record_view(row, None)


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
            document_id=h.document_id,
            solr_id=h.solr_id,
        )
        for h in hits
    ]
    return SearchPage(total=total, page=page, page_size=page_size, items=items)


ExportSchema = Literal["focalPoint", "authority", "contact", "absCheckpoint", "absPermit"]


@router.get(
    "/export",
    response_class=StreamingResponse,
    tags=["public"],
    responses={
        200: {
            "description": "one JSON array of records in the clearing-house's shape",
            "content": {"application/json": {"schema": {"type": "array", "items": {}}}},
        }
    },
)
async def export_records(
    ctx: Ctx,
    schema: ExportSchema | None = None,
    government: str | None = Query(default=None, pattern=r"^[A-Za-z]{2}$"),
) -> StreamingResponse:
    """Every published record's latest revision as the real clearing-house's JSON (the
    documents API's shape: confidential parts were never stored), streamed as one array;
    ``schema`` and ``government`` filter it. Drafts never appear."""
    return StreamingResponse(
        export.export_json(ctx, schema=schema, government=government),
        media_type="application/json",
    )


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
    """Admin designates NFPs; NFP its PA, NAUs and CNA readers; PA checkpoint operators.
    A government has one PA: a new one replaces (deactivates) the previous one [W1].
    The answer carries the user's secret, which is never shown again."""
    new = await users.create_user(
        ctx,
        caller,
        name=body.name,
        email=str(body.email),
        role=body.role,
        government=body.government,
        checkpoint=body.checkpoint,
        correlation_id=correlation_id.get(),
    )
    return UserCreated(
        id=new.user.id,
        token=new.access.token,
        expires_at=new.access.expires_at,
        secret=new.secret,
        role=body.role,
        government=new.user.government,
    )


UserId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


@router.delete("/users/{user_id}", status_code=204, tags=["identity"])
async def deactivate_user(user_id: UserId, caller: Caller, ctx: Ctx) -> Response:
    """Deactivate a user (final): the admin anyone, the NFP its government's PA, NAUs and CNA
    readers, the PA its checkpoint operators. Its tokens and secret stop working here at
    once and in every other service within a minute; repeating it changes nothing."""
    await users.deactivate_user(ctx, caller, user_id, correlation_id=correlation_id.get())
    return Response(status_code=204)


@router.post("/tokens", response_model=TokenIssued, tags=["identity"])
async def exchange_secret(body: TokenRequest, ctx: Ctx) -> TokenIssued:
    """A fresh access token for the holder of a user's secret (401 once deactivated)."""
    issued = await users.exchange_secret(ctx, body.secret)
    return TokenIssued(token=issued.token, expires_at=issued.expires_at)


well_known = APIRouter()


@well_known.get("/.well-known/jwks.json", tags=["identity"])
async def jwks(ctx: Ctx) -> dict[str, Any]:
    """Public keys that verify the registry's tokens."""
    return {"keys": [ctx.key.jwk()]}


def install_error_mapping(app: FastAPI) -> None:
    """Map handler errors to problem+json."""

    async def _refused(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(problem_for(exc), request)

    for refusal in REFUSALS:
        app.add_exception_handler(refusal, _refused)
