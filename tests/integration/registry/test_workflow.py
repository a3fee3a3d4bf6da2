"""Registry: the publishing workflow [W1-W4] through HTTP with the real broker.

An NAU's publish (or revoke) opens a request and locks the record; the PA of the record's
government approves or rejects it; the requester may recall it; reminders go out every
7 days and the request times out after 90 (the clock is injected, the sweep called).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from services.registry.adapters.tables import RequestRow
from services.registry.context import RegistryContext
from services.registry.handlers import workflow
from shared.events import topic_name
from tests.support.authz import assert_problem
from tests.support.kafka import TopicReader
from tests.support.records import authority, permit
from tests.support.registry import (
    ADMIN_TOKEN,
    auth,
    create_user,
    government_users,
    publish,
    registry_settings,
    running_registry,
)

DbUrl = Callable[[str], Awaitable[str]]
IRCC_TOPIC = "absch.ircc.v1"


class FakeClock:
    """A clock that stands still until advanced."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move the clock forward by ``timedelta(**delta)``."""
        self.now += timedelta(**delta)


@dataclass
class Registry:
    """A running registry with the users of one government and its published CNA."""

    client: httpx.AsyncClient
    users: dict[str, str]
    cna: str
    clock: FakeClock
    kafka: str
    prefix: str

    @property
    def ctx(self) -> RegistryContext:
        """The running app's context (for the sweep)."""
        ctx: RegistryContext = self.client.app.state.ctx  # type: ignore[attr-defined]
        return ctx


@pytest.fixture
async def mx(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbUrl, tmp_path: Path
) -> AsyncIterator[Registry]:
    """A registry (on a fake clock) with Mexico's NFP, PA, NAU and CNA reader and its CNA."""
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    settings = registry_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("registry"), tmp=tmp_path
    )
    async with running_registry(settings, clock=clock) as client:
        users = await government_users(client, "mx")
        cna = authority("mx", ["cna@mx.example"])
        await publish(client, users["pa"], cna)
        yield Registry(
            client, users, cna["header"]["identifier"], clock, kafka_bootstrap, topic_prefix
        )


def record_url(record: dict[str, Any]) -> str:
    """``/v1/records/{schema}/{identifier}`` of a record."""
    return f"/v1/records/{record['header']['schema']}/{record['header']['identifier']}"


async def save(client: httpx.AsyncClient, token: str, record: dict[str, Any]) -> httpx.Response:
    """PUT a draft."""
    return await client.put(record_url(record), json=record, headers=auth(token))


async def request_publication(
    client: httpx.AsyncClient, nau: str, record: dict[str, Any], message: str | None = None
) -> int:
    """The NAU saves ``record`` and asks for its publication; returns the request id."""
    resp = await save(client, nau, record)
    assert resp.status_code == 200, resp.text
    body = {"message": message} if message else None
    resp = await client.post(f"{record_url(record)}/publish", json=body, headers=auth(nau))
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["status"] == "requested"
    assert isinstance(out["requestId"], int)
    return int(out["requestId"])


