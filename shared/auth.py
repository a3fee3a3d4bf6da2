"""Identities: Ed25519-signed JWTs issued by the registry, verified locally by every service.

Services fetch the registry's public keys once from ``/.well-known/jwks.json`` (again only
when a token names an unknown key id), so no call is made per request. A deactivated user's
tokens are refused from a local list too: the registry's own table in the registry, the
kit's copy fed by ``directory.user.deactivated`` events everywhere else.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from shared.http import ProblemError

log = logging.getLogger(__name__)

ISSUER = "absch-registry"
AUDIENCE = "absch"


class Role(StrEnum):
    """Roles of DESIGN.md §4; every role but admin and operator is scoped to one government."""

    ADMIN = "admin"
    NFP = "nfp"
    PA = "pa"
    NAU = "nau"
    CNA = "cna"
    CHECKPOINT = "checkpoint"
    # Watches the system (the monitor's dashboard: counts, rates, lag, failures) without the
    # Secretariat's powers: created by the admin, acts for no government, reads no case,
    # draft or delivery, writes nothing.
    OPERATOR = "operator"


# Roles that belong to no government: a government given when creating one is dropped.
UNSCOPED_ROLES = frozenset({Role.ADMIN, Role.OPERATOR})


class Principal(BaseModel):
    """Who is calling."""

    model_config = ConfigDict(frozen=True)

    id: str
    role: Role
    government: str | None = None
    checkpoint: str | None = None
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        """The Secretariat: acts for no government and may read everything."""
        return self.role is Role.ADMIN

    def acts_for(self, government: str | None) -> bool:
        """True when the caller may act for ``government`` (admin acts for all)."""
        return self.is_admin or (government is not None and self.government == government)


def claims_for(principal: Principal) -> dict[str, Any]:
    """JWT claims carrying a principal."""
    claims: dict[str, Any] = {"sub": principal.id, "role": principal.role.value}
    if principal.government:
        claims["gov"] = principal.government
    if principal.checkpoint:
        claims["cp"] = principal.checkpoint
    if principal.name:
        claims["name"] = principal.name
    return claims


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Inverse of :func:`claims_for`."""
    return Principal(
        id=str(claims["sub"]),
        role=Role(claims["role"]),
        government=claims.get("gov"),
        checkpoint=claims.get("cp"),
        name=claims.get("name"),
    )


KeyResolver = Callable[[str], Awaitable[Any | None]]
# True when the user with this id was deactivated (answered locally, never over HTTP).
DeactivationCheck = Callable[[str], Awaitable[bool]]
DEACTIVATED = "user is deactivated"


class TokenVerifier:
    """Verifies bearer tokens against public keys found by key id; with ``deactivated``,
    a valid token of a deactivated user is refused too."""

    def __init__(
        self,
        resolve_key: KeyResolver,
        *,
        admin_token: str | None = None,
        deactivated: DeactivationCheck | None = None,
    ) -> None:
        self._resolve = resolve_key
        self._admin_token = admin_token
        self._deactivated = deactivated

    async def verify(self, token: str) -> Principal:
        """Principal for a valid token; ``ProblemError`` 401 otherwise."""
        if self._admin_token and hmac.compare_digest(token, self._admin_token):
            return Principal(id="admin-bootstrap", role=Role.ADMIN, name="bootstrap admin")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthorized("malformed token") from None
        key = await self._resolve(str(header.get("kid", "")))
        if key is None:
            raise _unauthorized("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "sub", "role"]},
            )
            principal = principal_from_claims(claims)
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token expired") from None
        except (jwt.PyJWTError, ValueError, KeyError):
            raise _unauthorized("invalid token") from None
        # Checked after the signature, so a forged token learns nothing about who is active.
        if self._deactivated is not None and await self._deactivated(principal.id):
            raise _unauthorized(DEACTIVATED)
        return principal


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


class JwksClient:
    """Fetches and caches the registry's JWKS; refetches at most every ``min_refresh`` s."""

    def __init__(self, url: str, *, min_refresh: float = 10.0) -> None:
        self._url = url
        self._keys: dict[str, Any] = {}
        self._min_refresh = min_refresh
        self._last_fetch = -1e9
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Fetch the key set now."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            resp = await client.get(self._url)
            resp.raise_for_status()
        keyset = jwt.PyJWKSet.from_dict(resp.json())
        self._keys = {k.key_id: k.key for k in keyset.keys if k.key_id}
        self._last_fetch = asyncio.get_running_loop().time()

    async def key(self, kid: str) -> Any | None:
        """Public key for ``kid``, fetching the set when it is not known yet."""
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if kid not in self._keys and now - self._last_fetch >= self._min_refresh:
                try:
                    await self.refresh()
                except (httpx.HTTPError, jwt.PyJWTError, ValueError) as exc:
                    log.warning("cannot fetch JWKS from %s: %s", self._url, exc)
                    self._last_fetch = now
        return self._keys.get(kid)


def bearer_token(request: Request) -> str:
    """The bearer token of a request, or 401."""
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing bearer token")
    return token.strip()


def forbidden(detail: str) -> ProblemError:
    """A 403 problem."""
    return ProblemError(403, "Forbidden", detail)


# States bearer authentication in the OpenAPI document (for clients, and for schemathesis'
# ``ignored_auth``); the token is still read by ``bearer_token``, so a missing one is a 401
# problem, not FastAPI's own answer.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A JWT issued by the registry (or the bootstrap admin token).",
)
DeclaresBearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


async def current_principal(request: Request, _bearer: DeclaresBearer) -> Principal:
    """FastAPI dependency: the caller, verified with ``app.state.verifier`` (401 otherwise)."""
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(bearer_token(request))
