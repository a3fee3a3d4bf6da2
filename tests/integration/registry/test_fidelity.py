"""Registry fidelity to the real clearing-house (issue 14), through HTTP with the real
stack (the embedded broker, SQLite and PostgreSQL), one test per point of the issue:

2. a revoked IRCC reads revoked in every revision, old ones included, with reason and date;
3. drafts may be incomplete: saving checks the shape, publishing checks everything, and
   ``POST /v1/records/{schema}/validate`` answers the ABSCH way (``{errors: [{code,
   property}]}``), the same list a refused publication carries;
4. a record without a government, or with one the system does not know, is a 422 naming
   it; 403 stays for a record of another government;
7. one publishing authority per government (a new one replaces the old, whose tokens stop
   working everywhere); an NFP drafts but does not publish; the Secretariat reads a
   government's drafts only through the audit endpoint, and each reading is logged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import DeclarativeBase

from shared.auth import DEACTIVATED, TokenVerifier
from shared.events import Topic, topic_name
from shared.http import ProblemError
from shared.kit.assemble import Kit
from shared.metrics import PlumbingMetrics
from shared.records.common import MAX_RECORD_BYTES
from shared.settings import ServiceSettings
from tests.support.authz import assert_problem
from tests.support.kafka import TopicReader
from tests.support.poll import eventually
from tests.support.records import authority, checkpoint, contact, permit
from tests.support.registry import (
    ADMIN_TOKEN,
    auth,
    government_users,
    publish,
    registry_settings,
    running_registry,
)

DbUrl = Callable[[str], Awaitable[str]]
AUDIT_LOGGER = "services.registry.handlers.audit"


class Clock:
    """A clock that stands still until moved (revocation dates are then exact)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move on by ``timedelta(**delta)``."""
        self.now += timedelta(**delta)


@dataclass
class World:
    """A running registry with Mexico's NFP, PA, NAU and CNA reader and its published CNA."""

    client: httpx.AsyncClient
    users: dict[str, str]
    cna: str
    clock: Clock
    kafka: str
    prefix: str
    db_url: DbUrl


@pytest.fixture
async def world(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbUrl, tmp_path: Path
) -> AsyncIterator[World]:
    """A fresh registry per test, on each database backend."""
    clock = Clock()
    settings = registry_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("registry"), tmp=tmp_path
    )
    async with running_registry(settings, clock=clock) as client:
        users = await government_users(client, "mx")
        cna = authority("mx", ["cna@mx.example"])
        await publish(client, users["pa"], cna)
        yield World(
            client,
            users,
            cna["header"]["identifier"],
            clock,
            kafka_bootstrap,
            topic_prefix,
            db_url,
        )


def url_of(record: dict[str, Any]) -> str:
    """``/v1/records/{schema}/{identifier}``."""
    return f"/v1/records/{record['header']['schema']}/{record['header']['identifier']}"


async def save(w: World, token: str, record: dict[str, Any]) -> httpx.Response:
    """PUT a draft."""
    return await w.client.put(url_of(record), json=record, headers=auth(token))


async def publish_draft(w: World, token: str, record: dict[str, Any]) -> httpx.Response:
    """POST .../publish of the saved draft."""
    return await w.client.post(f"{url_of(record)}/publish", headers=auth(token))


async def validate(w: World, token: str, schema: str, body: dict[str, Any]) -> httpx.Response:
    """POST /v1/records/{schema}/validate."""
    return await w.client.post(f"/v1/records/{schema}/validate", json=body, headers=auth(token))


async def report(w: World, token: str, schema: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """The validation report of ``body`` as ``(code, property)`` pairs."""
    resp = await validate(w, token, schema, body)
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"errors"}
    return [(e["code"], e["property"]) for e in resp.json()["errors"]]