async def notifications(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    """The caller's notifications, newest first."""
    resp = await client.get("/v1/notifications", headers=auth(token))
    assert resp.status_code == 200, resp.text
    out: list[dict[str, Any]] = resp.json()
    return out


async def request_view(client: httpx.AsyncClient, token: str, request_id: int) -> dict[str, Any]:
    """A request as listed by ``GET /v1/requests`` for the caller."""
    resp = await client.get("/v1/requests", headers=auth(token))
    assert resp.status_code == 200, resp.text
    found = [r for r in resp.json() if r["id"] == request_id]
    assert len(found) == 1, resp.json()
    out: dict[str, Any] = found[0]
    return out


async def decide(
    client: httpx.AsyncClient, token: str, request_id: int, action: str, **body: Any
) -> httpx.Response:
    """POST ``/v1/requests/{id}/{action}``."""
    return await client.post(
        f"/v1/requests/{request_id}/{action}", json=body or None, headers=auth(token)
    )


def title(record: dict[str, Any]) -> str:
    """English title of a record."""
    return str(record["title"]["en"])


async def test_nau_publish_opens_a_request_that_locks_the_record(mx: Registry) -> None:
    client, users = mx.client, mx.users
    ircc = permit("mx", mx.cna)
    ident = ircc["header"]["identifier"]

    rid = await request_publication(client, users["nau"], ircc, message="Please publish")

    assert_problem(await save(client, users["nau"], ircc), 409)
    for who in ("nau", "pa"):
        resp = await client.post(f"{record_url(ircc)}/publish", headers=auth(users[who]))
        assert_problem(resp, 409)
    (note,) = await notifications(client, users["pa"])
    assert note["type"] == "documentNotification"
    assert note["action"] == "request"
    assert note["iteration"] == 1
    assert note["requestId"] == rid
    assert note["identifier"] == ident
    assert note["schema"] == "absPermit"
    assert note["title"] == title(ircc)
    assert note["info"] == "Please publish"
    assert note["state"] == "unread"
    assert await notifications(client, users["nau"]) == []

    req = await request_view(client, users["pa"], rid)
    assert req["state"] == "running"
    assert req["action"] == "publish"
    assert req["result"] is None
    assert req["message"] == "Please publish"
    assert await request_view(client, users["nau"], rid) == req
    # Nothing is published while the request waits.
    assert_problem(await client.get(f"/v1/records/{ident}"), 404)


async def test_pa_approval_publishes_revision_1_and_tells_the_requester(mx: Registry) -> None:
    client, users = mx.client, mx.users
    ircc = permit("mx", mx.cna)
    ident = ircc["header"]["identifier"]
    rid = await request_publication(client, users["nau"], ircc)

    resp = await decide(client, users["pa"], rid, "approve")
    assert resp.status_code == 200, resp.text
    decided = resp.json()
    assert decided["state"] == "completed"
    assert decided["result"] == "approved"
    uid = decided["uid"]
    assert uid.startswith("ABSCH-IRCC-MX-")
    assert uid.endswith("-1")

    for ref in (uid, ident):
        resp = await client.get(f"/v1/records/{ref}")
        assert resp.status_code == 200, resp.text
        view = resp.json()
        assert (view["uid"], view["revision"], view["status"]) == (uid, 1, "current")
        assert view["record"]["title"] == ircc["title"]

    topic = topic_name(IRCC_TOPIC, mx.prefix)
    async with TopicReader(mx.kafka, topic) as reader:
        events = await reader.read_until(lambda evs: any(e.subject == uid for e in evs))
    (event,) = [e for e in events if e.subject == uid]
    assert event.type == "ircc.published"
    assert event.data.identifier == ident
    assert event.data.revision == 1

    (note,) = await notifications(client, users["nau"])
    assert (note["action"], note["requestId"], note["identifier"]) == ("approved", rid, ident)
    assert (await request_view(client, users["pa"], rid))["result"] == "approved"

    assert_problem(await decide(client, users["pa"], rid, "approve"), 409)
    assert_problem(await decide(client, users["pa"], rid, "reject", reason="late"), 409)
    assert_problem(await decide(client, users["nau"], rid, "recall"), 409)
    # The record is unlocked: the NAU can draft the next revision.
    assert (await save(client, users["nau"], ircc)).status_code == 200


async def test_pa_rejection_returns_the_draft_unpublished(mx: Registry) -> None:
    client, users = mx.client, mx.users
    ircc = permit("mx", mx.cna)
    ident = ircc["header"]["identifier"]
    rid = await request_publication(client, users["nau"], ircc)
    reason = "The MAT reference is missing"

    resp = await decide(client, users["pa"], rid, "reject", reason=reason)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["state"], out["result"], out["reason"]) == ("completed", "rejected", reason)
    assert out["uid"] is None

    (note,) = await notifications(client, users["nau"])
    assert (note["action"], note["info"], note["requestId"]) == ("rejected", reason, rid)
    assert note["identifier"] == ident

    # Back in the owners' drafts, unlocked, and not published.
    resp = await client.get(f"/v1/records/{ident}?draft=true", headers=auth(users["nau"]))
    assert resp.json()["status"] == "draft"
    assert (await save(client, users["nau"], ircc)).status_code == 200
    assert_problem(await client.get(f"/v1/records/{ident}"), 404)
    assert_problem(await client.get(f"/v1/records/{ident}/revisions"), 404)

    # A later publication reaches the topic; the rejected record never does.
    later = await publish(client, users["pa"], permit("mx", mx.cna))
    topic = topic_name(IRCC_TOPIC, mx.prefix)
    async with TopicReader(mx.kafka, topic) as reader:
        events = await reader.read_until(lambda evs: any(e.subject == later["uid"] for e in evs))
    assert [e.subject for e in events] == [later["uid"]]


