"""Registry: who may write what, for which government; tokens; draft visibility.

One registry per database backend serves the whole module (module-scoped fixture and event
loop): two governments, ``mx`` (the caller's own) and ``br`` (another), each with an NFP, PA,
NAU, CNA reader and checkpoint operator, a published CNA and a published checkpoint. Every
cell of the matrix builds the fresh records or requests it acts on, so cells do not interfere.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.registry.adapters.keys import SigningKey
from services.registry.context import RegistryContext
from tests.support import records as rec
from tests.support.authz import OTHER, OWN, ROLES, SIDES, assert_problem, matrix_cells
from tests.support.databases import databases, skip_unless_backend
from tests.support.registry import (
    ADMIN_TOKEN,
    auth,
    create_user,
    government_users,
    publish,
    registry_settings,
    running_registry,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


# Expected answer of every write endpoint, per caller role (columns) and per government of
# the target (cell = own/other; the admin belongs to no government, so for it "own" and
# "other" are simply the two governments). The caller is always of "mx" (or the admin).
#   201/200  accepted        403  refused (problem+json)
#   pub      200 {"status": "published"}      req  200 {"status": "requested"} (a request)
# Rows:
#   user:R          POST /v1/users creating a user of role R for the target government
#   save:S          PUT  /v1/records/S/{id}, a new record of schema S of the target government
#   publish:S       POST /v1/records/S/{id}/publish of a draft saved by its owner
#   revoke          POST /v1/records/absPermit/{id}/revoke of a published IRCC
#   approve|reject|recall  POST /v1/requests/{id}/... of a request opened by the target's NAU
#   validate:S      POST /v1/records/S/validate of a valid record of S of the target government
#   audit           GET  /v1/audit/drafts/absPermit/{id} of a draft saved by the target's NAU
# Derivation (domain.py, DESIGN.md §4): nobody acts for another government; the admin
# creates admins, NFPs and dashboard operators (government-less, like admins: the
# government given is dropped), the NFP its PA, NAUs and CNA readers, the PA checkpoint
# operators; focal points are the Secretariat's (admin only); contacts are saved and
# published directly by the admin, NFP, PA and NAU; other national records are drafted by
# the NFP, PA and NAU, published directly by the PA and through a request by the NAU; only
# the PA of the record's government decides on requests, and only the requester recalls;
# CNA readers and checkpoint operators write no records. Validating a record takes the
# rights of saving it. The Secretariat alone audits a government's drafts. A new PA replaces
# its government's previous one [W1].
MATRIX = """
                       admin    nfp      pa       nau      cna      checkpoint