def refusal(resp: httpx.Response) -> list[tuple[str, str]]:
    """The ``validation`` list of a 422 problem, as ``(code, property)`` pairs; its
    ``errors`` name the same fields in the same order."""
    problem = assert_problem(resp, 422)
    pairs = [(v["code"], v["property"]) for v in problem["validation"]]
    assert [e["field"] for e in problem["errors"]] == [p for _, p in pairs], problem
    return pairs


# ---------------------------------------------------------------- point 2


async def test_a_revoked_ircc_reads_revoked_in_every_revision_with_reason_and_date(
    world: World,
) -> None:
    client, pa = world.client, world.users["pa"]
    ircc = permit("mx", world.cna)
    ident = ircc["header"]["identifier"]
    first = (await publish(client, pa, ircc))["uid"]
    permanent = first.rsplit("-", 1)[0]
    amended = ircc | {"amendmentDescription": {"en": "typo"}, "title": {"en": "Permit 2"}}
    second = (await publish(client, pa, amended))["uid"]
    # Before the revocation the first revision is an old version, nothing revoked.
    old = (await client.get(f"/v1/records/{first}")).json()
    assert (old["status"], old["revocation"]) == ("old-version", None)
    history = (await client.get(f"/v1/records/{permanent}/revisions")).json()
    assert [(h["status"], h["revocation"]) for h in history] == [
        ("old-version", None),
        ("current", None),
    ]

    world.clock.advance(hours=2)
    reason = {"en": "The permit was obtained without PIC", "fr": "Permis obtenu sans PIC"}
    resp = await client.post(
        f"/v1/records/absPermit/{ident}/revoke", json={"reason": reason}, headers=auth(pa)
    )
    assert resp.status_code == 200, resp.text
    third = resp.json()["uid"]
    revocation = {"reason": reason, "revokedAt": world.clock.now, "uid": third}

    for ref, revision in (
        (first, 1),
        (second, 2),
        (third, 3),
        (permanent, 3),
        (f"{ident}@1", 1),
        (ident, 3),
        (permanent.rsplit("-", 1)[1], 3),  # the documentID
    ):
        view = (await client.get(f"/v1/records/{ref}")).json()
        assert (view["revision"], view["status"]) == (revision, "revoked"), ref
        got = view["revocation"]
        got["revokedAt"] = datetime.fromisoformat(got["revokedAt"])
        assert got == revocation, ref
    assert (await client.get(f"/v1/records/{first}")).json()["record"]["title"] == ircc["title"]

    history = (await client.get(f"/v1/records/{first}/revisions")).json()
    assert [(h["revision"], h["label"], h["status"]) for h in history] == [
        (1, "OLD VERSION", "revoked"),
        (2, "OLD VERSION", "revoked"),
        (3, "REVOKED", "revoked"),
    ]
    for entry in history:
        entry["revocation"]["revokedAt"] = datetime.fromisoformat(entry["revocation"]["revokedAt"])
        assert entry["revocation"] == revocation
    assert (await client.get(f"/v1/verify/{first}")).json()["status"] == "revoked"

    # Another IRCC, never revoked, says nothing of a revocation.
    other = (await publish(client, pa, permit("mx", world.cna)))["uid"]
    assert (await client.get(f"/v1/records/{other}")).json()["revocation"] is None


# ---------------------------------------------------------------- point 3


