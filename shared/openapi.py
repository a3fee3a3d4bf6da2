"""The OpenAPI document of every service states what the shared plumbing does.

FastAPI documents what a route declares. The plumbing around the routes answers too, and
refuses more than the route's models say; :func:`install_openapi` adds that to the
document, so a client (or schemathesis, ``--checks all``) can rely on it:

- every problem answer is ``application/problem+json`` with the ``Problem`` schema (not
  ``application/json`` with an empty problem+json beside it);
- every operation may answer 413 (body over the limit, ``LimitBody``) and 422 (NUL in
  the path or query, bad text in a body, ``CheckInput``); every ``/v1`` operation may
  answer 503 (a database or the broker away, with ``Retry-After``);
- every string of a request body refuses control characters other than tab, CR and LF
  (``CheckInput``), and every string parameter refuses NUL: a ``pattern`` says so where
  the field states none of its own (a pattern, format, enum or const is stricter already).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from shared.http import PROBLEM_JSON, Problem

# JSON Schema patterns (ECMA-262: ``$`` is the end of the text) for what
# ``shared.hygiene.CheckInput`` and the one-line fields refuse.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
ONE_LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"
# A text with something in it besides white space (and, like TEXT_PATTERN, no control
# characters but tab, CR and LF).
NON_BLANK_TEXT_PATTERN = (
    r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*"
    r"[^\s\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
    r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
)
# Problems any operation may answer whatever its handler does, and why.
PLUMBING_PROBLEMS = {
    "413": "Content Too Large: the request body exceeds the service's limit",
    "422": "Unprocessable Content: a request field (or a NUL in the path or query) is refused",
}
UNAVAILABLE = "Service Unavailable: a database or the broker can't be reached (Retry-After)"
PROBLEM_REF = "#/components/schemas/Problem"
_STRICT_KEYS = ("pattern", "format", "enum", "const", "contentEncoding")


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if method in methods:
                yield path, operation


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        found: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return found
    return schema


def _walk(
    doc: dict[str, Any],
    schema: Any,
    visit: Callable[[dict[str, Any]], None],
    seen: set[int],
) -> None:
    """Call ``visit`` on ``schema`` and every schema inside it (``$ref`` followed once), but
    not inside ``not`` or ``if``: a constraint added there would widen what is accepted."""
    if not isinstance(schema, dict):
        return
    schema = _resolve(doc, schema)
    if id(schema) in seen:
        return
    seen.add(id(schema))
    visit(schema)
    for key in ("properties", "patternProperties", "$defs"):
        for child in (schema.get(key) or {}).values():
            _walk(doc, child, visit, seen)
    for key in ("items", "additionalProperties", "propertyNames", "then", "else"):
        _walk(doc, schema.get(key), visit, seen)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for child in schema.get(key) or []:
            _walk(doc, child, visit, seen)


def _is_string(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


def _refuse(pattern: str) -> Callable[[dict[str, Any]], None]:
    """A visitor that states ``pattern`` on strings (and keys) that state nothing stricter."""

    def visit(schema: dict[str, Any]) -> None:
        if _is_string(schema) and not any(k in schema for k in _STRICT_KEYS):
            schema["pattern"] = pattern
        open_object = (
            schema.get("type") == "object" and schema.get("additionalProperties") is not False
        )
        if open_object and "propertyNames" not in schema:
            schema["propertyNames"] = {"pattern": pattern}

    return visit


def state_plumbing(doc: dict[str, Any]) -> dict[str, Any]:
    """Add what the shared plumbing answers and refuses to an OpenAPI document (in place)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in schemas:
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem.pop("$defs", {}))
        schemas["Problem"] = problem
    body_seen: set[int] = set()
    parameter_seen: set[int] = set()
    for path, operation in _operations(doc):
        responses = operation.setdefault("responses", {})
        for answer in responses.values():
            if PROBLEM_JSON in answer.get("content", {}):
                answer["content"] = _problem_content()
        for status, description in PLUMBING_PROBLEMS.items():
            responses.setdefault(status, {"description": description})
            responses[status]["content"] = _problem_content()
        if path.startswith("/v1/") and "503" not in responses:
            responses["503"] = {"description": UNAVAILABLE, "content": _problem_content()}
        for parameter in operation.get("parameters", []):
            _walk(doc, parameter.get("schema"), _refuse(NO_NUL_PATTERN), parameter_seen)
        for media in operation.get("requestBody", {}).get("content", {}).values():
            _walk(doc, media.get("schema"), _refuse(TEXT_PATTERN), body_seen)
    return doc


def install_openapi(app: FastAPI) -> None:
    """Publish ``app``'s OpenAPI document with :func:`state_plumbing` applied."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = state_plumbing(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class RequestBody(BaseModel):
    """Base of request bodies: an unknown field is a 422 naming it, as the document says
    (``additionalProperties: false``). A body that kept unknown fields could not state
    what it accepts: ``CheckInput`` still refuses bad text inside them."""

    model_config = ConfigDict(extra="forbid")
