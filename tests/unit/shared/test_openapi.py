"""The OpenAPI document states what the shared plumbing answers and refuses; 405s say
which methods the resource has."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from pydantic import Field

from shared.http import PROBLEM_JSON, PROBLEM_RESPONSES, install_problem_handlers
from shared.openapi import (
    NO_NUL_PATTERN,
    TEXT_PATTERN,
    RequestBody,
    install_openapi,
)


class Note(RequestBody):
    text: str = Field(max_length=10)
    code: str = Field(pattern=r"^[a-z]+$")


def app() -> FastAPI:
    service = FastAPI()
    install_problem_handlers(service)
    install_openapi(service)
    router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)

    @router.get("/notes")
    async def notes(q: str | None = None) -> list[str]:
        return []

    @router.post("/notes", status_code=201)
    async def add(note: Note) -> dict[str, str]:
        return {"text": note.text}

    @service.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    service.include_router(router)
    return service


def test_problems_are_documented_as_problem_json_everywhere() -> None:
    doc = app().openapi()
    for path, item in doc["paths"].items():
        for operation in item.values():
            responses: dict[str, Any] = operation["responses"]
            assert {"413", "422"} <= set(responses), path
            assert ("503" in responses) is path.startswith("/v1/"), path
            for status, answer in responses.items():
                if status.startswith("4"):
                    assert answer["content"] == {
                        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }, (path, status)


def test_request_text_states_what_the_input_check_refuses() -> None:
    doc = app().openapi()
    note = doc["components"]["schemas"]["Note"]
    assert note["additionalProperties"] is False
    assert note["properties"]["text"]["pattern"] == TEXT_PATTERN
    assert note["properties"]["code"]["pattern"] == "^[a-z]+$"  # its own, stricter
    (query,) = doc["paths"]["/v1/notes"]["get"]["parameters"]
    assert query["schema"]["anyOf"][0]["pattern"] == NO_NUL_PATTERN
    assert re.fullmatch(TEXT_PATTERN, "two\nlines\tand tabs")
    assert not re.fullmatch(TEXT_PATTERN, "bell\x07")


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://t")


async def test_an_unknown_field_is_refused_naming_it() -> None:
    async with client() as http:
        resp = await http.post("/v1/notes", json={"text": "a", "code": "b", "extra": 1})
    assert resp.status_code == 422
    assert [e["field"] for e in resp.json()["errors"]] == ["extra"]


async def test_a_405_lists_the_methods_of_every_route_at_the_path() -> None:
    """Starlette's own 405 names the first matching route's methods only (``GET``)."""
    async with client() as http:
        for method in ("DELETE", "OPTIONS", "PUT"):
            resp = await http.request(method, "/v1/notes")
            assert resp.status_code == 405
            assert resp.headers["content-type"] == PROBLEM_JSON
            assert resp.headers["allow"] == "GET, POST"
        assert (await http.post("/healthz")).headers["allow"] == "GET"
