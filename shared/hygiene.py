"""Input every route refuses before its handler runs: text no store or serialiser can hold.

- NUL anywhere (PostgreSQL text cannot hold it);
- lone UTF-16 surrogates (``"\\ud800"``: valid JSON, but not encodable as UTF-8, so hashing,
  storing or re-serialising the value fails);
- control characters other than tab, CR and LF in any JSON string or key;
- JSON nested deeper than ``MAX_JSON_DEPTH`` (the serialisers give up at a few hundred
  levels; no record of the clearing-house nests more than a handful).

Each is a 422 problem naming the field (a dotted path into the body). JSON bodies are
parsed here once to walk them; the body limit runs before, so at most that many bytes are
parsed. A body that is not JSON is left to the route (which refuses it as it would), and so
is the body of a method no route serves at the path: that is a 405 whatever it holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http import BODY_FIELD, problem_response, validation_problem

# Records nest about six levels (record, lstring, list, term, customValue, language);
# extra fields kept as they come get some room on top.
MAX_JSON_DEPTH = 32
# Tab, LF and CR are kept for multi-line fields (one-line fields refuse them by type).
_BAD_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_JSON_TYPES = ("application/json", "application/problem+json")


def describe(char: str) -> str:
    """How a refused character is named in a problem."""
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate U+{code:04X} (invalid Unicode)"
    if code == 0:
        return "a NUL character"
    return f"a control character U+{code:04X}"


def _field(path: list[str | int]) -> str:
    return ".".join(str(p) for p in path) or BODY_FIELD


def body_problems(value: Any, max_depth: int = MAX_JSON_DEPTH) -> Iterator[tuple[str, str]]:
    """``(field, message)`` for each refused string, key or nesting level of a parsed body."""
    # An explicit stack: the walk itself must not recurse on hostile depth.
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if len(path) > max_depth:
            yield _field(path), f"nests deeper than {max_depth} levels"
            continue
        if isinstance(item, str):
            found = _BAD_CHAR.search(item)
            if found:
                yield _field(path), f"must not contain {describe(found.group())}"
        elif isinstance(item, dict):
            for key, child in item.items():
                found = _BAD_CHAR.search(key)
                if found:
                    shown = key.encode("utf-8", "backslashreplace").decode()[:40]
                    yield _field(path), f"key {shown!r} must not contain {describe(found.group())}"
                    continue
                stack.append((child, [*path, key]))
        elif isinstance(item, list):
            stack.extend((child, [*path, index]) for index, child in enumerate(item))


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-type":
            media = value.split(b";")[0].strip().lower().decode("latin-1")
            return media in _JSON_TYPES or media.endswith("+json")
    return True  # FastAPI reads a body without a content type as JSON


def inspect_body(body: bytes, as_json: bool) -> list[dict[str, Any]]:
    """Pydantic-style errors for a request body (empty when it may pass)."""
    if as_json and body.strip():
        try:
            parsed = json.loads(body)
        except RecursionError:
            return [{"loc": (BODY_FIELD,), "msg": f"nests deeper than {MAX_JSON_DEPTH} levels"}]
        except ValueError:
            parsed = None  # not JSON: the route answers as it would
        else:
            found = list(body_problems(parsed))
            return [{"loc": (field,), "msg": message} for field, message in found[:20]]
    if b"\x00" in body:
        return [{"loc": (BODY_FIELD,), "msg": "must not contain a NUL character"}]
    return []


def method_not_served(scope: Scope) -> bool:
    """True when some route serves the path but none with this method: the router answers
    405 (with ``Allow``) and never reads the body."""
    routes = getattr(getattr(scope.get("app"), "router", None), "routes", None) or []
    found = {route.matches(scope)[0] for route in routes}
    return Match.FULL not in found and Match.PARTIAL in found


class CheckInput:
    """ASGI middleware: refuse NUL in the path or query, and bad text or depth in the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors: list[dict[str, Any]] = []
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", ""):
            errors = [{"loc": ("<path>",), "msg": "must not contain a NUL character"}]
        elif b"%00" in query or b"\x00" in query:
            errors = [{"loc": ("<query>",), "msg": "must not contain a NUL character"}]
        messages: list[Message] = []
        if not errors and not method_not_served(scope):
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
            body = b"".join(m.get("body", b"") for m in messages)
            errors = inspect_body(body, _is_json(scope))
        if errors:
            await problem_response(validation_problem(errors))(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
