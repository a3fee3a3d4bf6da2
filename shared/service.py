"""Building a service's FastAPI app the same way everywhere."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI, Request, Response

from shared.http import ReadinessCheck, RejectNul, install_health, install_problem_handlers
from shared.logging import correlation_id
from shared.metrics import PlumbingMetrics, install_metrics

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
CORRELATION_HEADER = "X-Correlation-ID"


def create_app(
    *,
    title: str,
    description: str,
    lifespan: Lifespan,
    metrics: PlumbingMetrics,
    readiness: ReadinessCheck,
) -> FastAPI:
    """A FastAPI app with problem+json errors, health, metrics and correlation ids."""
    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan)
    install_problem_handlers(app)
    app.add_middleware(RejectNul)
    install_health(app, readiness)
    install_metrics(app, metrics)

    @app.middleware("http")
    async def correlate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        value = request.headers.get(CORRELATION_HEADER) or str(uuid.uuid4())
        token = correlation_id.set(value[:128])
        try:
            response = await call_next(request)
        finally:
            correlation_id.reset(token)
        response.headers[CORRELATION_HEADER] = value[:128]
        return response

    return app


async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Placeholder lifespan for apps whose resources are managed by the caller."""
    yield