user:admin             201/201  403/403  403/403  403/403  403/403  403/403
user:nfp               201/201  403/403  403/403  403/403  403/403  403/403
user:operator          201/201  403/403  403/403  403/403  403/403  403/403
user:pa                403/403  201/403  403/403  403/403  403/403  403/403
user:nau               403/403  201/403  403/403  403/403  403/403  403/403
user:cna               403/403  201/403  403/403  403/403  403/403  403/403
user:checkpoint        403/403  403/403  201/403  403/403  403/403  403/403
save:absPermit         403/403  200/403  200/403  200/403  403/403  403/403
save:authority         403/403  200/403  200/403  200/403  403/403  403/403
save:absCheckpoint     403/403  200/403  200/403  200/403  403/403  403/403
save:contact           200/200  200/403  200/403  200/403  403/403  403/403
save:focalPoint        200/200  403/403  403/403  403/403  403/403  403/403
publish:absPermit      403/403  403/403  pub/403  req/403  403/403  403/403
publish:authority      403/403  403/403  pub/403  req/403  403/403  403/403
publish:absCheckpoint  403/403  403/403  pub/403  req/403  403/403  403/403
publish:contact        pub/pub  pub/403  pub/403  pub/403  403/403  403/403
publish:focalPoint     pub/pub  403/403  403/403  403/403  403/403  403/403
revoke                 403/403  403/403  pub/403  req/403  403/403  403/403
approve                403/403  403/403  200/403  403/403  403/403  403/403
reject                 403/403  403/403  200/403  403/403  403/403  403/403
recall                 403/403  403/403  403/403  200/403  403/403  403/403
validate:absPermit     403/403  200/403  200/403  200/403  403/403  403/403
validate:authority     403/403  200/403  200/403  200/403  403/403  403/403
validate:absCheckpoint 403/403  200/403  200/403  200/403  403/403  403/403
validate:contact       200/200  200/403  200/403  200/403  403/403  403/403
validate:focalPoint    200/200  403/403  403/403  403/403  403/403  403/403
audit                  200/200  403/403  403/403  403/403  403/403  403/403
"""


@dataclass
class World:
    """The running registry and what the module set up in it."""

    client: httpx.AsyncClient
    tokens: dict[str, dict[str, str]]  # government -> role -> token (admin in both)
    cna: dict[str, str]  # government -> published authority identifier
    checkpoint: dict[str, str]  # government -> published checkpoint identifier

    @property
    def key(self) -> SigningKey:
        """The registry's signing key."""
        ctx: RegistryContext = self.client.app.state.ctx  # type: ignore[attr-defined]
        return ctx.key

    def token(self, role: str, gov: str = OWN) -> str:
        """Token of ``role`` in ``gov``."""
        return self.tokens[gov][role]


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="module",
    params=["sqlite", "postgres"],
)
async def world(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    """One registry with both governments' users and base records."""
    skip_unless_backend(str(request.param))
    tmp = tmp_path_factory.mktemp(f"authz-{request.param}")
    async with databases(str(request.param), tmp) as make:
        db = await make("registry")
        settings = registry_settings(
            kafka=kafka_bootstrap, prefix=f"t{uuid.uuid4().hex[:10]}.", db=db, tmp=tmp
        )
        async with running_registry(settings) as client:
            tokens: dict[str, dict[str, str]] = {}
            cnas: dict[str, str] = {}
            checkpoints: dict[str, str] = {}
            for gov in SIDES.values():
                users = await government_users(client, gov)
                cna = rec.authority(gov, [f"cna@{gov}.example"])
                await publish(client, users["pa"], cna)
                point = rec.checkpoint(gov)
                await publish(client, users["pa"], point)
                ident = point["header"]["identifier"]
                users["checkpoint"] = await create_user(
                    client, users["pa"], "checkpoint", gov, checkpoint=ident
                )
                users["admin"] = ADMIN_TOKEN
                tokens[gov] = users
                cnas[gov] = cna["header"]["identifier"]
                checkpoints[gov] = ident
            yield World(client, tokens, cnas, checkpoints)


# ---------------------------------------------------------------- helpers


def assert_field_problem(resp: httpx.Response, field: str) -> None:
    """``resp`` is a 422 problem naming ``field`` in ``errors[].field``."""
    body = assert_problem(resp, 422)
    fields = [e["field"] for e in body.get("errors") or []]
    assert field in fields, body


def new_record(world: World, schema: str, gov: str) -> dict[str, Any]:
    """A valid new record of ``schema`` owned by ``gov``."""
    emails = [f"{schema.lower()}-{uuid.uuid4().hex[:6]}@{gov}.example"]
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "absPermit": lambda: rec.permit(gov, world.cna[gov]),
        "authority": lambda: rec.authority(gov, emails),
        "absCheckpoint": lambda: rec.checkpoint(gov),
        "contact": lambda: rec.contact(emails, gov=gov),
        "focalPoint": lambda: rec.focal_point(gov, emails),
    }
    return builders[schema]()


def url_of(record: dict[str, Any]) -> str:
    """``/v1/records/{schema}/{identifier}``."""
    return f"/v1/records/{record['header']['schema']}/{record['header']['identifier']}"


def audit_url(record: dict[str, Any]) -> str:
    """``/v1/audit/drafts/{schema}/{identifier}``: the Secretariat's logged read of a draft."""
    return f"/v1/audit/drafts/{record['header']['schema']}/{record['header']['identifier']}"


async def save_as(world: World, token: str, record: dict[str, Any]) -> None:
    """Save a draft that must be accepted."""
    resp = await world.client.put(url_of(record), json=record, headers=auth(token))
    assert resp.status_code == 200, resp.text