async def test_drafts_may_be_incomplete_publication_checks_everything(world: World) -> None:
    client, pa, nau = world.client, world.users["pa"], world.users["nau"]
    ircc = permit("mx", world.cna, picGranted=False)
    del ircc["title"], ircc["dateOfIssuance"]
    ident = ircc["header"]["identifier"]

    # Saved as it is: an incomplete draft, PIC not (yet) granted.
    resp = await save(world, pa, ircc)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "draft"
    assert resp.json()["record"]["picGranted"] is False
    assert "title" not in resp.json()["record"]

    expected = [
        ("Error.Mandatory", "title"),
        ("Error.Mandatory", "dateOfIssuance"),
        ("Error.InvalidValue", "picGranted"),
    ]
    assert await report(world, pa, "absPermit", ircc) == expected
    assert refusal(await publish_draft(world, pa, ircc)) == expected
    assert refusal(await publish_draft(world, nau, ircc)) == expected  # no request either
    assert_problem(await client.get(f"/v1/records/{ident}"), 404)
    assert (await client.get("/v1/requests", headers=auth(pa))).json() == []

    # Cross-field and cross-record rules wait for publication too.
    foreign = authority("br", ["cna@br.example"])
    br = await government_users(client, "br")
    await publish(client, br["pa"], foreign)
    ircc |= {
        "title": {"en": "Permit"},
        "dateOfIssuance": "2025-01-15",
        "dateOfExpiry": "2024-01-01",
        "absCNA": {"identifier": foreign["header"]["identifier"]},
        "picGranted": True,
    }
    assert (await save(world, pa, ircc)).status_code == 200
    expected = [("Error.InvalidValue", "dateOfExpiry"), ("Error.InvalidValue", "absCNA")]
    assert await report(world, pa, "absPermit", ircc) == expected
    assert refusal(await publish_draft(world, pa, ircc)) == expected

    # The shape still holds for drafts: one-line text, types, languages, dates, size.
    shape: list[tuple[dict[str, Any], str, str]] = [
        ({"title": {"en": "Permit\nBcc: x@evil.example"}}, "Error.InvalidValue", "title.en"),
        ({"matEstablished": "yes"}, "Error.InvalidType", "matEstablished"),
        ({"title": {"xx": "Permit"}}, "Error.UnspecifiedLocale", "title"),
        ({"dateOfIssuance": "1800-01-01"}, "Error.InvalidValue", "dateOfIssuance"),
        ({"notes": "n" * 99_000, "extra": ["x" * 99_000] * 3}, "Error.InvalidValue", "<record>"),
    ]
    for change, code, field in shape:
        assert refusal(await save(world, pa, ircc | change)) == [(code, field)], change
    nul = await client.put(url_of(ircc), json=ircc | {"title": {"en": "a\x00b"}}, headers=auth(pa))
    assert "title.en" in [e["field"] for e in assert_problem(nul, 422)["errors"]]
    assert MAX_RECORD_BYTES < 4 * 99_000  # the oversize case above is over the bound

    # Complete and right: nothing to report, and it is published.
    ircc["absCNA"] = {"identifier": world.cna}
    del ircc["dateOfExpiry"]
    assert (await save(world, pa, ircc)).status_code == 200
    assert await report(world, pa, "absPermit", ircc) == []
    resp = await publish_draft(world, pa, ircc)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "published"

    # An update needs its reason; the report says so before the publication refuses.
    ircc["title"] = {"en": "Permit, corrected"}
    assert (await save(world, pa, ircc)).status_code == 200
    expected = [("Error.Mandatory", "amendmentDescription")]
    assert await report(world, pa, "absPermit", ircc) == expected
    assert refusal(await publish_draft(world, pa, ircc)) == expected
    ircc["amendmentDescription"] = {"en": "typo"}
    assert await report(world, pa, "absPermit", ircc) == []

    # The URL names the schema; the validation is the caller's government's business.
    point = checkpoint("mx")
    assert await report(world, pa, "authority", point) == [
        ("Error.InvalidValue", "header.schema"),
        ("Error.Mandatory", "city"),
        ("Error.Mandatory", "country"),
        ("Error.Mandatory", "phones"),
        ("Error.Mandatory", "emails"),
        ("Error.Mandatory", "responsibleForAll"),
    ]
    assert await report(world, nau, "absCheckpoint", point) == []
    for token in (br["pa"], world.users["cna"], ADMIN_TOKEN):
        assert_problem(await validate(world, token, "absCheckpoint", point), 403)
    assert_problem(await client.post("/v1/records/absCheckpoint/validate", json=point), 401)


