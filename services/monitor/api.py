"""Monitor HTTP API (v1): discrepancy cases and the operator dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from services.monitor.adapters.tables import CaseRow
from services.monitor.cases import CaseConflict, CaseForbidden, CaseNotFound, CaseStore
from shared.auth import Principal, Role, current_principal, forbidden
from shared.http import PROBLEM_RESPONSES, Problem, problem_response
from shared.openapi import RequestBody
from shared.timestamps import UtcDateTime

DASHBOARD = Path(__file__).with_name("dashboard.html")


async def get_cases(request: Request) -> CaseStore:
    """The case store of this app."""
    store: CaseStore = request.app.state.cases
    return store


Caller = Annotated[Principal, Depends(current_principal)]
Cases = Annotated[CaseStore, Depends(get_cases)]
router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)


class CaseView(BaseModel):
    """A discrepancy case."""

    id: str
    rule: str
    cpc_uid: str
    ircc_uid: str | None
    provider_country: str | None
    user_country: str
    evidence: dict[str, Any]
    status: str
    history: list[dict[str, Any]]
    flagged_at: UtcDateTime
    updated_at: UtcDateTime


class CasePage(BaseModel):
    """One page of cases."""

    total: int
    items: list[CaseView]


class ActionBody(RequestBody):
    """A note on a case action (required to resolve)."""

    note: str | None = Field(default=None, max_length=4000)


def _view(case: CaseRow) -> CaseView:
    return CaseView(
        id=case.id,
        rule=case.rule,
        cpc_uid=case.cpc_uid,
        ircc_uid=case.ircc_uid,
        provider_country=case.provider_country,
        user_country=case.user_country,
        evidence=case.evidence,
        status=case.status,
        history=case.history,
        flagged_at=case.flagged_at,
        updated_at=case.updated_at,
    )


@router.get("/discrepancies", response_model=CasePage, tags=["cases"])
async def list_cases(
    caller: Caller,
    cases: Cases,
    provider: str | None = Query(default=None, pattern=r"^[A-Za-z]{2}$"),
    user: str | None = Query(default=None, pattern=r"^[A-Za-z]{2}$"),
    status: Literal["open", "acknowledged", "resolved", "cleared"] | None = None,
    rule: str | None = Query(default=None, max_length=32),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
) -> CasePage:
    """Cases of the caller's country as provider (all for the Secretariat)."""
    total, rows = await cases.list(
        caller, provider=provider, user=user, status=status, rule=rule, limit=limit, offset=offset
    )
    return CasePage(total=total, items=[_view(r) for r in rows])


@router.get("/discrepancies/{case_id}", response_model=CaseView, tags=["cases"])
async def get_case(case_id: str, caller: Caller, cases: Cases) -> CaseView:
    """One case."""
    return _view(await cases.get(caller, case_id))


@router.post("/discrepancies/{case_id}/{action}", response_model=CaseView, tags=["cases"])
async def act(
    case_id: str,
    action: Literal["acknowledge", "resolve", "reopen"],
    caller: Caller,
    cases: Cases,
    body: ActionBody | None = None,
) -> CaseView:
    """Acknowledge, resolve (note required) or reopen a case of your country."""
    return _view(await cases.act(caller, case_id, action, body.note if body else None))


# Who reads the dashboard: its numbers span every government (cases by provider country,
# event rates, lag, failed deliveries), so the Secretariat and dashboard operators only.
OPERATORS = frozenset({Role.ADMIN, Role.OPERATOR})


async def operator(caller: Caller) -> Principal:
    """FastAPI dependency: the caller, if an operator or the Secretariat (403 otherwise)."""
    if caller.role not in OPERATORS:
        raise forbidden("the dashboard is for operators")
    return caller


@router.get("/dashboard/summary", tags=["dashboard"])
async def summary(
    request: Request, cases: Cases, _: Annotated[Principal, Depends(operator)]
) -> dict[str, Any]:
    """Numbers behind the dashboard: counts by rule and country, event totals, lag
    (operators and the Secretariat)."""
    out = await cases.summary()
    out.update(request.app.state.live_numbers())
    return out


dashboard_router = APIRouter()


@dashboard_router.get("/dashboard", response_class=HTMLResponse, tags=["dashboard"])
async def dashboard() -> HTMLResponse:
    """Operator page (self-contained: no external assets). The page itself holds no data,
    so it is served to anyone (a browser can't send a bearer token when navigating); its
    script asks for the operator's token and sends it with every data call."""
    return HTMLResponse(DASHBOARD.read_text(encoding="utf-8"))


def install_error_mapping(app: FastAPI) -> None:
    """Map case errors to problem+json."""

    async def answer(request: Request, status: int, title: str, exc: Exception) -> JSONResponse:
        return problem_response(Problem(title=title, status=status, detail=str(exc)), request)

    @app.exception_handler(CaseNotFound)
    async def _nf(request: Request, exc: CaseNotFound) -> JSONResponse:
        return await answer(request, 404, "Not Found", exc)

    @app.exception_handler(CaseForbidden)
    async def _fb(request: Request, exc: CaseForbidden) -> JSONResponse:
        return await answer(request, 403, "Forbidden", exc)

    @app.exception_handler(CaseConflict)
    async def _cf(request: Request, exc: CaseConflict) -> JSONResponse:
        return await answer(request, 409, "Conflict", exc)
