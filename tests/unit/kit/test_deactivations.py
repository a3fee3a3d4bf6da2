"""The kit's deactivated users: folded from ``directory.user.deactivated`` in the consumer's
transaction, remembered after the commit, loaded again at start, consulted by the verifier."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import MetaData, select

from shared.auth import AUDIENCE, DEACTIVATED, ISSUER, TokenVerifier
from shared.events import CloudEvent, new_event
from shared.events.models import DirectoryRecordWithdrawn, UserDeactivated
from shared.http import ProblemError
from shared.kit.consumer import Delivery, Tx
from shared.kit.deactivations import DEACTIVATION_TYPE, DeactivatedUsers, deactivations_table
from shared.kit.testing import HandlerHarness

WHEN = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)


def deactivated(user_id: str) -> CloudEvent[Any]:
    data = UserDeactivated(user_id=user_id, deactivated_at=WHEN)
    return new_event(DEACTIVATION_TYPE, source="registry", subject=user_id, data=data)


class Boom(Exception):
    """A later handler of the same batch failing."""


@pytest.fixture
async def harness() -> AsyncIterator[tuple[HandlerHarness, DeactivatedUsers]]:
    metadata = MetaData()
    users = DeactivatedUsers(deactivations_table(metadata))
    async with HandlerHarness(metadata, {DEACTIVATION_TYPE: users.on_event}) as h:
        yield h, users


async def stored(h: HandlerHarness, users: DeactivatedUsers) -> list[tuple[str, datetime]]:
    t = users.table
    async with h.sessions() as session:
        rows = await session.execute(select(t.c.user_id, t.c.deactivated_at).order_by(t.c.user_id))
    return [(user_id, at.replace(tzinfo=at.tzinfo or UTC)) for user_id, at in rows]


async def test_an_event_is_stored_and_remembered_once_committed(
    harness: tuple[HandlerHarness, DeactivatedUsers],
) -> None:
    h, users = harness
    assert "u-1" not in users
    await h.feed(deactivated("u-1"), key="u-1")
    assert "u-1" in users
    assert await users.is_deactivated("u-1")
    assert not await users.is_deactivated("u-2")
    assert await stored(h, users) == [("u-1", WHEN)]


async def test_reading_the_topic_again_changes_nothing(
    harness: tuple[HandlerHarness, DeactivatedUsers],
) -> None:
    h, users = harness
    await h.feed(deactivated("u-1"), deactivated("u-1"), key="u-1")  # twice in one batch
    await h.feed(deactivated("u-1"), key="u-1")  # and again, as after a restart
    assert await stored(h, users) == [("u-1", WHEN)]
    assert len(users) == 1


async def test_a_batch_that_rolls_back_leaves_memory_alone(
    harness: tuple[HandlerHarness, DeactivatedUsers],
) -> None:
    h, users = harness

    async def fail(_tx: Tx, _event: CloudEvent[Any], _delivery: Delivery) -> None:
        raise Boom

    withdrawn = DirectoryRecordWithdrawn(
        uid="ABSCH-CNA-DE-1-1", schema_="authority", identifier="X", document_id=1
    )
    h.use({DEACTIVATION_TYPE: users.on_event, "directory.record.withdrawn": fail})
    later = new_event("directory.record.withdrawn", source="registry", subject="X", data=withdrawn)
    with pytest.raises(Boom):
        await h.feed(deactivated("u-1"), later)
    assert "u-1" not in users, "memory never leads the table"
    assert await stored(h, users) == []


async def test_other_directory_events_are_ignored(
    harness: tuple[HandlerHarness, DeactivatedUsers],
) -> None:
    h, users = harness
    withdrawn = DirectoryRecordWithdrawn(
        uid="ABSCH-CNA-DE-1-1", schema_="authority", identifier="u-1", document_id=1
    )
    h.use(dict.fromkeys([DEACTIVATION_TYPE, "directory.record.withdrawn"], users.on_event))
    await h.feed(
        new_event("directory.record.withdrawn", source="registry", subject="x", data=withdrawn)
    )
    assert len(users) == 0
    assert await stored(h, users) == []


async def test_a_restart_loads_the_table_before_reading(
    harness: tuple[HandlerHarness, DeactivatedUsers],
) -> None:
    h, users = harness
    await h.feed(deactivated("u-1"), deactivated("u-2"))
    again = DeactivatedUsers(users.table)
    assert "u-1" not in again
    await again.load(h.sessions)
    assert again.loaded
    assert ("u-1" in again, "u-2" in again, "u-3" in again) == (True, True, False)


# ---------------------------------------------------------------- the verifier


def _token(key: Ed25519PrivateKey, sub: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {"sub": sub, "role": "pa", "gov": "mx", "iss": ISSUER, "aud": AUDIENCE}
    claims |= {"iat": now, "exp": now + 3600} | extra
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1"})


async def test_the_verifier_refuses_a_deactivated_users_valid_token(
    harness: tuple[HandlerHarness, DeactivatedUsers],
) -> None:
    h, users = harness
    key = Ed25519PrivateKey.generate()

    async def resolve(kid: str) -> Any:
        return key.public_key() if kid == "k1" else None

    verifier = TokenVerifier(resolve, admin_token="boot", deactivated=users.is_deactivated)
    token = _token(key, "u-1")
    assert (await verifier.verify(token)).id == "u-1"
    await h.feed(deactivated("u-1"))
    with pytest.raises(ProblemError) as refused:
        await verifier.verify(token)
    problem = refused.value.problem
    assert (problem.status, problem.detail) == (401, DEACTIVATED)
    assert refused.value.headers == {"WWW-Authenticate": "Bearer"}
    assert (await verifier.verify(_token(key, "u-2"))).id == "u-2", "others still pass"
    assert (await verifier.verify("boot")).is_admin, "the bootstrap admin has no user id"


async def test_the_check_runs_only_after_the_signature() -> None:
    """A forged token naming a deactivated user learns nothing about who is deactivated."""
    key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    asked: list[str] = []

    async def resolve(kid: str) -> Any:
        return key.public_key()

    async def check(user_id: str) -> bool:
        asked.append(user_id)
        return True

    verifier = TokenVerifier(resolve, deactivated=check)
    for forged in (_token(stranger, "u-1"), _token(key, "u-1", exp=int(time.time()) - 60)):
        with pytest.raises(ProblemError) as refused:
            await verifier.verify(forged)
        assert refused.value.problem.detail in {"invalid token", "token expired"}
    assert asked == []
    with pytest.raises(ProblemError) as refused:
        await verifier.verify(_token(key, "u-1"))
    assert refused.value.problem.detail == DEACTIVATED
    assert asked == ["u-1"]
