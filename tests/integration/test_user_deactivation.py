"""A deactivated user's tokens stop working everywhere: at once in the registry, within a
minute in the checkpoint, notifier and monitor services, each from its own copy of the
deactivated users fed by ``directory.user.deactivated`` on the directory topic (no call
per request). Real components: the embedded broker and each service's own database.

Who may deactivate whom, the secret exchange and the event itself are
``tests/integration/registry/test_user_deactivation.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import DeclarativeBase

from shared.auth import DEACTIVATED
from shared.events import Topic, new_event, topic_name
from shared.events.models import UserDeactivated
from shared.kit.assemble import Kit
from shared.metrics import PlumbingMetrics
from shared.settings import ServiceSettings
from tests.support import records as rec
from tests.support.authz import assert_problem
from tests.support.communiques import communique
from tests.support.databases import DbFactory
from tests.support.mail import consumed, metric
from tests.support.metrics import scrape
from tests.support.notifier import EventWriter
from tests.support.poll import eventually
from tests.support.registry import auth, government_users, publish
from tests.support.stack import Stack, running_stack, submit
from tools.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

# Well under the minute; the registry's outbox and one directory poll take seconds.
REFUSAL_TIMEOUT = 45.0
NOT_A_COMMUNIQUE = {"not": "a communiqué"}  # refused after authentication, changes nothing

Call = Callable[[str], Awaitable[httpx.Response]]


def calls(stack: Stack, checkpoint: str) -> dict[str, Call]:
    """One authenticated request per service that any active NAU gets an answer to."""
    return {
        "registry": lambda token: stack.registry.get("/v1/notifications", headers=auth(token)),
        "checkpoint": lambda token: stack.checkpoint.post(
            "/v1/communiques", json=NOT_A_COMMUNIQUE, headers=auth(token)
        ),
        "notifier": lambda token: stack.notifier.get(
            "/v1/deliveries", params={"subject": checkpoint}, headers=auth(token)
        ),
        "monitor": lambda token: stack.monitor.get("/v1/discrepancies", headers=auth(token)),
    }


# What an active NAU gets: the checkpoint service validates the body it was given (422).
ACCEPTED = {"registry": 200, "checkpoint": 422, "notifier": 200, "monitor": 200}


async def nau(stack: Stack, nfp: str) -> dict[str, Any]:
    """A fresh NAU of mx: the whole ``POST /v1/users`` answer (id, token, secret)."""
    body = {
        "name": "NAU to deactivate",
        "email": f"nau-{uuid.uuid4().hex[:6]}@mx.example",
        "role": "nau",
        "government": "mx",
    }
    resp = await stack.registry.post("/v1/users", json=body, headers=auth(nfp))
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def test_every_service_refuses_a_deactivated_users_tokens_within_a_minute(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_stack(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
    ) as stack:
        users = await government_users(stack.registry, "mx")
        point = rec.checkpoint("mx")
        await publish(stack.registry, users["pa"], point)
        checkpoint = point["header"]["identifier"]
        target = await nau(stack, users["nfp"])
        renewed = await stack.registry.post("/v1/tokens", json={"secret": target["secret"]})
        assert renewed.status_code == 200, renewed.text
        tokens = [target["token"], renewed.json()["token"]]

        # Both of its tokens work on all four services (a CPC really goes in, too).
        body = communique("mx", [checkpoint], source_countries=["de"], evidenceOfPIC={"en": "PIC"})
        await submit(stack, target["token"], body)
        services = calls(stack, checkpoint)
        for name, call in services.items():
            for token in tokens:
                resp = await call(token)
                assert resp.status_code == ACCEPTED[name], f"{name}: {resp.text}"

        directory = topic_name(Topic.DIRECTORY, topic_prefix)
        readers = ("checkpoint", "notifier", "monitor")
        for name in readers:  # so far the directory holds one event: the checkpoint
            await eventually(
                _consumed(getattr(stack, name), name, directory, 1),
                what=f"{name} read the checkpoint",
            )
        resp = await stack.registry.delete(f"/v1/users/{target['id']}", headers=auth(users["nfp"]))
        assert resp.status_code == 204, resp.text
        deactivated_at = time.monotonic()

        # The registry refuses at once (its own table) ...
        for token in tokens:
            problem = assert_problem(await services["registry"](token), 401)
            assert problem["detail"] == DEACTIVATED
        # ... the others once their directory consumer read the event.
        for name, call in services.items():
            for token in tokens:
                resp = await eventually(
                    _refused(call, token),
                    timeout=REFUSAL_TIMEOUT,
                    what=f"{name} refuses the deactivated user's token",
                )
                problem = assert_problem(resp, 401)
                assert problem["detail"] == DEACTIVATED, f"{name}: {problem}"
                assert resp.headers.get("www-authenticate") == "Bearer"
        assert time.monotonic() - deactivated_at < 60

        # Everyone else still gets in.
        for name, call in services.items():
            resp = await call(users["nau"])
            assert resp.status_code == ACCEPTED[name], f"{name}: {resp.text}"

        # Every directory consumer handled the event: not skipped, not dead-lettered.
        for name in readers:
            client: httpx.AsyncClient = getattr(stack, name)
            assert await consumed(client, name, directory) == 2, name
            text = await scrape(client)
            dead = metric(text, "absch_dlq_messages_total", service=name, topic=directory)
            assert not dead, f"{name} dead-lettered {dead} directory events"


def _consumed(
    client: httpx.AsyncClient, service: str, topic: str, count: int
) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await consumed(client, service, topic) == count

    return probe


def _refused(call: Call, token: str) -> Callable[[], Awaitable[httpx.Response | None]]:
    async def probe() -> httpx.Response | None:
        resp = await call(token)
        return resp if resp.status_code == 401 else None

    return probe


# ---------------------------------------------------------------- the kit's copy survives


class Base(DeclarativeBase):
    pass


class _Settings(ServiceSettings):
    service: str = "kitusers"


def _kit(database_url: str, bootstrap: str, prefix: str) -> Kit:
    settings = _Settings(
        database_url=database_url,
        kafka_bootstrap=bootstrap,
        kafka_topic_prefix=prefix,
        kafka_partitions=2,
        kafka_fetch_max_wait_ms=100,
    )
    return Kit(settings, PlumbingMetrics(CollectorRegistry(), "kitusers"), Base.metadata)


async def test_a_restarted_instance_refuses_before_it_reads_the_topic(
    kafka_bootstrap: str, topic_prefix: str, db_url: DbFactory
) -> None:
    url = await db_url("kitusers")
    data = UserDeactivated(user_id="u-gone", deactivated_at=datetime.now(UTC))
    event = new_event(
        "directory.user.deactivated", source="registry", subject=data.user_id, data=data
    )
    first = _kit(url, kafka_bootstrap, topic_prefix)
    users = first.deactivated_users()
    async with (
        first.lifespan()(FastAPI()),
        EventWriter(kafka_bootstrap, topic_prefix) as writer,
    ):
        assert "u-gone" not in users
        await writer.send(Topic.DIRECTORY, event, key=data.user_id)
        await eventually(lambda: "u-gone" in users, what="the deactivation read")

    # Topics of its own, empty: whatever it refuses now comes from its table.
    again = _kit(url, kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.")
    verifier_users = again.deactivated_users()
    async with again.lifespan()(FastAPI()):
        assert verifier_users.loaded
        assert await verifier_users.is_deactivated("u-gone")
        assert not await verifier_users.is_deactivated("u-still-here")
