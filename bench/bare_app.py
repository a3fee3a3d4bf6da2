"""Reference servers for the intake benchmark, served exactly like a service.

``python -m bench.bare_app --port P [--plumbing]`` serves ``POST /v1/communiques``: a handler
that takes the JSON body as a dict and answers 201 ``{"uid": ..., "warnings": []}``. Plain
FastAPI by default; with ``--plumbing`` the app is built by ``shared.service.create_app``
(problem handlers, health, the request-counting middleware, correlation-id
middleware) so the cost of the shared plumbing shows separately. Either way it runs through
``shared.runner.serve``: the same uvicorn settings and process model as the services.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from shared.metrics import PlumbingMetrics
from shared.runner import serve
from shared.service import create_app
from shared.settings import ServiceSettings


class BareSettings(ServiceSettings):
    service: str = "bare"


def build(plumbing: bool) -> FastAPI:
    counter = itertools.count(1)

    if plumbing:

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            yield

        async def readiness() -> dict[str, bool]:
            return {"ok": True}

        app = create_app(
            title="bare+plumbing",
            description="",
            lifespan=lifespan,
            metrics=PlumbingMetrics(CollectorRegistry(), "bare"),
            readiness=readiness,
        )
    else:
        app = FastAPI(title="bare")

        @app.get("/readyz")
        async def ready() -> dict[str, str]:
            return {"status": "ok"}

    @app.post("/v1/communiques", status_code=201)
    async def submit(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        uid = f"ABSCH-CPC-DE-{next(counter)}-1"
        return JSONResponse({"uid": uid, "warnings": []}, status_code=201)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plumbing", action="store_true")
    args = parser.parse_args(argv)
    settings = BareSettings(http_port=args.port)
    serve(lambda: build(args.plumbing), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
