"""Users, roles and the tokens that carry them.

A user gets two credentials at creation: an access token (a JWT living
``token_ttl_hours``) and a long-lived secret, kept only as its SHA-256, that
``POST /v1/tokens`` exchanges for a fresh access token while the user is active.
Deactivation is final: the user's row turns inactive and ``directory.user.deactivated``
leaves through the outbox in the same transaction (docs/adr/0002-tokens-and-deactivation.md).
A government has one publishing authority [W1]: designating a PA deactivates the one
before, in the transaction that creates the new one, so its tokens stop working everywhere.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry.adapters.tables import CredentialRow, OutboxRow, RecordRow, UserRow
from services.registry.context import RegistryContext
from services.registry.domain import (
    ONE_PER_GOVERNMENT,
    check_can_create_user,
    check_can_deactivate,
    check_can_deactivate_user,
)
from services.registry.handlers.errors import InvalidRecord, NotFound, Unauthenticated
from shared.auth import (
    AUDIENCE,
    DEACTIVATED,
    ISSUER,
    UNSCOPED_ROLES,
    Principal,
    Role,
    claims_for,
)
from shared.events import Topic, new_event
from shared.events.models import UserDeactivated
from shared.kit.outbox import stage

DEACTIVATION_EVENT = "directory.user.deactivated"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An access token and the moment it stops working."""

    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NewUser:
    """A created user with its first access token and its secret (shown once)."""

    user: UserRow
    access: IssuedToken
    secret: str


def secret_digest(secret: str) -> str:
    """What is stored of a secret: 256 random bits need no slow hash, only no plain copy."""
    return hashlib.sha256(secret.encode()).hexdigest()


async def _check_checkpoint(
    session: AsyncSession, checkpoint: str | None, government: str | None
) -> None:
    """An operator is scoped to one checkpoint of its own government [DESIGN §4]."""
    if not checkpoint:
        raise InvalidRecord([{"field": "checkpoint", "message": "required for this role"}])
    row = await session.scalar(select(RecordRow).where(RecordRow.identifier == checkpoint))
    if row is None or row.schema_name != "absCheckpoint" or row.government != government:
        raise InvalidRecord(
            [{"field": "checkpoint", "message": f"no absCheckpoint {checkpoint!r} of {government}"}]
        )


def issue_token(ctx: RegistryContext, principal: Principal) -> IssuedToken:
    """A signed EdDSA JWT for ``principal`` valid for ``token_ttl_hours``."""
    now = ctx.clock()
    expires_at = now + timedelta(hours=ctx.settings.token_ttl_hours)
    claims = claims_for(principal) | {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, ctx.key.private, algorithm="EdDSA", headers={"kid": ctx.key.kid})
    return IssuedToken(token, expires_at)


def _principal(user: UserRow) -> Principal:
    return Principal(
        id=user.id,
        role=Role(user.role),
        government=user.government,
        checkpoint=user.checkpoint,
        name=user.name,
    )


async def create_user(
    ctx: RegistryContext,
    creator: Principal,
    *,
    name: str,
    email: str,
    role: Role,
    government: str | None,
    checkpoint: str | None,
    correlation_id: str | None = None,
) -> NewUser:
    """Create a user in the creator's remit with its first token and its secret. A new
    publishing authority replaces the government's previous one (deactivated) [W1]."""
    government = government.lower() if government else None
    if role in UNSCOPED_ROLES:
        government = None
    check_can_create_user(creator, role, government)
    async with ctx.sessions() as session:
        if role is Role.CHECKPOINT:
            await _check_checkpoint(session, checkpoint, government)
    user = UserRow(
        id=f"u-{uuid.uuid4().hex[:16]}",
        name=name,
        email=email,
        role=role.value,
        government=government,
        checkpoint=checkpoint if role is Role.CHECKPOINT else None,
        created_by=creator.id,
        created_at=ctx.clock(),
        active=True,
    )
    secret = secrets.token_urlsafe(32)
    credential = CredentialRow(
        user_id=user.id, secret_sha256=secret_digest(secret), created_at=ctx.clock()
    )
    async with ctx.sessions() as session:
        if role in ONE_PER_GOVERNMENT:
            await _lock_role(session, role, government)
        session.add(user)
        await session.flush()  # the user row first: the credential refers to it
        session.add(credential)
        if role in ONE_PER_GOVERNMENT:
            await _replace_predecessors(ctx, session, user, correlation_id=correlation_id)
        await session.commit()
    if role in ONE_PER_GOVERNMENT:
        ctx.relay.wake()
    return NewUser(user, issue_token(ctx, _principal(user)), secret)