async def open_request(world: World, gov: str) -> int:
    """``gov``'s NAU asks to publish a fresh IRCC; returns the request id."""
    ircc = new_record(world, "absPermit", gov)
    await save_as(world, world.token("nau", gov), ircc)
    resp = await world.client.post(f"{url_of(ircc)}/publish", headers=auth(world.token("nau", gov)))
    assert resp.json()["status"] == "requested", resp.text
    return int(resp.json()["requestId"])


async def request_state(world: World, request_id: int) -> str:
    """State of a request, as the admin lists it."""
    resp = await world.client.get("/v1/requests", headers=auth(ADMIN_TOKEN))
    (req,) = [r for r in resp.json() if r["id"] == request_id]
    return str(req["state"])


def check(resp: httpx.Response, expected: str) -> None:
    """``resp`` is the answer a matrix cell expects."""
    if expected in {"pub", "req"}:
        assert resp.status_code == 200, resp.text
        status = {"pub": "published", "req": "requested"}[expected]
        assert resp.json()["status"] == status, resp.text
    elif int(expected) >= 400:
        assert_problem(resp, int(expected))
    else:
        assert resp.status_code == int(expected), resp.text


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize(("endpoint", "role", "side", "expected"), matrix_cells(MATRIX))
async def test_write_endpoints_by_role_and_government(
    world: World, endpoint: str, role: str, side: str, expected: str
) -> None:
    client, gov = world.client, SIDES[side]
    caller = auth(world.token(role))
    kind, _, arg = endpoint.partition(":")
    refused = expected.startswith("4")

    if kind == "user":
        body = {
            "name": f"new {arg}",
            "email": f"new-{arg}@{gov}.example",
            "role": arg,
            "government": gov,
        }
        if arg == "checkpoint":
            body["checkpoint"] = world.checkpoint[gov]
        resp = await client.post("/v1/users", json=body, headers=caller)
        check(resp, expected)
        if not refused:
            assert resp.json()["role"] == arg
            assert resp.json()["government"] == (None if arg in {"admin", "operator"} else gov)
        if arg == "pa" and not refused:  # the new PA replaces the government's PA [W1]
            replaced = await client.get("/v1/notifications", headers=auth(world.token("pa", gov)))
            assert_problem(replaced, 401)
            world.tokens[gov]["pa"] = resp.json()["token"]

    elif kind == "save":
        record = new_record(world, arg, gov)
        check(await client.put(url_of(record), json=record, headers=caller), expected)
        seen = await client.get(audit_url(record), headers=auth(ADMIN_TOKEN))
        assert seen.status_code == (404 if refused else 200), seen.text

    elif kind == "validate":
        record = new_record(world, arg, gov)
        resp = await client.post(f"/v1/records/{arg}/validate", json=record, headers=caller)
        check(resp, expected)
        if not refused:
            assert resp.json() == {"errors": []}

    elif kind == "audit":
        record = new_record(world, "absPermit", gov)
        await save_as(world, world.token("nau", gov), record)
        resp = await client.get(audit_url(record), headers=caller)
        check(resp, expected)
        if not refused:
            assert (resp.json()["status"], resp.json()["record"]) == ("draft", record)

    elif kind == "publish":
        record = new_record(world, arg, gov)
        owner = ADMIN_TOKEN if arg == "focalPoint" else world.token("pa", gov)
        await save_as(world, owner, record)
        check(await client.post(f"{url_of(record)}/publish", headers=caller), expected)
        public = await client.get(f"/v1/records/{record['header']['identifier']}")
        assert public.status_code == (200 if expected == "pub" else 404), public.text

    elif kind == "revoke":
        ircc = new_record(world, "absPermit", gov)
        await publish(client, world.token("pa", gov), ircc)
        resp = await client.post(
            f"/v1/records/absPermit/{ircc['header']['identifier']}/revoke",
            json={"reason": {"en": "withdrawn"}},
            headers=caller,
        )
        check(resp, expected)
        status = (await client.get(f"/v1/records/{ircc['header']['identifier']}")).json()
        assert status["status"] == ("revoked" if expected == "pub" else "current")

    else:
        request_id = await open_request(world, gov)
        reason = {"reason": "not complete"} if kind == "reject" else None
        resp = await client.post(f"/v1/requests/{request_id}/{kind}", json=reason, headers=caller)
        check(resp, expected)
        state = {"approve": "completed", "reject": "completed", "recall": "canceled"}[kind]
        assert await request_state(world, request_id) == ("running" if refused else state)


