"""Registry: who may deactivate whom, what a deactivation leaves behind, and tokens that
live hours and are renewed with the user's secret.

One registry per database backend serves the module (module-scoped fixture and event loop):
two governments, ``mx`` (the caller's own) and ``br`` (another), each with an NFP, PA, NAU,
CNA reader and checkpoint operator and a published checkpoint. Every matrix cell
deactivates a user created for it, so cells do not depend on each other. A government has
one PA [W1]: a PA created for a cell becomes the world's, and one deactivated is replaced.
That every other service refuses a deactivated user is
``tests/integration/test_user_deactivation.py``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pydantic
import pytest
import pytest_asyncio
from sqlalchemy import select

from services.registry.adapters.tables import CredentialRow, OutboxRow, UserRow
from services.registry.context import RegistryContext
from services.registry.settings import RegistrySettings
from shared.auth import DEACTIVATED
from shared.events import Topic, decode_event, topic_name
from tests.support import records as rec
from tests.support.authz import SIDES, assert_problem, matrix_cells
from tests.support.databases import BACKENDS, databases, skip_unless_backend
from tests.support.kafka import TopicReader
from tests.support.registry import (
    ADMIN_TOKEN,
    auth,
    create_user,
    government_users,
    publish,
    registry_settings,
    running_registry,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

# DELETE /v1/users/{id} of a fresh user of role R (rows) of the target government (cell =
# own/other), per caller role of "mx" (columns; the admin belongs to no government, so for
# it "own" and "other" are simply the two governments; an admin target has no government).
# Derivation (domain.check_can_deactivate_user, DESIGN.md §4): whoever designates a role
# deactivates it, within its own government; the admin deactivates anyone.
MATRIX = """
               admin    nfp      pa       nau      cna      checkpoint
