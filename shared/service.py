"""Building a service's FastAPI app the same way everywhere."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI

from shared.http import (
    DEFAULT_MAX_BODY_BYTES,
    LimitBody,
    ReadinessCheck,
    install_health,
    install_problem_handlers,
)
from shared.hygiene import CheckInput
from shared.logging import correlation_id
from shared.metrics import PlumbingMetrics, install_metrics
from shared.openapi import install_openapi

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
CORRELATION_HEADER = "X-Correlation-ID"


def create_app(
    *,
    title: str,
    description: str,
    lifespan: Lifespan,
    metrics: PlumbingMetrics,
    readiness: ReadinessCheck,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    readiness_details: Callable[[], dict[str, str]] | None = None,
    schema_revision: Callable[[], str | None] | None = None,
) -> FastAPI:
    """A FastAPI app with problem+json errors, health (``/healthz`` carries the release and
    ``schema_revision()``), metrics, correlation ids and a request body limit (413 over
    ``max_body_bytes``)."""
    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan)
    install_problem_handlers(app)
    install_openapi(app)
    app.add_middleware(CheckInput)
    install_health(app, readiness, readiness_details, schema_revision)
    # The last added runs first: Correlate, CountRequests, LimitBody, CheckInput, routes.
    # The limit sits just inside correlation ids and request counting (neither reads the
    # body), so a 413 is correlated and counted, and comes before anything that reads
    # the body or authenticates.
    app.add_middleware(LimitBody, max_body_bytes=max_body_bytes)
    install_metrics(app, metrics)
    app.add_middleware(Correlate)
    return app


class Correlate:
    """ASGI middleware: carry ``X-Correlation-ID`` (or a new one) through logs and events."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(CORRELATION_HEADER.lower().encode())
        value = (incoming.decode("latin-1") if incoming else str(uuid.uuid4()))[:128]

        async def send_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h
                    for h in message.get("headers", [])
                    if h[0].lower() != CORRELATION_HEADER.lower().encode()
                ]
                headers.append((CORRELATION_HEADER.lower().encode(), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        token = correlation_id.set(value)
        try:
            await self.app(scope, receive, send_header)
        finally:
            correlation_id.reset(token)


async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Placeholder lifespan for apps whose resources are managed by the caller."""
    yield