async def _lock_role(session: AsyncSession, role: Role, government: str | None) -> None:
    """Serialise designations of ``role`` for ``government``, so two crossing ones cannot
    both stay active. PostgreSQL: a transaction advisory lock on the pair. SQLite has one
    writer at a time, and the designation writes (the new row) before it reads the others."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"registry-role:{role.value}:{government}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


async def _replace_predecessors(
    ctx: RegistryContext, session: AsyncSession, user: UserRow, *, correlation_id: str | None
) -> None:
    """Deactivate the other active users of ``user``'s role and government [W1]."""
    others = await session.scalars(
        select(UserRow.id).where(
            UserRow.role == user.role,
            UserRow.government == user.government,
            UserRow.active.is_(True),
            UserRow.id != user.id,
        )
    )
    for other in list(others):
        await _deactivate(ctx, session, other, correlation_id=correlation_id)


async def exchange_secret(ctx: RegistryContext, secret: str) -> IssuedToken:
    """A fresh access token for the user holding ``secret``, while that user is active."""
    async with ctx.sessions() as session:
        user = await session.scalar(
            select(UserRow)
            .join(CredentialRow, CredentialRow.user_id == UserRow.id)
            .where(CredentialRow.secret_sha256 == secret_digest(secret))
        )
    if user is None:
        raise Unauthenticated("unknown secret", field="secret")
    if not user.active:
        raise Unauthenticated(DEACTIVATED, field="secret")
    return issue_token(ctx, _principal(user))


async def deactivate_user(
    ctx: RegistryContext, caller: Principal, user_id: str, *, correlation_id: str | None = None
) -> None:
    """Deactivate a user of the caller's remit; repeating it changes nothing.

    The row turns inactive and ``directory.user.deactivated`` is staged in the same
    transaction, so every service learns it exactly when the registry does.
    """
    check_can_deactivate(caller)
    async with ctx.sessions() as session:
        user = await session.get(UserRow, user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}")
        check_can_deactivate_user(caller, Role(user.role), user.government)
        if not user.active:
            return
        if not await _deactivate(ctx, session, user_id, correlation_id=correlation_id):
            return
        await session.commit()
    ctx.relay.wake()


async def _deactivate(
    ctx: RegistryContext, session: AsyncSession, user_id: str, *, correlation_id: str | None
) -> bool:
    """Turn the user inactive and stage ``directory.user.deactivated``; caller commits.
    False when it was inactive already (nothing staged)."""
    # Conditional: of two requests crossing, only the one that flips the row announces it.
    flipped = await session.execute(
        update(UserRow)
        .where(UserRow.id == user_id, UserRow.active.is_(True))
        .values(active=False)
        .execution_options(synchronize_session=False)
    )
    if getattr(flipped, "rowcount", 1) != 1:
        return False
    event = new_event(
        DEACTIVATION_EVENT,
        source="registry",
        subject=user_id,
        data=UserDeactivated(user_id=user_id, deactivated_at=ctx.clock()),
        correlation_id=correlation_id,
    )
    stage(session, OutboxRow, ctx.topic(Topic.DIRECTORY), event, key=user_id)
    return True


async def is_deactivated(sessions: async_sessionmaker[AsyncSession], user_id: str) -> bool:
    """The registry's own check, from its table: it refuses a deactivated user at once.

    Ids without a row (the bootstrap admin) are not deactivated.
    """
    async with sessions() as session:
        active = await session.scalar(select(UserRow.active).where(UserRow.id == user_id))
    return active is False