# ---------------------------------------------------------------- tokens

WRITES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/users", {"name": "x", "email": "x@mx.example", "role": "pa", "government": "mx"}),
    ("PUT", "/v1/records/contact/T-1", rec.contact(["c@mx.example"], gov="mx")),
    ("POST", "/v1/records/contact/T-1/publish", None),
    ("POST", "/v1/records/absPermit/T-1/revoke", {"reason": {"en": "withdrawn"}}),
    ("POST", "/v1/requests/1/approve", None),
    ("POST", "/v1/requests/1/reject", {"reason": "no"}),
    ("POST", "/v1/requests/1/recall", None),
    ("GET", "/v1/requests", None),
    ("GET", "/v1/notifications", None),
]


def bad_credentials(world: World, kind: str) -> dict[str, str]:
    """Headers carrying a credential of ``kind`` that must be refused."""
    claims = jwt.decode(world.token("pa"), options={"verify_signature": False})
    now = int(time.time())
    kid = world.key.kid
    if kind == "none":
        return {}
    if kind == "basic":
        return {"Authorization": f"Basic {ADMIN_TOKEN}"}
    if kind == "malformed":
        return auth("not-a-jwt")
    if kind == "unsigned":
        return auth(jwt.encode(claims, "", algorithm="none", headers={"kid": kid}))
    if kind in {"other-key", "other-key-unknown-kid"}:
        stranger = Ed25519PrivateKey.generate()
        header = {"kid": kid if kind == "other-key" else "0123456789abcdef"}
        return auth(jwt.encode(claims, stranger, algorithm="EdDSA", headers=header))
    if kind == "other-audience":
        claims = claims | {"aud": "some-other-service"}
    else:
        assert kind == "expired"
        claims = claims | {"iat": now - 7200, "exp": now - 60}
    return auth(jwt.encode(claims, world.key.private, algorithm="EdDSA", headers={"kid": kid}))


CREDENTIALS = {
    "none": "missing bearer token",
    "basic": "missing bearer token",
    "malformed": "malformed token",
    "unsigned": "invalid token",
    "other-key": "invalid token",
    "other-key-unknown-kid": "token signed by an unknown key",
    "other-audience": "invalid token",
    "expired": "token expired",
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [pytest.param(*w, id=w[0] + w[1].removeprefix("/v1").replace("/", "-")) for w in WRITES],
)
@pytest.mark.parametrize(("kind", "detail"), list(CREDENTIALS.items()), ids=list(CREDENTIALS))
async def test_missing_or_invalid_tokens_are_401(
    world: World, method: str, path: str, body: dict[str, Any] | None, kind: str, detail: str
) -> None:
    headers = bad_credentials(world, kind)
    resp = await world.client.request(method, path, json=body, headers=headers)
    problem = assert_problem(resp, 401)
    assert problem["detail"] == detail


async def test_the_same_claims_signed_by_the_registry_are_accepted(world: World) -> None:
    """Control for the token cases: re-signing a user's claims with the real key works."""
    claims = jwt.decode(world.token("pa"), options={"verify_signature": False})
    token = jwt.encode(claims, world.key.private, algorithm="EdDSA", headers={"kid": world.key.kid})
    resp = await world.client.get("/v1/notifications", headers=auth(token))
    assert resp.status_code == 200, resp.text


# ---------------------------------------------------------------- draft visibility

VIEWERS = [(side, role) for side in SIDES for role in ROLES if role != "admin"]
# Drafts: their government's NFP, PA and NAU. The Secretariat reads them only through the
# audit endpoint (logged): here it is refused, 403 naming that endpoint.
SEES_DRAFTS = {("own", "nfp"), ("own", "pa"), ("own", "nau")}