deactivate:admin       204/204  403/403  403/403  403/403  403/403  403/403
deactivate:nfp         204/204  403/403  403/403  403/403  403/403  403/403
deactivate:pa          204/204  204/403  403/403  403/403  403/403  403/403
deactivate:nau         204/204  204/403  403/403  403/403  403/403  403/403
deactivate:cna         204/204  204/403  403/403  403/403  403/403  403/403
deactivate:checkpoint  204/204  403/403  204/403  403/403  403/403  403/403
"""


@dataclass
class World:
    """The running registry, its topic prefix and both governments' users."""

    client: httpx.AsyncClient
    prefix: str
    kafka: str
    tokens: dict[str, dict[str, str]]  # government -> role -> token (admin in both)
    checkpoint: dict[str, str]  # government -> published checkpoint identifier
    pa_ids: dict[str, str]  # government -> id of its (one) publishing authority

    @property
    def ctx(self) -> RegistryContext:
        """The registry's context (its database sessions)."""
        ctx: RegistryContext = self.client.app.state.ctx  # type: ignore[attr-defined]
        return ctx

    def token(self, role: str, gov: str = "mx") -> str:
        """Token of ``role`` in ``gov``."""
        return self.tokens[gov][role]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def world(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    """One registry with both governments' users and a checkpoint each."""
    backend = str(request.param)
    skip_unless_backend(backend)
    tmp = tmp_path_factory.mktemp(f"deactivation-{backend}")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    async with databases(backend, tmp) as make:
        settings = registry_settings(
            kafka=kafka_bootstrap, prefix=prefix, db=await make("registry"), tmp=tmp
        )
        async with running_registry(settings) as client:
            tokens: dict[str, dict[str, str]] = {}
            checkpoints: dict[str, str] = {}
            for gov in SIDES.values():
                users = await government_users(client, gov)
                point = rec.checkpoint(gov)
                await publish(client, users["pa"], point)
                ident = point["header"]["identifier"]
                users["checkpoint"] = await create_user(
                    client, users["pa"], "checkpoint", gov, checkpoint=ident
                )
                users["admin"] = ADMIN_TOKEN
                tokens[gov] = users
                checkpoints[gov] = ident
            pa_ids = {
                gov: str(jwt.decode(users["pa"], options={"verify_signature": False})["sub"])
                for gov, users in tokens.items()
            }
            yield World(client, prefix, kafka_bootstrap, tokens, checkpoints, pa_ids)


# ---------------------------------------------------------------- helpers


CREATOR = {"admin": "admin", "nfp": "admin", "pa": "nfp", "nau": "nfp", "cna": "nfp"}
CREATOR["checkpoint"] = "pa"


async def new_user(world: World, role: str, gov: str = "mx") -> dict[str, Any]:
    """A fresh user of ``role`` in ``gov``, created by its designating role: the whole
    ``POST /v1/users`` answer (id, token, expires_at, secret)."""
    body: dict[str, Any] = {
        "name": f"{role} to deactivate",
        "email": f"{role}-{uuid.uuid4().hex[:6]}@{gov}.example",
        "role": role,
        "government": None if role == "admin" else gov,
    }
    if role == "checkpoint":
        body["checkpoint"] = world.checkpoint[gov]
    creator = world.token(CREATOR[role], gov)
    resp = await world.client.post("/v1/users", json=body, headers=auth(creator))
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    if role == "pa":  # it replaced the government's PA [W1]: it is the world's now
        world.tokens[gov]["pa"], world.pa_ids[gov] = created["token"], created["id"]
    return created


async def deactivate(world: World, caller: str, user_id: str) -> httpx.Response:
    """``DELETE /v1/users/{user_id}`` as ``caller`` (a token). A government whose PA this
    deactivates gets a new one, for the cells that follow."""
    resp = await world.client.delete(f"/v1/users/{user_id}", headers=auth(caller))
    for gov, pa_id in list(world.pa_ids.items()):
        if pa_id == user_id and resp.status_code == 204:
            await new_user(world, "pa", gov)
    return resp


async def authenticated(world: World, token: str) -> httpx.Response:
    """A request any authenticated user may make (``GET /v1/notifications``)."""
    return await world.client.get("/v1/notifications", headers=auth(token))


async def is_active(world: World, user_id: str) -> bool:
    """``users.active`` of a user."""
    async with world.ctx.sessions() as session:
        active = await session.scalar(select(UserRow.active).where(UserRow.id == user_id))
    assert active is not None, f"no user {user_id}"
    return bool(active)


async def staged_deactivations(world: World, user_id: str) -> list[dict[str, Any]]:
    """Data of the ``directory.user.deactivated`` events staged for ``user_id``."""
    async with world.ctx.sessions() as session:
        rows = (await session.scalars(select(OutboxRow).where(OutboxRow.key == user_id))).all()
    events = [decode_event(row.payload.encode()) for row in rows]
    return [
        e.data.model_dump(mode="json") for e in events if e.type == "directory.user.deactivated"
    ]


# ---------------------------------------------------------------- who may deactivate whom


@pytest.mark.parametrize(("endpoint", "role", "side", "expected"), matrix_cells(MATRIX))
async def test_deactivation_by_role_and_government(
    world: World, endpoint: str, role: str, side: str, expected: str
) -> None:
    gov = SIDES[side]
    target = await new_user(world, endpoint.partition(":")[2], gov)
    resp = await deactivate(world, world.token(role), target["id"])
    if expected == "204":
        assert resp.status_code == 204, resp.text
        assert resp.content == b""
        assert not await is_active(world, target["id"])
        problem = assert_problem(await authenticated(world, target["token"]), 401)
        assert problem["detail"] == DEACTIVATED, "the registry refuses at once"
        assert len(await staged_deactivations(world, target["id"])) == 1
    else:
        assert_problem(resp, int(expected))
        assert await is_active(world, target["id"])
        assert (await authenticated(world, target["token"])).status_code == 200
        assert await staged_deactivations(world, target["id"]) == []


@pytest.mark.parametrize("role", ["admin", "nfp", "pa"])
async def test_an_unknown_user_is_404(world: World, role: str) -> None:
    resp = await deactivate(world, world.token(role), "u-0000000000000000")
    assert "u-0000000000000000" in assert_problem(resp, 404)["detail"]


@pytest.mark.parametrize("role", ["nau", "cna", "checkpoint"])
async def test_roles_that_designate_nobody_are_403_before_any_lookup(
    world: World, role: str
) -> None:
    """No existence oracle: the same 403 for an unknown id as for a known one."""
    known = await new_user(world, "pa")
    for user_id in ("u-0000000000000000", known["id"]):
        assert_problem(await deactivate(world, world.token(role), user_id), 403)
    assert await is_active(world, known["id"])


@pytest.mark.parametrize("user_id", ["u 1", "x" * 65, "u-1;drop"])
async def test_an_impossible_id_is_422_naming_it(world: World, user_id: str) -> None:
    resp = await world.client.delete(f"/v1/users/{quote(user_id)}", headers=auth(ADMIN_TOKEN))
    problem = assert_problem(resp, 422)
    assert [e["field"] for e in problem["errors"]] == ["user_id"], problem


async def test_without_a_token_it_is_401(world: World) -> None:
    target = await new_user(world, "pa")
    assert_problem(await world.client.delete(f"/v1/users/{target['id']}"), 401)
    assert await is_active(world, target["id"])


async def test_a_deactivated_user_cannot_deactivate_anyone(world: World) -> None:
    pa = await new_user(world, "pa")
    operator_body = {
        "name": "op",
        "email": f"op-{uuid.uuid4().hex[:6]}@mx.example",
        "role": "checkpoint",
        "government": "mx",
        "checkpoint": world.checkpoint["mx"],
    }
    resp = await world.client.post("/v1/users", json=operator_body, headers=auth(pa["token"]))
    assert resp.status_code == 201, resp.text
    operator = resp.json()
    assert (await deactivate(world, world.token("nfp"), pa["id"])).status_code == 204
    assert_problem(await deactivate(world, pa["token"], operator["id"]), 401)
    assert await is_active(world, operator["id"])


# ---------------------------------------------------------------- what it leaves behind


async def test_a_repeat_is_204_and_announces_nothing_new(world: World) -> None:
    target = await new_user(world, "nau")
    for _ in range(3):
        resp = await deactivate(world, world.token("nfp"), target["id"])
        assert resp.status_code == 204, resp.text
    (data,) = await staged_deactivations(world, target["id"])
    assert data["user_id"] == target["id"]


async def test_the_event_carries_the_id_and_the_time_only(world: World) -> None:
    target = await new_user(world, "cna")
    before = world.ctx.clock()
    assert (await deactivate(world, world.token("nfp"), target["id"])).status_code == 204
    topic = topic_name(Topic.DIRECTORY, world.prefix)
    async with TopicReader(world.kafka, topic) as reader:

        def out(events: list[Any]) -> bool:
            return any(e.subject == target["id"] for e in events)

        events = await reader.read_until(out, timeout=30)
    index = next(i for i, e in enumerate(events) if e.subject == target["id"])
    event, raw = events[index], reader.raw[index]
    assert (event.type, event.source) == ("directory.user.deactivated", "/absch/registry")
    assert raw.key.decode() == target["id"]
    data = event.data.model_dump(mode="json")
    assert set(data) == {"user_id", "deactivated_at"}
    assert data["user_id"] == target["id"]
    assert datetime.fromisoformat(data["deactivated_at"]) >= before
    for personal in ("@", "to deactivate", "cna", "mx"):
        assert personal not in raw.value.decode().replace(target["id"], ""), personal


# ---------------------------------------------------------------- tokens and secrets


async def test_tokens_live_the_configured_hours(world: World) -> None:
    created = await new_user(world, "nau")
    claims = jwt.decode(created["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 8 * 3600
    assert datetime.fromisoformat(created["expires_at"]).timestamp() == pytest.approx(
        claims["exp"], abs=1
    )


async def test_the_lifetime_is_hours_and_at_most_a_day() -> None:
    assert RegistrySettings(token_ttl_hours=24).token_ttl_hours == 24
    for hours in (0, 25, 24 * 30):
        with pytest.raises(pydantic.ValidationError, match="token_ttl_hours"):
            RegistrySettings(token_ttl_hours=hours)


async def test_the_secret_gets_a_fresh_token_and_is_stored_only_as_its_digest(
    world: World,
) -> None:
    created = await new_user(world, "nau")
    resp = await world.client.post("/v1/tokens", json={"secret": created["secret"]})
    assert resp.status_code == 200, resp.text
    fresh = resp.json()
    assert fresh["token_type"] == "Bearer"
    assert fresh["token"] != created["token"]
    claims = jwt.decode(fresh["token"], options={"verify_signature": False})
    assert (claims["sub"], claims["role"], claims["gov"]) == (created["id"], "nau", "mx")
    assert claims["exp"] - claims["iat"] == 8 * 3600
    assert (await authenticated(world, fresh["token"])).status_code == 200

    async with world.ctx.sessions() as session:
        row = await session.get(CredentialRow, created["id"])
    assert row is not None
    assert row.secret_sha256 == hashlib.sha256(created["secret"].encode()).hexdigest()
    assert created["secret"] not in row.secret_sha256


@pytest.mark.parametrize(
    ("secret", "status"),
    [
        pytest.param("A" * 43, 401, id="unknown"),
        pytest.param("short", 422, id="too-short"),
        pytest.param("x" * 129, 422, id="too-long"),
        pytest.param("not a secret at all, spaces", 422, id="not-urlsafe"),
    ],
)
async def test_a_wrong_secret_is_refused_naming_it(world: World, secret: str, status: int) -> None:
    resp = await world.client.post("/v1/tokens", json={"secret": secret})
    problem = assert_problem(resp, status)
    assert [e["field"] for e in problem["errors"]] == ["secret"], problem


async def test_a_deactivated_users_secret_is_refused(world: World) -> None:
    created = await new_user(world, "checkpoint")
    assert (await world.client.post("/v1/tokens", json={"secret": created["secret"]})).is_success
    assert (await deactivate(world, world.token("pa"), created["id"])).status_code == 204
    resp = await world.client.post("/v1/tokens", json={"secret": created["secret"]})
    problem = assert_problem(resp, 401)
    assert problem["detail"] == DEACTIVATED
    assert [e["field"] for e in problem["errors"]] == ["secret"]


async def test_a_token_issued_before_deactivation_is_refused_too(world: World) -> None:
    """Every token of the user, not just the first one, stops working."""
    created = await new_user(world, "pa")
    resp = await world.client.post("/v1/tokens", json={"secret": created["secret"]})
    renewed = resp.json()["token"]
    assert (await deactivate(world, world.token("nfp"), created["id"])).status_code == 204
    for token in (created["token"], renewed):
        assert assert_problem(await authenticated(world, token), 401)["detail"] == DEACTIVATED
    assert (await authenticated(world, world.token("nfp"))).status_code == 200, "others work"
