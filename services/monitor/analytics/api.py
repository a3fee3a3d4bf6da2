"""``GET /v1/utilization``: utilization of provider countries' IRCCs, month by month."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from services.monitor.analytics.readmodel import UtilizationView
from shared.auth import Principal, Role, current_principal, forbidden
from shared.http import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)
Caller = Annotated[Principal, Depends(current_principal)]
# Provider-country authorities read their own country; the Secretariat and operators all.
AUTHORITIES = frozenset({Role.NFP, Role.PA, Role.NAU, Role.CNA})
EVERYWHERE = frozenset({Role.ADMIN, Role.OPERATOR})
MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"
COUNTRY = r"^[A-Za-z]{2}$"


class UtilizationRow(BaseModel):
    """Citations of one IRCC by one user country in one calendar month (UTC)."""

    provider: str
    month: str
    user: str
    ircc: str
    citations: int


class ViewState(BaseModel):
    """Where the rows come from: ``following`` the analytics changelog, ``waiting`` for it
    to exist (no analytics worker has run), ``starting`` or ``failing`` (``error`` says
    why); only ``following`` rows are the analytics' counts."""

    state: Literal["starting", "waiting", "following", "failing"]
    messages: int = Field(description="changelog messages read since the view (re)started")
    error: str | None = None


class UtilizationPage(BaseModel):
    """Every row matching the filters, their total, and the state of the view."""

    total: int
    items: list[UtilizationRow]
    view: ViewState


async def get_view(request: Request) -> UtilizationView:
    """The app's utilization view."""
    view: UtilizationView = request.app.state.utilization
    return view


@router.get("/utilization", response_model=UtilizationPage, tags=["utilization"])
async def utilization(
    caller: Caller,
    view: Annotated[UtilizationView, Depends(get_view)],
    provider: str | None = Query(default=None, pattern=COUNTRY),
    user: str | None = Query(default=None, pattern=COUNTRY),
    ircc: str | None = Query(default=None, min_length=1, max_length=128),
    start: str | None = Query(default=None, alias="from", pattern=MONTH),
    end: str | None = Query(default=None, alias="to", pattern=MONTH),
) -> UtilizationPage:
    """CPC citations per provider country, user country, IRCC and month, from the
    analytics tables. Authorities of a provider country see their country only."""
    wanted = provider.lower() if provider else None
    if caller.role in AUTHORITIES and caller.government:
        if wanted and wanted != caller.government:
            raise forbidden("authorities read their own country's utilization")
        wanted = caller.government
    elif caller.role not in EVERYWHERE:
        raise forbidden("for provider-country authorities and operators")
    rows = view.rows(
        provider=wanted, user=user.lower() if user else None, ircc=ircc, start=start, end=end
    )
    items = [UtilizationRow(**asdict(r)) for r in rows]
    state = ViewState(state=view.state, messages=view.applied, error=view.last_error)
    return UtilizationPage(total=sum(r.citations for r in rows), items=items, view=state)
