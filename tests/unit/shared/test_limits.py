"""Request body limit: 413 before the body is read whole, before routing and authentication."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Body, Depends, FastAPI, Request
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from shared.auth import Principal, TokenVerifier, current_principal
from shared.http import DEFAULT_MAX_BODY_BYTES, PROBLEM_JSON, LimitBody
from shared.metrics import PlumbingMetrics
from shared.service import CORRELATION_HEADER, create_app
from shared.settings import ServiceSettings

LIMIT = 4096
CHUNK = 1024
ADMIN = "unit-admin-token-0123456789"


class Received:
    """What the inner app of a bare ``LimitBody`` was given."""

    def __init__(self) -> None:
        self.called = False
        self.messages: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class Client:
    """A scripted ASGI peer: hands out body chunks, counts the ones taken, keeps replies."""

    def __init__(self, chunks: int, *, declared: int | None = None, chunked: bool = False) -> None:
        self.total = chunks
        self.taken = 0
        self.sent: list[Message] = []
        headers = [(b"content-type", b"application/json")]
        if declared is not None:
            headers.append((b"content-length", str(declared).encode()))
        if chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        self.scope: Scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers}

    async def receive(self) -> Message:
        if self.taken >= self.total:
            return {"type": "http.disconnect"}
        self.taken += 1
        more = self.taken < self.total
        return {"type": "http.request", "body": b"a" * CHUNK, "more_body": more}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


async def test_declared_length_over_the_limit_is_refused_without_reading() -> None:
    inner, client = Received(), Client(100, declared=100 * CHUNK)
    await LimitBody(inner, max_body_bytes=LIMIT)(client.scope, client.receive, client.send)
    assert client.status == 413
    assert client.taken == 0
    assert not inner.called
    problem = client.json()
    assert problem["title"] == "Content Too Large"
    assert problem["errors"] == [{"field": "<body>", "message": f"must be at most {LIMIT} bytes"}]
    assert str(LIMIT) in problem["detail"]


async def test_streamed_body_stops_being_read_once_over_the_limit() -> None:
    inner, client = Received(), Client(1000, chunked=True)
    await LimitBody(inner, max_body_bytes=LIMIT)(client.scope, client.receive, client.send)
    assert client.status == 413
    # The chunk that passes the limit is the last one taken; the app never runs.
    assert client.taken == LIMIT // CHUNK + 1
    assert not inner.called


async def test_a_lying_content_length_is_still_counted() -> None:
    inner, client = Received(), Client(1000, declared=10)
    await LimitBody(inner, max_body_bytes=LIMIT)(client.scope, client.receive, client.send)
    assert client.status == 413
    assert client.taken == LIMIT // CHUNK + 1
    assert not inner.called


async def test_a_body_at_the_limit_reaches_the_app_unchanged() -> None:
    inner, client = Received(), Client(LIMIT // CHUNK, chunked=True)
    await LimitBody(inner, max_body_bytes=LIMIT)(client.scope, client.receive, client.send)
    assert client.status == 204
    assert b"".join(m["body"] for m in inner.messages) == b"a" * LIMIT
    assert inner.messages[-1]["more_body"] is False


async def test_other_scopes_pass_untouched() -> None:
    seen: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    client = Client(0)
    scope: Scope = {"type": "lifespan"}
    await LimitBody(inner, max_body_bytes=LIMIT)(scope, client.receive, client.send)
    assert seen == [scope]


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LimitBody(Received(), max_body_bytes=0)


# --- the middleware as installed by create_app ---------------------------------------


def build_app(max_body_bytes: int | None = None) -> tuple[FastAPI, PlumbingMetrics]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    async def readiness() -> dict[str, bool]:
        return {"ok": True}

    async def no_key(kid: str) -> None:
        return None

    metrics = PlumbingMetrics(CollectorRegistry(), "unit")
    app = create_app(
        title="unit",
        description="",
        lifespan=lifespan,
        metrics=metrics,
        readiness=readiness,
        max_body_bytes=DEFAULT_MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes,
    )
    app.state.verifier = TokenVerifier(no_key, admin_token=ADMIN)

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @app.post("/secured")
    async def secured(
        body: Annotated[dict[str, Any], Body()],
        caller: Annotated[Principal, Depends(current_principal)],
    ) -> dict[str, Any]:
        return {"keys": sorted(body), "caller": caller.id}

    return app, metrics


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        yield client


class Chunks:
    """A streamed (chunked, no Content-Length) request body that counts what was pulled."""

    def __init__(self, count: int, size: int = 64 * 1024) -> None:
        self.count, self.size, self.pulled = count, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.pulled += 1
            yield b" " * self.size


def assert_too_large(resp: httpx.Response, limit: int) -> None:
    assert resp.status_code == 413, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    assert resp.headers[CORRELATION_HEADER]
    problem = resp.json()
    assert problem["status"] == 413
    assert problem["title"] == "Content Too Large"
    assert str(limit) in problem["detail"]
    assert [e["field"] for e in problem["errors"]] == ["<body>"]


async def test_the_default_limit_is_one_mebibyte() -> None:
    app, _ = build_app()
    async with client_of(app) as client:
        at_limit = await client.post("/raw", content=b"x" * DEFAULT_MAX_BODY_BYTES)
        assert at_limit.status_code == 200, at_limit.text
        assert at_limit.json() == {"length": DEFAULT_MAX_BODY_BYTES}
        over = await client.post("/raw", content=b"x" * (DEFAULT_MAX_BODY_BYTES + 1))
        assert_too_large(over, DEFAULT_MAX_BODY_BYTES)


async def test_normal_bodies_pass() -> None:
    app, _ = build_app(LIMIT)
    async with client_of(app) as client:
        resp = await client.post("/secured", json={"a": 1, "b": "x" * 100}, headers=_admin())
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"keys": ["a", "b"], "caller": "admin-bootstrap"}
        streamed = await client.post("/raw", content=Chunks(3, size=1000))
        assert streamed.json() == {"length": 3000}


async def test_a_streamed_body_over_the_limit_is_413_and_not_read_to_the_end() -> None:
    app, _ = build_app(LIMIT)
    body = Chunks(200, size=CHUNK)
    async with client_of(app) as client:
        resp = await client.post("/raw", content=body)
    assert_too_large(resp, LIMIT)
    assert body.pulled <= LIMIT // CHUNK + 1


async def test_413_comes_before_401_on_a_route_needing_a_token() -> None:
    app, _ = build_app(LIMIT)
    big = json.dumps({"title": "x" * (2 * LIMIT)}).encode()
    async with client_of(app) as client:
        small = await client.post("/secured", json={"title": "x"})
        assert small.status_code == 401, small.text
        declared = await client.post(
            "/secured", content=big, headers={"content-type": "application/json"}
        )
        assert_too_large(declared, LIMIT)
        streamed = await client.post("/secured", content=Chunks(100, size=CHUNK))
        assert_too_large(streamed, LIMIT)


async def test_refusals_are_counted() -> None:
    app, metrics = build_app(LIMIT)
    async with client_of(app) as client:
        await client.post("/raw", content=b"x" * (LIMIT + 1))
    labels = {"service": "unit", "method": "POST", "route": "<unmatched>", "status": "413"}
    assert metrics.registry.get_sample_value("absch_http_requests_total", labels) == 1


# --- the setting ---------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("HTTP_MAX_BODY_BYTES", raising=False)
    return monkeypatch


def test_setting_defaults_to_the_middleware_default(clean_env: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().http_max_body_bytes == DEFAULT_MAX_BODY_BYTES


def test_setting_comes_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTP_MAX_BODY_BYTES", "2048")
    assert ServiceSettings().http_max_body_bytes == 2048
    clean_env.setenv("HTTP_MAX_BODY_BYTES", "1023")
    with pytest.raises(ValidationError, match="HTTP_MAX_BODY_BYTES"):
        ServiceSettings()


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}
