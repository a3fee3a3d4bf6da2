"""Authorization in the checkpoint, notifier and monitor services (the registry's own
matrix is ``tests/integration/registry/test_authorization.py``).

One stack per database backend serves the module (module-scoped fixture and event loop):
two governments, ``mx`` (the caller's own) and ``br`` (another), each with an NFP, PA, NAU,
CNA reader and the operator of a published checkpoint (which informs all the government's
CNAs), a published NFP and CNA, and one discrepancy case whose provider country it is (an
IRCC of that government, revoked, cited by a CPC of the other government:
``IRCC_REVOKED``). The Secretariat calls with an admin JWT (the bootstrap admin token is
the registry's only) and creates a dashboard operator (government-less). Cells that change
a case first put it, as the admin, in a status the action applies to, so cells do not
depend on each other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.registry.adapters.keys import SigningKey
from services.registry.context import RegistryContext
from shared.auth import DEACTIVATED
from shared.events import Topic, topic_name
from tests.support import records as rec
from tests.support.authz import OTHER, OWN, SIDES, assert_problem, matrix_cells
from tests.support.communiques import communique
from tests.support.databases import BACKENDS, skip_unless_backend
from tests.support.mail import consumed
from tests.support.metrics import scrape
from tests.support.poll import eventually
from tests.support.registry import ADMIN_TOKEN, auth, create_user, government_users, publish
from tests.support.security_stack import module_stack
from tests.support.stack import Stack
from tools.smtp_sink import SmtpSink

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


# Expected answer per endpoint (rows), caller role (columns, all of "mx" but the admin) and
# government of the target (cell = own/other). For the admin, who belongs to no government,
# "own" and "other" are simply the two governments.
#   submit      POST /v1/communiques: a CPC of the target government citing that
#               government's checkpoint run by the operator of the caller's role matrix
#   submit:cp2  the same, citing the target government's *second* checkpoint (not the
#               operator's own)
#   deliveries  GET /v1/deliveries?subject=<the target government's IRCC>: 200:1 = listed,
#               200:0 = answered without them
#   list        GET /v1/discrepancies?provider=<target>: 200:1 = the target's case listed,
#               200:0 = answered without it
#   get         GET /v1/discrepancies/{id of the target's case}
#   acknowledge|resolve|reopen  POST /v1/discrepancies/{id}/<action> {"note"}
# Derivation (DESIGN.md §4, checkpoint/domain.py, monitor/cases.py): a CPC is submitted by
# the operator of a cited checkpoint of its own government, or by that government's PA or
# NAU; other roles are refused before the body is read. A case is visible to the provider
# country's NFP, PA, NAU and CNA reader and to the Secretariat, and invisible (404) to
# everyone else; only the provider country's CNA and NFP (and the Secretariat) work it,
# its PA and NAU get 403. A delivery is listed only to the government on whose side its
# recipient was mailed (an IRCC's parties: the IRCC's government; a CPC's user side: the
# CPC's; its provider side: each cited IRCC's), read by that government's NFP, PA, NAU and
# CNA reader, and to the Secretariat; everyone else gets the list without it, as cases are
# omitted, so who was mailed in another country never shows.
MATRIX = """
              admin        nfp          pa           nau          cna          checkpoint
submit        403/403      403/403      201/403      201/403      403/403      201/403
submit:cp2    403/403      403/403      201/403      201/403      403/403      403/403
deliveries    200:1/200:1  200:1/200:0  200:1/200:0  200:1/200:0  200:1/200:0  200:0/200:0
list          200:1/200:1  200:1/200:0  200:1/200:0  200:1/200:0  200:1/200:0  200:0/200:0
get           200/200      200/404      200/404      200/404      200/404      404/404
acknowledge   200/200      200/404      403/404      403/404      200/404      404/404
resolve       200/200      200/404      403/404      403/404      200/404      404/404
reopen        200/200      200/404      403/404      403/404      200/404      404/404
"""


@dataclass
class Government:
    """One government's users and published records."""

    tokens: dict[str, str]  # role -> token (the admin's too)
    checkpoint: str  # the operator's checkpoint
    second_checkpoint: str  # another published checkpoint of the government
    ircc_uid: str  # its revoked IRCC (revision-less UID)
    case_id: str  # the IRCC_REVOKED case it is the provider country of