async def test_only_the_requester_can_recall_and_the_pa_is_told(mx: Registry) -> None:
    client, users = mx.client, mx.users
    ircc = permit("mx", mx.cna)
    rid = await request_publication(client, users["nau"], ircc)
    other_nau = await create_user(
        client, users["nfp"], "nau", "mx", email="nau2@mx.example", name="second NAU"
    )

    for token in (users["pa"], users["nfp"], other_nau, ADMIN_TOKEN):
        assert_problem(await decide(client, token, rid, "recall"), 403)
    assert (await request_view(client, users["pa"], rid))["state"] == "running"

    resp = await decide(client, users["nau"], rid, "recall")
    assert resp.status_code == 200, resp.text
    assert (resp.json()["state"], resp.json()["result"]) == ("canceled", "recalled")

    recalled = [n for n in await notifications(client, users["pa"]) if n["action"] == "recalled"]
    assert [(n["requestId"], n["identifier"]) for n in recalled] == [
        (rid, ircc["header"]["identifier"])
    ]
    assert (await save(client, users["nau"], ircc)).status_code == 200
    assert_problem(await decide(client, users["pa"], rid, "approve"), 409)
    assert_problem(await decide(client, users["nau"], rid, "recall"), 409)


async def test_revocation_by_an_nau_waits_for_the_pa(mx: Registry) -> None:
    client, users = mx.client, mx.users
    ircc = permit("mx", mx.cna)
    ident = ircc["header"]["identifier"]
    first = await publish(client, users["pa"], ircc)
    reason = {"en": "The permit was obtained without PIC"}
    revoke_url = f"/v1/records/absPermit/{ident}/revoke"

    resp = await client.post(revoke_url, json={"reason": reason}, headers=auth(users["nau"]))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "requested"
    rid = resp.json()["requestId"]

    view = (await client.get(f"/v1/records/{ident}")).json()
    assert (view["status"], view["revision"]) == ("current", 1)
    resp = await client.post(revoke_url, json={"reason": reason}, headers=auth(users["pa"]))
    assert_problem(resp, 409)
    (note,) = await notifications(client, users["pa"])
    assert (note["action"], note["requestId"], note["identifier"]) == ("request", rid, ident)
    assert (await request_view(client, users["pa"], rid))["action"] == "revoke"

    resp = await decide(client, users["pa"], rid, "approve")
    assert resp.status_code == 200, resp.text
    final_uid = resp.json()["uid"]
    assert final_uid.endswith("-2")

    view = (await client.get(f"/v1/records/{ident}")).json()
    assert (view["status"], view["revision"], view["uid"]) == ("revoked", 2, final_uid)
    assert view["record"]["amendmentIntent"] == 1
    assert view["record"]["amendmentDescription"] == reason
    assert (await client.get(f"/v1/verify/{first['uid']}")).json()["status"] == "revoked"
    (approved,) = await notifications(client, users["nau"])
    assert (approved["action"], approved["requestId"]) == ("approved", rid)

    topic = topic_name(IRCC_TOPIC, mx.prefix)
    async with TopicReader(mx.kafka, topic) as reader:
        events = await reader.read_until(lambda evs: any(e.subject == final_uid for e in evs))
    assert [(e.type, e.subject) for e in events] == [
        ("ircc.published", first["uid"]),
        ("ircc.revoked", final_uid),
    ]

    resp = await client.post(revoke_url, json={"reason": reason}, headers=auth(users["nau"]))
    assert_problem(resp, 409)
    assert_problem(await save(client, users["nau"], ircc), 409)