@pytest.mark.parametrize(
    ("side", "role"),
    [pytest.param(side, role, id=f"{side}-{role}") for side, role in [*VIEWERS, ("any", "admin")]],
)
async def test_drafts_are_visible_to_their_governments_editors_only(
    world: World, side: str, role: str
) -> None:
    ircc = new_record(world, "absPermit", OWN)
    await save_as(world, world.token("nau"), ircc)
    viewer = auth(world.token(role, SIDES.get(side, OWN)))
    ident = ircc["header"]["identifier"]
    document_id = (
        await world.client.get(f"/v1/records/{ident}?draft=true", headers=auth(world.token("pa")))
    ).json()["documentID"]
    visible = (side, role) in SEES_DRAFTS

    for ref in (f"{ident}?draft=true", ident, str(document_id)):
        resp = await world.client.get(f"/v1/records/{ref}", headers=viewer)
        if visible:
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "draft"
            assert resp.json()["record"]["title"] == ircc["title"]
        elif role == "admin":
            assert "/v1/audit/drafts/" in assert_problem(resp, 403)["detail"]
        else:
            assert_problem(resp, 404)


async def test_anonymous_callers_see_only_published_revisions(world: World) -> None:
    client, pa = world.client, world.token("pa")
    draft_only = new_record(world, "absPermit", OWN)
    await save_as(world, pa, draft_only)
    for ref in (
        draft_only["header"]["identifier"],
        f"{draft_only['header']['identifier']}?draft=true",
    ):
        assert_problem(await client.get(f"/v1/records/{ref}"), 404)

    ircc = new_record(world, "absPermit", OWN)
    ident = ircc["header"]["identifier"]
    first = await publish(client, pa, ircc)
    amended = ircc | {
        "title": {"en": f"Amended {uuid.uuid4().hex[:8]}"},
        "amendmentDescription": {"en": "typo"},
    }
    await save_as(world, pa, amended)

    for headers in ({}, auth(world.token("pa", OTHER))):
        resp = await client.get(f"/v1/records/{ident}", headers=headers)
        assert resp.status_code == 200, resp.text
        view = resp.json()
        assert (view["uid"], view["status"]) == (first["uid"], "current")
        assert view["record"]["title"] == ircc["title"]
        assert_problem(await client.get(f"/v1/records/{ident}?draft=true", headers=headers), 404)
    resp = await client.get(f"/v1/records/{ident}?draft=true", headers=auth(world.token("nau")))
    assert resp.json()["record"]["title"] == amended["title"]

    async def found(words: str) -> list[str]:
        resp = await client.get("/v1/search", params={"q": words})
        return [item["identifier"] for item in resp.json()["items"]]

    assert await found(draft_only["title"]["en"]) == []
    assert await found(amended["title"]["en"]) == []
    assert await found(ircc["title"]["en"]) == [ident]


async def test_a_revision_not_yet_published_is_404_even_for_editors(world: World) -> None:
    """``identifier@1`` names revision 1: it must not answer with the draft."""
    ircc = new_record(world, "absPermit", OWN)
    await save_as(world, world.token("pa"), ircc)
    resp = await world.client.get(
        f"/v1/records/{ircc['header']['identifier']}@1", headers=auth(world.token("pa"))
    )
    assert_problem(resp, 404)


# ---------------------------------------------------------------- 422s name the field


async def _published_ircc(world: World) -> str:
    ircc = new_record(world, "absPermit", OWN)
    await publish(world.client, world.token("pa"), ircc)
    return str(ircc["header"]["identifier"])


def _user(**over: Any) -> dict[str, Any]:
    return {"name": "n", "email": "n@mx.example", "role": "pa", "government": OWN} | over


INVALID: list[Any] = [
    pytest.param("POST", "/v1/users", "nfp", _user(email="not-an-email"), "email", id="user-email"),
    pytest.param("POST", "/v1/users", "nfp", _user(role="superuser"), "role", id="user-role"),
    pytest.param("POST", "/v1/users", "nfp", _user(government=None), "government", id="user-gov"),
    pytest.param(
        "POST", "/v1/users", "nfp", _user(government="mex"), "government", id="user-gov-format"
    ),
    pytest.param("POST", "/v1/requests/x/approve", "pa", None, "request_id", id="request-id"),
    pytest.param(
        "POST", "/v1/requests/1/reject", "pa", {"reason": ""}, "reason", id="reject-reason"
    ),
    pytest.param(
        "POST",
        "/v1/records/absPermit/{ircc}/revoke",
        "pa",
        {"reason": {}},
        "reason",
        id="revoke-empty",
    ),
    pytest.param(
        "POST",
        "/v1/records/absPermit/{ircc}/revoke",
        "pa",
        {"reason": {"en": " "}},
        "reason",
        id="revoke-blank",
    ),
]