@dataclass
class World:
    """The running stack and both governments."""

    stack: Stack
    admin: str
    govs: dict[str, Government]

    @property
    def key(self) -> SigningKey:
        """The registry's signing key."""
        ctx: RegistryContext = self.stack.registry.app.state.ctx  # type: ignore[attr-defined]
        return ctx.key

    def token(self, role: str) -> str:
        """Token of ``role`` in the caller's government ``mx`` (or the admin's)."""
        return self.admin if role == "admin" else self.govs[OWN].tokens[role]


async def _government(stack: Stack, gov: str) -> dict[str, Any]:
    """Users, NFP, CNA, two checkpoints (one with an operator) and an IRCC, revoked."""
    reg = stack.registry
    users = await government_users(reg, gov)
    await publish(reg, ADMIN_TOKEN, rec.focal_point(gov, [f"nfp@{gov}.example"]))
    cna = rec.authority(gov, [f"cna@{gov}.example"])
    await publish(reg, users["pa"], cna)
    # The first informs all the government's CNAs: a CPC citing it mails both sides.
    points = [rec.checkpoint(gov, inform_all=True), rec.checkpoint(gov)]
    for point in points:
        await publish(reg, users["pa"], point)
    first, second = (p["header"]["identifier"] for p in points)
    users["checkpoint"] = await create_user(reg, users["pa"], "checkpoint", gov, checkpoint=first)
    ircc = rec.permit(gov, cna["header"]["identifier"])
    uid = (await publish(reg, users["pa"], ircc))["uid"]
    resp = await reg.post(
        f"/v1/records/absPermit/{ircc['header']['identifier']}/revoke",
        json={"reason": {"en": "withdrawn"}},
        headers=auth(users["pa"]),
    )
    assert resp.status_code == 200, resp.text
    return {
        "users": users,
        "checkpoints": (first, second),
        "ircc": ircc["header"]["identifier"],
        "ircc_uid": uid.rsplit("-", 1)[0],
    }