async def test_reminders_every_7_days_and_time_out_after_90(mx: Registry) -> None:
    client, users = mx.client, mx.users
    ircc = permit("mx", mx.cna)
    ident = ircc["header"]["identifier"]
    rid = await request_publication(client, users["nau"], ircc)
    nothing = {"reminded": 0, "timedout": 0}

    async def pa_requests() -> list[int]:
        return [
            n["iteration"]
            for n in reversed(await notifications(client, users["pa"]))
            if n["action"] == "request" and n["requestId"] == rid
        ]

    assert await workflow.sweep(mx.ctx) == nothing
    mx.clock.advance(days=6, hours=23)
    assert await workflow.sweep(mx.ctx) == nothing
    assert await pa_requests() == [1]

    mx.clock.advance(hours=1)  # day 7
    assert await workflow.sweep(mx.ctx) == {"reminded": 1, "timedout": 0}
    assert await workflow.sweep(mx.ctx) == nothing  # once per interval
    assert await pa_requests() == [1, 2]
    reminder = (await notifications(client, users["pa"]))[0]
    assert (reminder["identifier"], reminder["schema"]) == (ident, "absPermit")
    assert reminder["title"] == title(ircc)

    mx.clock.advance(days=7)  # day 14
    assert await workflow.sweep(mx.ctx) == {"reminded": 1, "timedout": 0}
    assert await pa_requests() == [1, 2, 3]
    assert (await request_view(client, users["pa"], rid))["state"] == "running"
    assert await notifications(client, users["nau"]) == []

    mx.clock.advance(days=76)  # day 90
    assert await workflow.sweep(mx.ctx) == {"reminded": 0, "timedout": 1}
    assert await pa_requests() == [1, 2, 3]
    (note,) = await notifications(client, users["nau"])
    assert (note["action"], note["requestId"], note["identifier"]) == ("timedout", rid, ident)
    req = await request_view(client, users["pa"], rid)
    assert (req["state"], req["result"]) == ("canceled", "timedout")

    # The record is back in its owners' drafts, unlocked; the request cannot be decided.
    resp = await client.get(f"/v1/records/{ident}?draft=true", headers=auth(users["nau"]))
    assert resp.json()["status"] == "draft"
    assert (await save(client, users["nau"], ircc)).status_code == 200
    assert_problem(await decide(client, users["pa"], rid, "approve"), 409)
    assert await workflow.sweep(mx.ctx) == nothing
    # ... and a new request can be opened.
    resp = await client.post(f"{record_url(ircc)}/publish", headers=auth(users["nau"]))
    assert resp.json()["status"] == "requested"


async def test_only_the_pa_of_the_records_government_decides(mx: Registry) -> None:
    client, users = mx.client, mx.users
    br = await government_users(client, "br")
    rid = await request_publication(client, users["nau"], permit("mx", mx.cna))

    for token in (br["pa"], users["nau"], users["nfp"], users["cna"], ADMIN_TOKEN):
        assert_problem(await decide(client, token, rid, "approve"), 403)
        assert_problem(await decide(client, token, rid, "reject", reason="no"), 403)
    assert_problem(await decide(client, br["nau"], rid, "recall"), 403)
    assert (await request_view(client, users["pa"], rid))["state"] == "running"
    resp = await client.get("/v1/requests", headers=auth(br["pa"]))
    assert resp.json() == []
    assert await notifications(client, br["pa"]) == []

    for action, body in (("approve", {}), ("reject", {"reason": "no"}), ("recall", {})):
        problem = assert_problem(await decide(client, users["pa"], 987654, action, **body), 404)
        assert problem["detail"] == "no request 987654"


async def test_one_broken_request_does_not_stop_the_reminders_of_the_others(
    mx: Registry,
) -> None:
    """A request whose stored body is corrupt fails on its own; the others are reminded
    exactly once, and the skip is counted."""
    client, users = mx.client, mx.users
    broken = await request_publication(client, users["nau"], permit("mx", mx.cna))
    good = await request_publication(client, users["nau"], permit("mx", mx.cna))
    async with mx.ctx.sessions() as session:
        row = await session.get(RequestRow, broken)
        assert row is not None
        row.body = cast(Any, ["not", "a", "record"])  # what a damaged row could hold
        await session.commit()
    skips = {"service": "registry", "task": "workflow"}

    def skipped() -> float:
        value = mx.ctx.metrics.plumbing.registry.get_sample_value(
            "absch_periodic_records_skipped_total", skips
        )
        return value or 0.0

    mx.clock.advance(days=7)
    assert await workflow.sweep(mx.ctx) == {"reminded": 1, "timedout": 0}
    assert skipped() == 1
    assert await workflow.sweep(mx.ctx) == {"reminded": 0, "timedout": 0}
    reminders = [
        n["iteration"]
        for n in await notifications(client, users["pa"])
        if n["action"] == "request" and n["requestId"] == good
    ]
    assert sorted(reminders) == [1, 2]