# ---------------------------------------------------------------- point 4


async def test_a_missing_or_unknown_government_is_422_naming_it(world: World) -> None:
    client, pa = world.client, world.users["pa"]
    records = {
        "absPermit": permit("mx", world.cna),
        "authority": authority("mx", ["other@mx.example"]),
        "absCheckpoint": checkpoint("mx"),
    }
    cases: list[tuple[Any, str, str]] = [
        (None, "Error.Mandatory", "government"),
        ({}, "Error.Mandatory", "government"),
        ("mx", "Error.InvalidType", "government"),
        ({"identifier": "zz"}, "Error.UnexpectedTerm", "government.identifier"),
        ({"identifier": "MEX"}, "Error.InvalidValue", "government.identifier"),
    ]
    for schema, record in records.items():
        for government, code, field in cases:
            body = {k: v for k, v in record.items() if k != "government"}
            if government is not None:
                body["government"] = government
            # Whoever asks, even a role that edits nothing: the record is wrong first.
            for token in (pa, world.users["cna"]):
                assert refusal(await save(world, token, body)) == [(code, field)], (schema, body)
            assert (code, field) in await report(world, pa, schema, body)
            got = await client.get(
                f"/v1/records/{record['header']['identifier']}?draft=true", headers=auth(pa)
            )
            assert_problem(got, 404)
        # A real government, but another one: 403 as before.
        assert_problem(await save(world, pa, record | {"government": {"identifier": "br"}}), 403)
        assert (await save(world, pa, record)).status_code == 200, schema

    # A contact may go without (it is its author's government's); an unknown one is refused.
    loose = contact(["lab@de.example"])
    resp = await save(world, pa, loose)
    assert resp.status_code == 200, resp.text
    assert resp.json()["government"] == "mx"
    spoiled = contact(["lab@de.example"], gov="zz")
    assert refusal(await save(world, pa, spoiled)) == [
        ("Error.UnexpectedTerm", "government.identifier")
    ]


# ---------------------------------------------------------------- point 7


class _KitBase(DeclarativeBase):
    pass


class _KitSettings(ServiceSettings):
    service: str = "fidelity"


@pytest.fixture
async def another_service(world: World) -> AsyncIterator[TokenVerifier]:
    """What every other service checks tokens with: the kit's verifier, fed by the
    directory topic (``directory.user.deactivated``), in a service of its own."""
    settings = _KitSettings(
        database_url=await world.db_url("fidelity"),
        kafka_bootstrap=world.kafka,
        kafka_topic_prefix=world.prefix,
        kafka_fetch_max_wait_ms=100,
    )
    kit = Kit(settings, PlumbingMetrics(CollectorRegistry(), "fidelity"), _KitBase.metadata)
    verifier = kit.token_verifier(f"{world.client.base_url}/.well-known/jwks.json")
    async with kit.lifespan()(FastAPI()):
        yield verifier


async def refused_elsewhere(verifier: TokenVerifier, token: str) -> str | None:
    """The 401 detail another service answers ``token`` with, or None while it accepts it."""
    try:
        await verifier.verify(token)
    except ProblemError as exc:
        return exc.problem.detail
    return None


