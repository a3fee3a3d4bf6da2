"""Users, roles and the tokens that carry them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.adapters.tables import RecordRow, UserRow
from services.registry.context import RegistryContext
from services.registry.domain import check_can_create_user
from services.registry.handlers.errors import InvalidRecord
from shared.auth import AUDIENCE, ISSUER, Principal, Role, claims_for


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


def issue_token(ctx: RegistryContext, principal: Principal) -> str:
    """A signed EdDSA JWT for ``principal`` valid for ``token_ttl_days``."""
    now = ctx.clock()
    claims = claims_for(principal) | {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(days=ctx.settings.token_ttl_days)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, ctx.key.private, algorithm="EdDSA", headers={"kid": ctx.key.kid})


async def create_user(
    ctx: RegistryContext,
    creator: Principal,
    *,
    name: str,
    email: str,
    role: Role,
    government: str | None,
    checkpoint: str | None,
) -> tuple[UserRow, str]:
    """Create a user in the creator's remit and return it with its first token."""
    government = government.lower() if government else None
    if role is Role.ADMIN:
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
    async with ctx.sessions() as session:
        session.add(user)
        await session.commit()
    principal = Principal(
        id=user.id, role=role, government=government, checkpoint=user.checkpoint, name=name
    )
    return user, issue_token(ctx, principal)
