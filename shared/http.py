"""HTTP conventions shared by every service: problem+json errors and health endpoints."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.kit.failures import is_transient
from shared.version import VERSION

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
# 1 MiB, Kafka's default message size: a bigger body could never travel as an event.
DEFAULT_MAX_BODY_BYTES = 1_048_576
BODY_FIELD = "<body>"

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


class FieldProblem(BaseModel):
    """One failing field of a request."""

    field: str
    message: str


class ValidationIssue(BaseModel):
    """One entry of a record validation report, as the clearing-house writes it: an ABSCH
    code (``Error.Mandatory``, ``Error.InvalidValue``, ...) and the property's path."""

    code: str
    property: str


class Problem(BaseModel):
    """RFC 9457 problem details; ``errors`` names each failing field. A refused record also
    carries ``validation``: the same failures as ABSCH ``{code, property}`` entries."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = None
    validation: list[ValidationIssue] | None = None


class ProblemError(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        errors: list[FieldProblem] | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.problem = Problem(type=type_, title=title, status=status, detail=detail, errors=errors)
        self.headers = headers or {}


def problem_response(
    problem: Problem, request: Request | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Serialise a problem with the right media type."""
    if request is not None and problem.instance is None:
        problem = problem.model_copy(update={"instance": request.url.path})
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``('body', 'absIRCCs', 0, 'identifier')`` -> ``absIRCCs.0.identifier``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"} and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts)


def validation_problem(errors: list[dict[str, Any]], detail: str | None = None) -> Problem:
    """A 422 problem listing pydantic-style errors by field."""
    items = [
        FieldProblem(field=field_path(e.get("loc", ())) or "<body>", message=e["msg"])
        for e in errors
    ]
    return Problem(
        title="Unprocessable Content",
        status=422,
        detail=detail or "; ".join(f"{i.field}: {i.message}" for i in items),
        errors=items,
    )


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}}
    for code in (400, 401, 403, 404, 409, 422)
}


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error as problem+json."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(list(exc.errors())), request)

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.problem, request, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {
            404: "Not Found",
            405: "Method Not Allowed",
            401: "Unauthorized",
            403: "Forbidden",
        }.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        # The exception's headers are part of the answer: a 405 lists ``Allow`` (RFC 9110).
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path only; the
            # resource supports every method some route (included routers too) serves there.
            allowed = [
                method
                for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
                if any(
                    route.matches({**request.scope, "method": method})[0] is Match.FULL
                    for route in request.app.router.routes
                )
            ]
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        return problem_response(
            Problem(title=title, status=exc.status_code, detail=detail), request, headers
        )

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Caught here, not by the catch-all, so no traceback per request while a database
        # or broker is away: one line each, and a 503 the client may retry.
        if not is_transient(exc):
            log.error("unexpected error on %s", request.url.path, exc_info=exc)
            problem = Problem(title="Internal Server Error", status=500, detail="unexpected error")
            return problem_response(problem, request)
        log.warning("%s %s: dependency unavailable: %s", request.method, request.url.path, exc)
        problem = Problem(
            title="Service Unavailable",
            status=503,
            detail="a database or the broker can't be reached right now; try again shortly",
        )
        return problem_response(problem, request, {"Retry-After": "5"})

    for transient in (SQLAlchemyError, ConnectionError, TimeoutError):
        app.add_exception_handler(transient, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            Problem(title="Internal Server Error", status=500, detail="unexpected error"), request
        )


class Health(BaseModel):
    """Health answer."""

    status: str
    checks: dict[str, bool] = {}
    details: dict[str, str] = {}


class Liveness(BaseModel):
    """``/healthz``: alive, which release, on which schema revision of its database."""

    status: str
    version: str
    schema_revision: str | None = None  # None until the start checked the database


def install_health(
    app: FastAPI,
    readiness: ReadinessCheck,
    details: Callable[[], dict[str, str]] | None = None,
    schema_revision: Callable[[], str | None] | None = None,
) -> None:
    """``/healthz`` (process alive, release and schema revision) and ``/readyz``
    (dependencies reachable)."""

    @app.get("/healthz", tags=["health"], response_model=Liveness)
    async def healthz() -> Liveness:
        """The process is alive; the release it runs and its database's schema revision."""
        revision = schema_revision() if schema_revision is not None else None
        return Liveness(status="ok", version=VERSION, schema_revision=revision)

    @app.get("/readyz", tags=["health"], response_model=Health, responses={503: {"model": Health}})
    async def readyz() -> JSONResponse:
        """Every check passes: database, broker, consumers polling, outbox not ageing (503
        names the failing checks, with a detail line for each)."""
        checks = await readiness()
        ok = all(checks.values())
        body = Health(
            status="ok" if ok else "unavailable",
            checks=checks,
            details=details() if details is not None else {},
        )
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def too_large_problem(limit: int, path: str | None = None) -> Problem:
    """The 413 answer for a body over ``limit`` bytes."""
    message = f"must be at most {limit} bytes"
    return Problem(
        title="Content Too Large",
        status=413,
        detail=f"request body exceeds the limit of {limit} bytes",
        instance=path,
        errors=[FieldProblem(field=BODY_FIELD, message=message)],
    )


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``; None when absent, unreadable or with chunking."""
    lengths: list[int] = []
    for name, value in scope.get("headers") or []:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            return None  # the framing overrides any Content-Length (RFC 9112 6.3)
        if lowered == b"content-length":
            text = value.strip()
            if not text.isdigit():
                return None
            lengths.append(int(text))
    return max(lengths) if lengths else None


class LimitBody:
    """ASGI middleware: a request body over ``max_body_bytes`` is a 413 problem.

    A declared ``Content-Length`` over the limit is refused before a byte is read. Any
    other body is read here, counting bytes, and refused as soon as it passes the limit,
    so nothing behind this middleware (routing, authentication, the handler) runs for it
    and at most ``max_body_bytes`` are ever held. The server discards the unread rest.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return
        # Read even a declared body here: the count must not depend on the server
        # enforcing Content-Length, and the app sees only what passed.
        messages: deque[Message] = deque()
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_body_bytes:
                    await self._refuse(scope, receive, send)
                    return
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.popleft() if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = too_large_problem(self.max_body_bytes, scope.get("path"))
        await problem_response(problem)(scope, receive, send)