@pytest.mark.parametrize(("method", "path", "role", "body", "field"), INVALID)
async def test_invalid_requests_are_422_naming_the_field(
    world: World, method: str, path: str, role: str, body: dict[str, Any] | None, field: str
) -> None:
    if "{ircc}" in path:
        path = path.format(ircc=await _published_ircc(world))
    resp = await world.client.request(method, path, json=body, headers=auth(world.token(role)))
    assert_field_problem(resp, field)


def _without_title(world: World, ircc: dict[str, Any]) -> None:
    del ircc["title"]


def _cna_of_another_government(world: World, ircc: dict[str, Any]) -> None:
    ircc["absCNA"] = {"identifier": world.cna[OTHER]}


def _header_not_the_url(world: World, ircc: dict[str, Any]) -> None:
    ircc["header"] = ircc["header"] | {"identifier": "T-SOMETHING-ELSE"}


def _two_line_title(world: World, ircc: dict[str, Any]) -> None:
    ircc["title"] = {"en": "Permit\r\nBcc: x@evil.example"}


def _without_government(world: World, ircc: dict[str, Any]) -> None:
    del ircc["government"]


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        pytest.param(_header_not_the_url, "header", id="header-not-the-url"),
        pytest.param(_two_line_title, "title.en", id="two-line-title"),
        pytest.param(_without_government, "government", id="without-government"),
    ],
)
async def test_drafts_of_a_broken_shape_are_422_naming_the_field(
    world: World, spoil: Callable[[World, dict[str, Any]], None], field: str
) -> None:
    ircc = new_record(world, "absPermit", OWN)
    url = url_of(ircc)
    spoil(world, ircc)
    resp = await world.client.put(url, json=ircc, headers=auth(world.token("pa")))
    assert_field_problem(resp, field)
    nothing = await world.client.get(
        url.replace("/v1/records/", "/v1/audit/drafts/"), headers=auth(ADMIN_TOKEN)
    )
    assert_problem(nothing, 404)


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        pytest.param(_without_title, "title", id="missing-title"),
        pytest.param(_cna_of_another_government, "absCNA", id="cna-of-another-government"),
    ],
)
async def test_incomplete_drafts_are_saved_and_their_publication_is_422_naming_the_field(
    world: World, spoil: Callable[[World, dict[str, Any]], None], field: str
) -> None:
    """The real clearing-house validates on publication, not when a draft is saved."""
    ircc = new_record(world, "absPermit", OWN)
    spoil(world, ircc)
    await save_as(world, world.token("pa"), ircc)
    resp = await world.client.post(f"{url_of(ircc)}/publish", headers=auth(world.token("pa")))
    assert_field_problem(resp, field)
    assert_problem(await world.client.get(f"/v1/records/{ircc['header']['identifier']}"), 404)


# ---------------------------------------------------------------- checkpoint operators


@pytest.mark.parametrize(
    "checkpoint",
    [
        pytest.param(None, id="without-a-checkpoint"),
        pytest.param("T-NO-SUCH-CHECKPOINT", id="unknown-checkpoint"),
        pytest.param(OTHER, id="checkpoint-of-another-government"),
    ],
)
async def test_a_checkpoint_operator_is_scoped_to_an_own_checkpoint(
    world: World, checkpoint: str | None
) -> None:
    """DESIGN §4: the checkpoint role is scoped to one checkpoint of its government."""
    body = _user(role="checkpoint", email=f"op-{uuid.uuid4().hex[:6]}@mx.example")
    if checkpoint is not None:
        body["checkpoint"] = world.checkpoint.get(checkpoint, checkpoint)
    resp = await world.client.post("/v1/users", json=body, headers=auth(world.token("pa")))
    assert_field_problem(resp, "checkpoint")
