"""Hostile and careless input, through HTTP against the real stack: a clear 4xx, never a 5xx.

One table holds every finding of the hardening probe that an HTTP request can show, each
with the status it must get now and the field its problem must name. A hypothesis strategy
then throws hostile JSON (deep nesting, lone surrogates, huge strings, control characters)
at every write endpoint of every service: no answer may be a 5xx, and every 4xx must be a
problem document.

One stack per database backend serves the module (module-scoped fixture and event loop).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.hygiene import MAX_JSON_DEPTH
from shared.records.common import MAX_NAME_CHARS
from tests.support import records as rec
from tests.support.communiques import communique
from tests.support.databases import BACKENDS, skip_unless_backend
from tests.support.poll import eventually
from tests.support.registry import ADMIN_TOKEN, auth, create_user, government_users, publish
from tests.support.security_stack import module_stack
from tests.support.stack import Stack
from tools.smtp_sink import SmtpSink

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PROBLEM_JSON = "application/problem+json"
MIB = 1024 * 1024


@dataclass
class World:
    """The stack, tokens of ``mx`` and the admin, and a published ``mx`` checkpoint."""

    stack: Stack
    tokens: dict[str, str]
    checkpoint: str
    cna: str

    def client(self, service: str) -> httpx.AsyncClient:
        client: httpx.AsyncClient = getattr(self.stack, service)
        return client


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def world(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    backend = str(request.param)
    skip_unless_backend(backend)
    tmp: Path = tmp_path_factory.mktemp(f"hardening-{backend}")
    with SmtpSink(maildir=tmp / "mail") as smtp:
        async with module_stack(kafka=kafka_bootstrap, backend=backend, tmp=tmp, smtp=smtp) as (
            stack,
            _prefix,
        ):
            tokens = await government_users(stack.registry, "mx")
            tokens["admin"] = await create_user(stack.registry, ADMIN_TOKEN, "admin")
            cna = rec.authority("mx", ["cna@mx.example"])
            await publish(stack.registry, tokens["pa"], cna)
            checkpoint = rec.checkpoint("mx")
            await publish(stack.registry, tokens["pa"], checkpoint)
            for service in ("registry", "checkpoint", "notifier", "monitor"):
                client: httpx.AsyncClient = getattr(stack, service)

                async def ready(client: httpx.AsyncClient = client) -> bool:
                    return (await client.get("/readyz")).status_code == 200

                await eventually(ready, timeout=60, what=f"{service} ready")
            yield World(
                stack,
                tokens,
                checkpoint["header"]["identifier"],
                cna["header"]["identifier"],
            )


def assert_problem(resp: httpx.Response, status: int, field: str | None = None) -> None:
    """``resp`` is a problem document of ``status``, naming ``field`` when given."""
    sent = f"{resp.request.method} {resp.request.url}"
    assert resp.status_code == status, f"{sent} -> {resp.status_code} {resp.text[:300]}"
    assert resp.headers["content-type"].split(";")[0] == PROBLEM_JSON, sent
    problem = resp.json()
    assert problem["status"] == status
    assert problem["title"]
    if field is not None:
        fields = [error["field"] for error in problem.get("errors") or []]
        assert field in fields, f"{sent}: {field!r} not among {fields}"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"deeper": value}
    return value


# ---------------------------------------------------------------- the table of findings

Body = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Finding:
    """One request of the probe and the answer it must get now."""

    service: str
    method: str
    path: str
    body: Body | dict[str, Any] | bytes | None
    caller: str | None  # a token of World.tokens, or None for no token
    status: int
    field: str | None = None


def _ircc(**changes: Any) -> Body:
    return lambda w: rec.permit("mx", w.cna) | changes


def _cpc(**changes: Any) -> Body:
    return lambda w: communique("mx", [w.checkpoint], source_countries=["br"]) | changes


def _contact(**changes: Any) -> Body:
    return lambda _w: rec.contact(["org@mx.example"], gov="mx") | changes


def _user(**changes: Any) -> Body:
    return lambda _w: (
        {"name": "Ann", "email": "ann@mx.example", "role": "pa"}
        | {
            "government": "mx",
            **changes,
        }
    )


LONG_TITLE = {"en": "t" * (MAX_NAME_CHARS + 1)}

FINDINGS: dict[str, Finding] = {
    # One bad date stopped every expiry reminder: such a date is refused at the door.
    "ircc-issued-0001": Finding(
        "registry",
        "PUT",
        "absPermit",
        _ircc(dateOfIssuance="0001-01-01"),
        "pa",
        422,
        "dateOfIssuance",
    ),
    "ircc-expiry-0001": Finding(
        "registry",
        "PUT",
        "absPermit",
        _ircc(dateOfExpiry="0001-01-10"),
        "pa",
        422,
        "dateOfExpiry",
    ),
    # 500 instead of 422: lone surrogates.
    "cpc-title-surrogate": Finding(
        "checkpoint",
        "POST",
        "/v1/communiques",
        rb'{"title": {"en": "a\ud800"}, "header": {"schema": "absCheckpointCommunique"}}',
        "pa",
        422,
        "title.en",
    ),
    "contact-organization-surrogate": Finding(
        "registry",
        "PUT",
        "contact",
        _contact(organization={"en": "Bio\ud800Lab"}),
        "pa",
        422,
        "organization.en",
    ),
    # 500 instead of 422: JSON nested 300 levels inside an extra field.
    "contact-extra-300-deep": Finding(
        "registry", "PUT", "contact", _contact(extra=nested(300)), "pa", 422, None
    ),
    "cpc-extra-300-deep": Finding(
        "checkpoint", "POST", "/v1/communiques", _cpc(extra=nested(300)), "pa", 422, None
    ),
    # Body limit before authentication (the probe's 20-100 MB bodies got 422, not 401).
    "resolve-huge-body-no-token": Finding(
        "monitor",
        "POST",
        "/v1/discrepancies/x/resolve",
        b'{"note": "' + b"x" * (2 * MIB) + b'"}',
        None,
        413,
        "<body>",
    ),
    "resolve-small-body-no-token": Finding(
        "monitor", "POST", "/v1/discrepancies/x/resolve", {"note": "x"}, None, 401
    ),
    # Titles had no length limit.
    "ircc-title-too-long": Finding(
        "registry", "PUT", "absPermit", _ircc(title=LONG_TITLE), "pa", 422, "title.en"
    ),
    "cpc-title-too-long": Finding(
        "checkpoint", "POST", "/v1/communiques", _cpc(title=LONG_TITLE), "pa", 422, "title.en"
    ),
    # CR/LF in one-line fields.
    "cpc-title-crlf": Finding(
        "checkpoint",
        "POST",
        "/v1/communiques",
        _cpc(title={"en": "Declaration\r\nBcc: x@evil.example"}),
        "pa",
        422,
        "title.en",
    ),
    "contact-name-lf": Finding(
        "registry",
        "PUT",
        "contact",
        _contact(organization={"en": "Lab\nBcc: x@evil.example"}),
        "pa",
        422,
        "organization.en",
    ),
    "user-name-crlf": Finding(
        "registry",
        "POST",
        "/v1/users",
        _user(name="Ann\r\nBcc: x@evil.example"),
        "nfp",
        422,
        "name",
    ),
    "control-character-anywhere": Finding(
        "monitor",
        "POST",
        "/v1/discrepancies/x/resolve",
        {"note": "bell\u0007"},
        "admin",
        422,
        "note",
    ),
    # Implausible dates.
    "cpc-collected-9999": Finding(
        "checkpoint",
        "POST",
        "/v1/communiques",
        _cpc(dateCollected="9999-12-31"),
        "pa",
        422,
        "dateCollected",
    ),
    "cpc-collected-0001": Finding(
        "checkpoint",
        "POST",
        "/v1/communiques",
        _cpc(dateCollected="0001-01-01"),
        "pa",
        422,
        "dateCollected",
    ),
    # Lookups by UID never match a prefix.
    "communique-by-prefix": Finding("checkpoint", "GET", "/v1/communiques/ABSCH", None, "pa", 404),
}


def _url(world: World, finding: Finding, body: Any) -> str:
    if finding.path.startswith("/"):
        return finding.path
    ident = body["header"]["identifier"] if isinstance(body, dict) else "x" * 12
    return f"/v1/records/{finding.path}/{ident}"


@pytest.mark.parametrize("name", sorted(FINDINGS))
async def test_each_finding_gets_its_status_now(world: World, name: str) -> None:
    finding = FINDINGS[name]
    body = finding.body(world) if callable(finding.body) else finding.body
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
    headers = {"content-type": "application/json"}
    if finding.caller is not None:
        headers |= auth(world.tokens[finding.caller])
    resp = await world.client(finding.service).request(
        finding.method, _url(world, finding, body), content=content, headers=headers
    )
    assert_problem(resp, finding.status, finding.field)


async def test_an_expiry_before_the_issuance_is_refused_at_publication(world: World) -> None:
    """A cross-field rule: the draft is saved (the real clearing-house validates on
    publication), its publication is a 422 naming ``dateOfExpiry``, nothing goes out."""
    ircc = _ircc(dateOfExpiry="2024-01-01")(world)
    url = f"/v1/records/absPermit/{ircc['header']['identifier']}"
    pa = auth(world.tokens["pa"])
    saved = await world.client("registry").put(url, json=ircc, headers=pa)
    assert saved.status_code == 200, saved.text
    published = await world.client("registry").post(f"{url}/publish", headers=pa)
    assert_problem(published, 422, "dateOfExpiry")
    public = await world.client("registry").get(f"/v1/records/{ircc['header']['identifier']}")
    assert public.status_code == 404


async def test_an_escaped_backslash_before_u0000_is_text_not_nul(world: World) -> None:
    contact = rec.contact(["org@mx.example"], gov="mx", notes="C:\\u0000dir")
    resp = await world.client("registry").put(
        f"/v1/records/contact/{contact['header']['identifier']}",
        content=json.dumps(contact),
        headers=auth(world.tokens["pa"]) | {"content-type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["record"]["notes"] == "C:\\u0000dir"


async def test_depth_within_the_limit_is_kept(world: World) -> None:
    contact = rec.contact(["org@mx.example"], gov="mx", extra=nested(MAX_JSON_DEPTH - 4))
    resp = await world.client("registry").put(
        f"/v1/records/contact/{contact['header']['identifier']}",
        json=contact,
        headers=auth(world.tokens["pa"]),
    )
    assert resp.status_code == 200, resp.text


# ---------------------------------------------------------------- hostile JSON everywhere

TEXT_ALPHABET = st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF)
huge = st.builds(
    lambda n, c: c * n,
    st.sampled_from([MAX_NAME_CHARS + 1, 100_001, MIB + 1]),
    st.sampled_from(["x", "\u00e9", "\x07", "\ud800"]),
)
hostile_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT_ALPHABET, max_size=40)
    | st.sampled_from(["\ud800", "\udfff", "a\r\nb", "\x00", "\x1b[2J", "\u2028", "\ufeff"])
)
hostile_value = st.one_of(
    st.recursive(
        hostile_scalar,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(TEXT_ALPHABET, max_size=8), inner, max_size=3)
        ),
        max_leaves=12,
    ),
    st.builds(nested, st.integers(min_value=MAX_JSON_DEPTH - 2, max_value=400)),
    huge,
)


@dataclass(frozen=True)
class WriteEndpoint:
    """A write endpoint and a valid body to spoil."""

    service: str
    method: str
    path: str  # "{ident}" is the body's header.identifier
    caller: str
    valid: Body


WRITES: dict[str, WriteEndpoint] = {
    "registry-ircc": WriteEndpoint(
        "registry", "PUT", "/v1/records/absPermit/{ident}", "pa", _ircc()
    ),
    "registry-contact": WriteEndpoint(
        "registry", "PUT", "/v1/records/contact/{ident}", "pa", _contact()
    ),
    "registry-checkpoint": WriteEndpoint(
        "registry",
        "PUT",
        "/v1/records/absCheckpoint/{ident}",
        "pa",
        lambda _w: rec.checkpoint("mx"),
    ),
    "registry-batch": WriteEndpoint(
        "registry",
        "POST",
        "/v1/records/absPermit/batch",
        "pa",
        lambda w: {"records": [_ircc()(w)], "publish": True},
    ),
    "registry-import": WriteEndpoint(
        "registry",
        "POST",
        "/v1/import",
        "pa",
        lambda w: {
            "files": [
                {
                    "name": "records.json",
                    "content": base64.b64encode(json.dumps([_ircc()(w)]).encode()).decode(),
                }
            ],
            "publish": True,
        },
    ),
    "registry-publish": WriteEndpoint(
        "registry",
        "POST",
        "/v1/records/contact/XXXXXXXXXXXXX/publish",
        "nau",
        lambda _w: {"message": "please"},
    ),
    "registry-revoke": WriteEndpoint(
        "registry",
        "POST",
        "/v1/records/absPermit/XXXXXXXXXXXXX/revoke",
        "pa",
        lambda _w: {"reason": {"en": "granted in error"}},
    ),
    "registry-reject": WriteEndpoint(
        "registry", "POST", "/v1/requests/1/reject", "pa", lambda _w: {"reason": "no"}
    ),
    "registry-users": WriteEndpoint("registry", "POST", "/v1/users", "nfp", _user()),
    "checkpoint-submit": WriteEndpoint("checkpoint", "POST", "/v1/communiques", "pa", _cpc()),
    "checkpoint-amend": WriteEndpoint(
        "checkpoint",
        "POST",
        "/v1/communiques/ABSCH-CPC-MX-1-1/amend",
        "pa",
        lambda w: {"reason": {"en": "corrected"}, "record": _cpc()(w)},
    ),
    "monitor-resolve": WriteEndpoint(
        "monitor", "POST", "/v1/discrepancies/x/resolve", "admin", lambda _w: {"note": "ok"}
    ),
}
EXAMPLES_PER_ENDPOINT = 60
HOSTILE = settings(
    max_examples=EXAMPLES_PER_ENDPOINT,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def spoil(valid: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """``valid`` with one value (or a new key) replaced by hostile JSON."""
    body = copy.deepcopy(valid)
    paths: list[list[str | int]] = [[]]
    stack: list[tuple[Any, list[str | int]]] = [(body, [])]
    while stack:
        item, path = stack.pop()
        children: list[tuple[str | int, Any]] = []
        if isinstance(item, dict):
            children = list(item.items())
        elif isinstance(item, list):
            children = list(enumerate(item))
        for key, child in children:
            paths.append([*path, key])
            stack.append((child, [*path, key]))
    where = data.draw(st.sampled_from(paths), label="where")
    value = data.draw(hostile_value, label="value")
    if not where:  # a new key at the top
        body[data.draw(st.text(TEXT_ALPHABET, min_size=1, max_size=8), label="key")] = value
        return body
    target: Any = body
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    return body


def hostile_bodies(valid: dict[str, Any]) -> list[dict[str, Any]]:
    """Bodies drawn without sending anything (the services run on the test's loop)."""
    drawn: list[dict[str, Any]] = []

    @HOSTILE
    @given(data=st.data())
    def draw(data: st.DataObject) -> None:
        drawn.append(spoil(valid, data))

    draw()
    return drawn


@pytest.mark.parametrize("endpoint", sorted(WRITES))
async def test_hostile_json_never_gets_a_5xx(world: World, endpoint: str) -> None:
    spec = WRITES[endpoint]
    client = world.client(spec.service)
    valid = spec.valid(world)
    statuses: dict[int, int] = {}
    failures: list[str] = []
    for body in hostile_bodies(valid):
        ident = valid.get("header", {}).get("identifier", "")
        url = spec.path.format(ident=ident)
        resp = await client.request(
            spec.method,
            url,
            content=json.dumps(body),  # ASCII: lone surrogates travel as \\u escapes
            headers=auth(world.tokens[spec.caller]) | {"content-type": "application/json"},
        )
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        problem_json = resp.headers.get("content-type", "").startswith(PROBLEM_JSON)
        if resp.status_code >= 500 or (resp.status_code >= 400 and not problem_json):
            failures.append(f"{resp.status_code} {json.dumps(body)[:300]} -> {resp.text[:200]}")
    log.info("%s: answers %s", endpoint, dict(sorted(statuses.items())))
    assert sum(statuses.values()) == EXAMPLES_PER_ENDPOINT
    assert not failures, "\n".join(failures[:5])
