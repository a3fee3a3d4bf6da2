"""Users, roles and the tokens that carry them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt

from services.registry.adapters.tables import UserRow
from services.registry.context import RegistryContext
from services.registry.domain import check_can_create_user
from shared.auth import AUDIENCE, ISSUER, Principal, Role, claims_for


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
