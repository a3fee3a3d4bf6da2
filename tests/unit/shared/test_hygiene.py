"""Text no store or serialiser can hold is a 422 naming the field, before any route runs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.hygiene import MAX_JSON_DEPTH, body_problems, inspect_body
from tests.unit.shared.test_limits import LIMIT, build_app, client_of


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = {"x": [value]}
    return value


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (rb'{"title": {"en": "a\ud800b"}}', "title.en", "lone surrogate U+D800"),
        (rb'{"contacts": [{"org": "\udfff"}]}', "contacts.0.org", "lone surrogate U+DFFF"),
        (rb'{"a": "\u0000"}', "a", "NUL"),
        (rb'{"a": "\\\u0000"}', "a", "NUL"),
        (rb'{"a": "bell\u0007"}', "a", "U+0007"),
        (rb'{"a": "c1\u0085"}', "a", "U+0085"),
        (rb'{"extra": {"k\u0001": 1}}', "extra", "key"),
        (b'{"a": "\x00"}', "<body>", "NUL"),
    ],
)
async def test_bad_text_is_422_naming_the_field(body: bytes, field: str, words: str) -> None:
    app, _ = build_app(LIMIT)
    async with client_of(app) as client:
        resp = await client.post("/raw", content=body)
    assert resp.status_code == 422, resp.text
    (error,) = resp.json()["errors"]
    assert error["field"] == field
    assert words in error["message"]


async def test_text_that_only_looks_bad_passes() -> None:
    app, _ = build_app(LIMIT)
    fine = [
        rb'{"a": "C:\\u0000dir"}',  # an escaped backslash, then text
        rb'{"a": "line\nnext\ttab\r\n"}',  # multi-line text keeps its breaks
        rb'{"a": "\ud83d\ude00 pair"}',  # a surrogate pair is one character
        b"not json at all",
    ]
    async with client_of(app) as client:
        for body in fine:
            resp = await client.post("/raw", content=body)
            assert resp.status_code == 200, (body, resp.text)


async def test_a_method_no_route_serves_is_405_whatever_its_body_holds() -> None:
    app, _ = build_app(LIMIT)
    async with client_of(app) as client:
        for method in ("GET", "PUT", "DELETE"):
            resp = await client.request(method, "/raw", content=rb'{"a": "bell\u0007"}')
            assert resp.status_code == 405, (method, resp.text)
            assert resp.headers["allow"] == "POST"
        # Where a route serves the method, the body is still looked at first.
        resp = await client.post("/raw", content=rb'{"a": "bell\u0007"}')
        assert resp.status_code == 422, resp.text


async def test_depth_is_limited() -> None:
    app, _ = build_app()
    async with client_of(app) as client:
        ok = await client.post("/raw", content=json.dumps(nested(MAX_JSON_DEPTH // 2)))
        assert ok.status_code == 200, ok.text
        deep = await client.post("/raw", content=json.dumps(nested(300)))
        assert deep.status_code == 422, deep.text
        (error,) = deep.json()["errors"]
        assert error["field"].startswith("x.0.x.0")
        assert f"deeper than {MAX_JSON_DEPTH}" in error["message"]
        # Deeper than the parser can go: still a 422, not a crash.
        brackets = b"[" * 50_000 + b"]" * 50_000
        parser = await client.post("/raw", content=brackets)
        assert parser.status_code == 422, parser.text


async def test_nul_in_path_or_query_is_refused() -> None:
    app, _ = build_app(LIMIT)
    async with client_of(app) as client:
        query = await client.post("/raw?q=a%00b", content=b"{}")
        path = await client.post("/raw%00", content=b"{}")
    assert [query.status_code, path.status_code] == [422, 422]
    assert query.json()["errors"][0]["field"] == "<query>"


hostile_text = st.text(
    alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=50
)
hostile_json = st.recursive(
    st.none() | st.booleans() | st.integers() | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=hostile_json)
def test_every_problem_found_names_a_field_and_clean_text_survives_utf8(value: object) -> None:
    raw = json.dumps(value).encode()  # ASCII, with \\u escapes for anything odd
    errors = inspect_body(raw, as_json=True)
    if not errors:
        # What passes can be encoded, stored and serialised again.
        json.dumps(json.loads(raw), ensure_ascii=False).encode("utf-8")
        assert "\x00" not in json.dumps(json.loads(raw), ensure_ascii=False)
    for error in errors:
        assert error["loc"]
        assert error["msg"]


def test_the_walk_does_not_recurse() -> None:
    assert list(body_problems(nested(5_000))) != []