async def test_one_pa_nfp_drafts_only_and_the_secretariat_audits_drafts(
    world: World, another_service: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    client, users = world.client, world.users
    old_pa = users["pa"]
    old_pa_id = jwt.decode(old_pa, options={"verify_signature": False})["sub"]
    br = await government_users(client, "br")
    assert await refused_elsewhere(another_service, old_pa) is None

    # One publishing authority per government: the NFP's new PA replaces the old one.
    body = {"name": "New PA", "email": "pa2@mx.example", "role": "pa", "government": "mx"}
    resp = await client.post("/v1/users", json=body, headers=auth(users["nfp"]))
    assert resp.status_code == 201, resp.text
    new_pa = resp.json()["token"]
    problem = assert_problem(await client.get("/v1/notifications", headers=auth(old_pa)), 401)
    assert problem["detail"] == DEACTIVATED
    detail = await eventually(
        lambda: refused_elsewhere(another_service, old_pa), timeout=45, what="refused elsewhere"
    )
    assert detail == DEACTIVATED
    for token in (new_pa, br["pa"]):  # the new PA, and other governments' PAs, work
        assert (await client.get("/v1/notifications", headers=auth(token))).status_code == 200
        assert await refused_elsewhere(another_service, token) is None
    topic = topic_name(Topic.DIRECTORY, world.prefix)
    async with TopicReader(world.kafka, topic) as reader:
        events = await reader.read_until(
            lambda evs: any(e.type == "directory.user.deactivated" for e in evs)
        )
    gone = [e.subject for e in events if e.type == "directory.user.deactivated"]
    assert gone == [old_pa_id]
    published = await publish(client, new_pa, permit("mx", world.cna))
    assert published["status"] == "published"

    # The NFP saves drafts but publishes nothing of the workflow; the NAU asks, the PA does.
    ircc = permit("mx", world.cna)
    ident = ircc["header"]["identifier"]
    assert (await save(world, users["nfp"], ircc)).status_code == 200
    assert_problem(await publish_draft(world, users["nfp"], ircc), 403)
    assert_problem(await client.get(f"/v1/records/{ident}"), 404)
    resp = await publish_draft(world, users["nau"], ircc)
    assert resp.json()["status"] == "requested", resp.text
    approved = await client.post(
        f"/v1/requests/{resp.json()['requestId']}/approve", headers=auth(new_pa)
    )
    assert approved.status_code == 200, approved.text

    # The Secretariat reads a government's draft only through the audit endpoint, logged.
    admin_resp = await client.post(
        "/v1/users",
        json={"name": "Auditor", "email": "audit@scbd.example", "role": "admin"},
        headers=auth(ADMIN_TOKEN),
    )
    admin, admin_id = admin_resp.json()["token"], admin_resp.json()["id"]
    draft = permit("mx", world.cna)
    draft_id = draft["header"]["identifier"]
    assert (await save(world, users["nau"], draft)).status_code == 200
    for ref in (f"{draft_id}?draft=true", draft_id):
        problem = assert_problem(await client.get(f"/v1/records/{ref}", headers=auth(admin)), 403)
        assert "/v1/audit/drafts/" in problem["detail"]
    audit_url = f"/v1/audit/drafts/absPermit/{draft_id}"
    for token in (users["nfp"], new_pa, users["nau"], users["cna"]):
        assert_problem(await client.get(audit_url, headers=auth(token)), 403)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    caplog.clear()
    resp = await client.get(audit_url, headers=auth(admin))
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["record"]["title"]) == ("draft", draft["title"])
    missing = f"T-{uuid.uuid4().hex.upper()}"
    assert_problem(
        await client.get(f"/v1/audit/drafts/absPermit/{missing}", headers=auth(admin)), 404
    )
    readings = [
        (r.user_id, r.schema, r.identifier, r.government, r.found)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == AUDIT_LOGGER and getattr(r, "audit", None) == "draft_read"
    ]
    assert readings == [
        (admin_id, "absPermit", draft_id, "mx", True),
        (admin_id, "absPermit", missing, None, False),
    ]
    # Its own records (focal points) it reads directly, as their editor.
    nfp_record: dict[str, Any] = {
        "header": {
            "identifier": f"T-{uuid.uuid4().hex.upper()}",
            "schema": "focalPoint",
            "languages": ["en"],
        },
        "government": {"identifier": "mx"},
        "emails": ["nfp@mx.example"],
    }
    assert (await save(world, admin, nfp_record)).status_code == 200
    got = await client.get(
        f"/v1/records/{nfp_record['header']['identifier']}?draft=true", headers=auth(admin)
    )
    assert got.status_code == 200, got.text