def _cpc(gov: str, checkpoint: str, **extra: Any) -> dict[str, Any]:
    """A CPC without IRCC but with PIC evidence (so the monitor flags nothing)."""
    return communique(
        gov,
        [checkpoint],
        source_countries=["de"],
        evidenceOfPIC={"en": "PIC letter of 2025-02-01"},
        **extra,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def world(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """Both governments, their cases, and an admin JWT."""
    backend = str(request.param)
    skip_unless_backend(backend)
    tmp: Path = tmp_path_factory.mktemp(f"authz-{backend}")
    with SmtpSink(maildir=tmp / "mail") as smtp:
        async with module_stack(kafka=kafka_bootstrap, backend=backend, tmp=tmp, smtp=smtp) as (
            stack,
            prefix,
        ):
            admin = await create_user(stack.registry, ADMIN_TOKEN, "admin")
            made = {gov: await _government(stack, gov) for gov in SIDES.values()}
            # directory records: 2 x (NFP, CNA, two checkpoints)
            directory = topic_name(Topic.DIRECTORY, prefix)
            await eventually(
                lambda: _consumed_at_least(stack.checkpoint, directory, 8),
                timeout=30,
                what="the checkpoint service knows every checkpoint",
            )
            cases: dict[str, str] = {}
            for provider, user in ((OWN, OTHER), (OTHER, OWN)):
                operator = made[user]["users"]["checkpoint"]
                body = communique(
                    user, [made[user]["checkpoints"][0]], irccs=[made[provider]["ircc"]]
                )
                resp = await stack.checkpoint.post(
                    "/v1/communiques", json=body, headers=auth(operator)
                )
                assert resp.status_code == 201, resp.text
                cases[provider] = await eventually(
                    partial(_case_of, stack, admin, provider),
                    timeout=30,
                    what=f"a case with provider {provider}",
                )
            govs = {
                gov: Government(
                    tokens=made[gov]["users"] | {"admin": admin},
                    checkpoint=made[gov]["checkpoints"][0],
                    second_checkpoint=made[gov]["checkpoints"][1],
                    ircc_uid=made[gov]["ircc_uid"],
                    case_id=cases[gov],
                )
                for gov in SIDES.values()
            }
            for gov in govs.values():
                await eventually(
                    partial(_delivered, stack, admin, gov.ircc_uid),
                    timeout=30,
                    what="deliveries about the IRCC",
                )
            yield World(stack, admin, govs)


async def _consumed_at_least(client: httpx.AsyncClient, topic: str, count: int) -> bool:
    return await consumed(client, "checkpoint", topic) >= count


async def _case_of(stack: Stack, admin: str, provider: str) -> str | None:
    resp = await stack.monitor.get(
        "/v1/discrepancies",
        params={"provider": provider, "rule": "IRCC_REVOKED"},
        headers=auth(admin),
    )
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    return str(items[0]["id"]) if items else None


async def _delivered(stack: Stack, admin: str, uid: str) -> bool:
    resp = await stack.notifier.get("/v1/deliveries", params={"subject": uid}, headers=auth(admin))
    assert resp.status_code == 200, resp.text
    return bool(resp.json())


# ---------------------------------------------------------------- helpers


async def case_status(world: World, case_id: str) -> str:
    """A case's status, as the admin sees it."""
    resp = await world.stack.monitor.get(f"/v1/discrepancies/{case_id}", headers=auth(world.admin))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["status"])


async def prepare_case(world: World, case_id: str, action: str) -> str:
    """Put the case, as the admin, in a status from which ``action`` applies."""
    status = await case_status(world, case_id)
    fix = None
    if action in {"acknowledge", "resolve"} and status != "open":
        fix = "reopen"
    elif action == "reopen" and status == "open":
        fix = "acknowledge"
    if fix:
        resp = await world.stack.monitor.post(
            f"/v1/discrepancies/{case_id}/{fix}", json={"note": "reset"}, headers=auth(world.admin)
        )
        assert resp.status_code == 200, resp.text
        status = str(resp.json()["status"])
    return status


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize(("endpoint", "role", "side", "expected"), matrix_cells(MATRIX))
async def test_endpoints_by_role_and_government(
    world: World, endpoint: str, role: str, side: str, expected: str
) -> None:
    stack, target = world.stack, world.govs[SIDES[side]]
    caller = auth(world.token(role))
    status, _, listed = expected.partition(":")

    if endpoint.startswith("submit"):
        point = target.second_checkpoint if endpoint == "submit:cp2" else target.checkpoint
        body = _cpc(SIDES[side], point)
        resp = await stack.checkpoint.post("/v1/communiques", json=body, headers=caller)
        if status == "201":
            assert resp.status_code == 201, resp.text
            public = await stack.checkpoint.get(f"/v1/communiques/{resp.json()['uid']}")
            assert public.status_code == 200, public.text
        else:
            assert_problem(resp, int(status))
            ident = body["header"]["identifier"]
            assert (await stack.checkpoint.get(f"/v1/communiques/{ident}")).status_code == 404

    elif endpoint == "deliveries":
        resp = await stack.notifier.get(
            "/v1/deliveries", params={"subject": target.ircc_uid}, headers=caller
        )
        assert resp.status_code == int(status), resp.text
        assert bool(resp.json()) is (listed == "1"), resp.json()
        if role != "admin":  # never another government's recipients
            assert {row["government"] for row in resp.json()} <= {OWN}, resp.json()

    elif endpoint == "list":
        resp = await stack.monitor.get(
            "/v1/discrepancies", params={"provider": SIDES[side]}, headers=caller
        )
        assert resp.status_code == int(status), resp.text
        ids = {item["id"] for item in resp.json()["items"]}
        assert (target.case_id in ids) is (listed == "1"), ids

    elif endpoint == "get":
        resp = await stack.monitor.get(f"/v1/discrepancies/{target.case_id}", headers=caller)
        if status == "200":
            assert resp.status_code == 200, resp.text
            assert resp.json()["id"] == target.case_id
        else:
            assert_problem(resp, int(status))

    else:
        before = await prepare_case(world, target.case_id, endpoint)
        resp = await stack.monitor.post(
            f"/v1/discrepancies/{target.case_id}/{endpoint}",
            json={"note": "checked with the user"},
            headers=caller,
        )
        after = await case_status(world, target.case_id)
        if status == "200":
            assert resp.status_code == 200, resp.text
            wanted = {"acknowledge": "acknowledged", "resolve": "resolved", "reopen": "open"}
            assert resp.json()["status"] == after == wanted[endpoint]
        else:
            assert_problem(resp, int(status))
            assert after == before


async def test_a_refused_submitter_learns_nothing_about_the_body(world: World) -> None:
    """Roles that never submit are refused before validation (no validation oracle)."""
    for role in ("admin", "nfp", "cna"):
        resp = await world.stack.checkpoint.post(
            "/v1/communiques", json={"not": "a communiqué"}, headers=auth(world.token(role))
        )
        assert_problem(resp, 403)


# ---------------------------------------------------------------- deliveries by side


async def test_a_cpc_delivery_log_shows_each_government_its_own_side(world: World) -> None:
    """The CPC of ``br`` citing ``mx``'s IRCC mailed both sides: ``br``'s CNA (its
    checkpoint informs all CNAs), ``mx``'s CNA and NFP (for the CPC and for its
    discrepancy). Each government's authorities list their own recipients only, checkpoint
    operators none, the admin all."""
    stack = world.stack
    case = await stack.monitor.get(
        f"/v1/discrepancies/{world.govs[OWN].case_id}", headers=auth(world.admin)
    )
    assert case.status_code == 200, case.text
    subject = case.json()["cpc_uid"]

    async def listed(token: str) -> list[dict[str, Any]]:
        resp = await stack.notifier.get(
            "/v1/deliveries", params={"subject": subject}, headers=auth(token)
        )
        assert resp.status_code == 200, resp.text
        rows: list[dict[str, Any]] = resp.json()
        return rows

    async def both_events() -> list[dict[str, Any]] | None:
        rows = await listed(world.admin)
        done = {row["template"] for row in rows} == {"cpc_published", "discrepancy_flagged"}
        return rows if done else None

    everyone = await eventually(both_events, timeout=30, what="the CPC's and its case's mails")
    mailed = {
        gov: {(row["event_id"], row["recipient"]) for row in everyone if row["government"] == gov}
        for gov in SIDES.values()
    }
    assert {row["government"] for row in everyone} == {OWN, OTHER}
    assert {rcpt for _, rcpt in mailed[OWN]} == {f"cna@{OWN}.example", f"nfp@{OWN}.example"}
    assert {rcpt for _, rcpt in mailed[OTHER]} == {f"cna@{OTHER}.example"}
    for gov in SIDES.values():
        for role in ("nfp", "pa", "nau", "cna", "checkpoint"):
            rows = await listed(world.govs[gov].tokens[role])
            seen = {(row["event_id"], row["recipient"]) for row in rows}
            assert seen == (set() if role == "checkpoint" else mailed[gov]), (gov, role)


# ---------------------------------------------------------------- the dashboard

# GET /v1/dashboard/summary by caller ("none": no token). Its numbers span every
# government (cases by provider country, event rates, failures), so dashboard operators
# and the Secretariat only; every government role gets 403.
DASHBOARD = {
    "none": 401,
    "admin": 200,
    "operator": 200,
    "nfp": 403,
    "pa": 403,
    "nau": 403,
    "cna": 403,
    "checkpoint": 403,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def operator(world: World) -> str:
    """A dashboard operator's token, created by the admin (no government)."""
    return await create_user(world.stack.registry, world.admin, "operator")


@pytest.mark.parametrize(("caller", "expected"), list(DASHBOARD.items()))
async def test_dashboard_summary_by_role(
    world: World, operator: str, caller: str, expected: int
) -> None:
    headers: dict[str, str] = {}
    if caller != "none":
        headers = auth(operator if caller == "operator" else world.token(caller))
    resp = await world.stack.monitor.get("/v1/dashboard/summary", headers=headers)
    if expected == 200:
        assert resp.status_code == 200, resp.text
        assert sum(resp.json()["by_status"].values()) >= len(SIDES)  # both governments' cases
    else:
        problem = assert_problem(resp, expected)
        assert "by_status" not in problem


async def test_the_dashboard_page_holds_no_data_and_its_script_sends_the_token(
    world: World, operator: str
) -> None:
    """A browser can't send a bearer token when navigating: the page is the same shell for
    everyone, and its script sends the token the operator types in with each data call."""
    anonymous = await world.stack.monitor.get("/dashboard")
    signed_in = await world.stack.monitor.get("/dashboard", headers=auth(operator))
    assert anonymous.status_code == signed_in.status_code == 200
    assert anonymous.text == signed_in.text
    page = anonymous.text
    assert all(gov.case_id not in page for gov in world.govs.values())
    assert 'headers: {"Authorization": "Bearer " + token}' in page
    assert "sessionStorage" in page
    assert 'type="password"' in page


async def test_an_operator_reads_the_dashboard_and_nothing_else(
    world: World, operator: str
) -> None:
    stack, own, headers = world.stack, world.govs[OWN], auth(operator)
    cases = await stack.monitor.get("/v1/discrepancies", headers=headers)
    assert cases.status_code == 200, cases.text
    assert cases.json()["items"] == []
    case = await stack.monitor.get(f"/v1/discrepancies/{own.case_id}", headers=headers)
    assert_problem(case, 404)
    acknowledged = await stack.monitor.post(
        f"/v1/discrepancies/{own.case_id}/acknowledge", json={"note": "x"}, headers=headers
    )
    assert_problem(acknowledged, 404)
    deliveries = await stack.notifier.get(
        "/v1/deliveries", params={"subject": own.ircc_uid}, headers=headers
    )
    assert deliveries.status_code == 200, deliveries.text
    assert deliveries.json() == []
    submitted = await stack.checkpoint.post(
        "/v1/communiques", json=_cpc(OWN, own.checkpoint), headers=headers
    )
    assert_problem(submitted, 403)
    user = {"name": "x", "email": "x@scbd.example", "role": "operator"}
    assert_problem(await stack.registry.post("/v1/users", json=user, headers=headers), 403)


# ---------------------------------------------------------------- metrics


async def test_metrics_are_served_on_the_metrics_listener_only(world: World) -> None:
    """``/metrics`` is 404 on every public port; each service's own listener serves it."""
    for name in ("registry", "checkpoint", "notifier", "monitor"):
        client: httpx.AsyncClient = getattr(world.stack, name)
        public = await client.get("/metrics")
        assert public.status_code == 404, (name, public.text)
        assert "absch_" not in public.text
        text = await scrape(client)
        assert f'absch_ready{{check="database",service="{name}"}}' in text, name


# ---------------------------------------------------------------- tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _flip(text: str, index: int) -> str:
    """``text`` with the character at ``index`` replaced by another base64url one."""
    char = "A" if text[index] != "A" else "B"
    return text[:index] + char + text[index + 1 :]


def forged(world: World, kind: str) -> dict[str, str]:
    """Headers carrying a credential of ``kind`` that every service must refuse."""
    genuine = world.token("pa")
    claims = jwt.decode(genuine, options={"verify_signature": False})
    key, kid, now = world.key, world.key.kid, int(time.time())
    head, payload, signature = genuine.split(".")

    def signed(changed: dict[str, Any], drop: tuple[str, ...] = ()) -> str:
        body = {k: v for k, v in (claims | changed).items() if k not in drop}
        return jwt.encode(body, key.private, algorithm="EdDSA", headers={"kid": kid})

    tokens: dict[str, str] = {
        "expired": signed({"iat": now - 7200, "exp": now - 60}),
        "tampered-signature": f"{head}.{payload}.{_flip(signature, len(signature) // 2)}",
        "tampered-claims": ".".join(
            [head, _b64(json.dumps(claims | {"role": "admin"}).encode()), signature]
        ),
        "other-key": jwt.encode(
            claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
        ),
        "other-key-unknown-kid": jwt.encode(
            claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "f" * 16}
        ),
        "alg-none": jwt.encode(claims, "", algorithm="none", headers={"kid": kid}),
        "hs256-with-public-key": _hs256_with_public_key(claims, key, kid),
        "wrong-issuer": signed({"iss": "someone-else"}),
        "no-expiry": signed({}, drop=("exp",)),
        "unknown-role": signed({"role": "superuser"}),
        "not-yet-valid": signed({"nbf": now + 3600}),
    }
    if kind == "none":
        return {}
    return auth(tokens[kind])


def _hs256_with_public_key(claims: dict[str, Any], key: SigningKey, kid: str) -> str:
    """Algorithm confusion: an HMAC keyed with the (public) verification key."""
    pem = key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


CREDENTIALS = {
    "none": "missing bearer token",
    "expired": "token expired",
    "tampered-signature": "invalid token",
    "tampered-claims": "invalid token",
    "other-key": "invalid token",
    "other-key-unknown-kid": "token signed by an unknown key",
    "alg-none": "invalid token",
    "hs256-with-public-key": "invalid token",
    "wrong-issuer": "invalid token",
    "no-expiry": "invalid token",
    "unknown-role": "invalid token",
    "not-yet-valid": "invalid token",
}
# Kinds the registry's own test does not cover (it has none, expired, alg none, other keys).
REGISTRY_KINDS = (
    "tampered-signature",
    "tampered-claims",
    "hs256-with-public-key",
    "wrong-issuer",
    "no-expiry",
    "unknown-role",
    "not-yet-valid",
)
ENDPOINTS = {
    "checkpoint-submit": ("checkpoint", "POST", "/v1/communiques"),
    "notifier-deliveries": ("notifier", "GET", "/v1/deliveries?subject={ircc}"),
    "monitor-list": ("monitor", "GET", "/v1/discrepancies"),
    "monitor-get": ("monitor", "GET", "/v1/discrepancies/{case}"),
    "monitor-acknowledge": ("monitor", "POST", "/v1/discrepancies/{case}/acknowledge"),
    "monitor-dashboard": ("monitor", "GET", "/v1/dashboard/summary"),
    "registry-requests": ("registry", "GET", "/v1/requests"),
    "registry-users": ("registry", "POST", "/v1/users"),
}


def token_cells() -> list[Any]:
    """(endpoint, kind) pairs: every kind on the three services, new kinds on the registry."""
    return [
        pytest.param(endpoint, kind, id=f"{endpoint}-{kind}")
        for endpoint, (service, _, _) in ENDPOINTS.items()
        for kind in CREDENTIALS
        if service != "registry" or kind in REGISTRY_KINDS
    ]


async def _request(world: World, endpoint: str, headers: dict[str, str]) -> httpx.Response:
    service, method, path = ENDPOINTS[endpoint]
    own = world.govs[OWN]
    client: httpx.AsyncClient = getattr(world.stack, service)
    url = path.format(ircc=own.ircc_uid, case=own.case_id)
    body: dict[str, Any] | None = None
    if endpoint == "checkpoint-submit":
        body = _cpc(OWN, own.checkpoint)
    elif endpoint == "registry-users":
        body = {"name": "x", "email": f"x-{uuid.uuid4().hex[:6]}@mx.example", "role": "checkpoint"}
        body |= {"government": OWN, "checkpoint": own.checkpoint}
    return await client.request(method, url, json=body, headers=headers)


@pytest.mark.parametrize(("endpoint", "kind"), token_cells())
async def test_missing_or_forged_tokens_are_401(world: World, endpoint: str, kind: str) -> None:
    before = await case_status(world, world.govs[OWN].case_id)
    resp = await _request(world, endpoint, forged(world, kind))
    problem = assert_problem(resp, 401)
    assert problem["detail"] == CREDENTIALS[kind]
    assert resp.headers.get("www-authenticate") == "Bearer"
    assert await case_status(world, world.govs[OWN].case_id) == before


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_the_same_claims_signed_by_the_registry_are_accepted(
    world: World, endpoint: str
) -> None:
    """Control for the forged tokens: the PA's claims re-signed with the real key work."""
    claims = jwt.decode(world.token("pa"), options={"verify_signature": False})
    token = jwt.encode(claims, world.key.private, algorithm="EdDSA", headers={"kid": world.key.kid})
    await prepare_case(world, world.govs[OWN].case_id, "acknowledge")
    resp = await _request(world, endpoint, auth(token))
    # The PA submits and reads; it may not work cases or read the dashboard (403), which
    # still proves the token.
    expected = {
        "monitor-acknowledge": 403,
        "monitor-dashboard": 403,
        "checkpoint-submit": 201,
        "registry-users": 201,
    }
    assert resp.status_code == expected.get(endpoint, 200), resp.text


# ---------------------------------------------------------------- deactivated users


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_a_deactivated_users_token_is_401_on_every_endpoint(
    world: World, endpoint: str
) -> None:
    """A fresh PA of ``mx``, deactivated by its NFP: the token that got in before is 401
    ``user is deactivated`` at once in the registry, and elsewhere as soon as the service
    read the event on the directory topic (well under a minute)."""
    body = {"name": "PA to deactivate", "email": f"pa-{uuid.uuid4().hex[:6]}@mx.example"}
    body |= {"role": "pa", "government": OWN}
    try:
        await _deactivated_pa_is_refused(world, endpoint, body)
    finally:
        # Designating that PA replaced the world's own (one PA per government): give the
        # world a PA again, so no later cell depends on this one running last.
        world.govs[OWN].tokens["pa"] = await create_user(
            world.stack.registry, world.token("nfp"), "pa", OWN
        )


async def _deactivated_pa_is_refused(world: World, endpoint: str, body: dict[str, str]) -> None:
    resp = await world.stack.registry.post("/v1/users", json=body, headers=auth(world.token("nfp")))
    assert resp.status_code == 201, resp.text
    user_id, headers = resp.json()["id"], auth(resp.json()["token"])
    accepted = await _request(world, endpoint, headers)
    assert accepted.status_code != 401, accepted.text
    resp = await world.stack.registry.delete(
        f"/v1/users/{user_id}", headers=auth(world.token("nfp"))
    )
    assert resp.status_code == 204, resp.text

    async def refused() -> httpx.Response | None:
        resp = await _request(world, endpoint, headers)
        return resp if resp.status_code == 401 else None

    problem = assert_problem(
        await eventually(refused, timeout=45, what=f"{endpoint} refuses the token"), 401
    )
    assert problem["detail"] == DEACTIVATED
