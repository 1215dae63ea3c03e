"""FastAPI dependencies: who is calling (:func:`get_principal`) and may they (:func:`require_roles`).

Typical use in another domain's views::

    @router.post("/assets")
    def create_asset(principal: WriterPrincipal, ...): ...

    @router.get("/reports", dependencies=[Depends(require_roles(Role.auditor, Role.operator))])
    def list_reports(...): ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, Request
from fastapi.requests import HTTPConnection
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role, User
from edgeledger.auth.service import (
    NO_SCOPE,
    AuditScope,
    AuthError,
    audit_scope,
    authenticate_api_key,
    authenticate_session_token,
    hash_secret,
)
from edgeledger.cache import SingleFlight, TtlCache
from edgeledger.db import get_session, release_connection

# auto_error=False: a missing header must produce our error shape, not FastAPI's default 403.
_bearer = HTTPBearer(auto_error=False, description="Session token from POST /auth/siwe/verify")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key from POST /auth/api-keys")


#: Key of the :class:`Caller` in a request's state (``scope["state"]``), set by ``identity.CallerIdentity``.
CALLER_STATE = "edgeledger_caller"
Source = Literal["bearer", "api_key", "cookie"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: int
    role: Role
    address: str | None
    via: Literal["api_key", "session"]
    #: What the caller may read on the audit paths: admins and unscoped auditors everything, a scoped
    #: auditor its merchants and sources, other roles nothing (their own-resource rules apply).
    scope: AuditScope = NO_SCOPE

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin

    @classmethod
    def of(cls, session: Session, user: User, via: Literal["api_key", "session"]) -> Principal:
        scope = audit_scope(session, user.id, user.role)
        return cls(user_id=user.id, role=user.role, address=user.address, via=via, scope=scope)


class PrincipalCache(TtlCache[Principal]):
    """Who a credential authenticated as, remembered for ``max_age`` seconds per API process.

    Authenticating costs a database round trip or two per request (key, user, auditor scope), more than
    most read endpoints' own work. A credential seen within ``max_age`` seconds is answered from here:
    a revoked key, a disabled user or a changed scope takes effect in this process at once (the auth
    routes call :meth:`clear`) and in every other process within ``max_age`` seconds (``READ_MAX_AGE``,
    1 s by default, the same bound as the shared chain head). Entries are keyed by the credential's
    sha-256, never the credential itself."""

    def __init__(self, max_age: float, max_entries: int = 10_000) -> None:
        super().__init__(max_age, max_entries)
        self.flights: SingleFlight[Principal] = SingleFlight()


def principal_cache(request: Request) -> PrincipalCache | None:
    return getattr(request.app.state, "principal_cache", None)


def _authenticate(session: Session, credential: str, via: Literal["api_key", "session"]) -> Principal:
    if via == "session":
        principal = Principal.of(session, authenticate_session_token(session, credential), via="session")
    else:
        principal = Principal.of(session, authenticate_api_key(session, credential), via="api_key")
    # The endpoint runs in another thread hand-off: give the connection back to the pool in between, so
    # that no session holds a connection while it waits for a thread (requests waiting for connections
    # while holding every thread would otherwise deadlock the process until the pool's timeout).
    release_connection(session)
    return principal


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller of one request as far as it is known before its body is read (``identity.py``)."""

    #: Client address (after trusted proxies). Only ever kept in memory for this request; the rate
    #: limiter reduces it to a keyed hash.
    address: str
    #: Where the credential came from; None when the request carries none.
    source: Source | None = None
    principal: Principal | None = None
    #: Why the credential did not authenticate (unknown, revoked, expired key or token).
    error: AuthError | None = None


def caller_of(connection: HTTPConnection) -> Caller | None:
    """The :class:`Caller` found before the route ran; None in an app without ``CallerIdentity``."""
    state: dict[str, Any] = connection.scope.get("state") or {}
    caller = state.get(CALLER_STATE)
    return caller if isinstance(caller, Caller) else None


async def get_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
    session: Annotated[Session, Depends(get_session)],
) -> Principal:
    """The caller, from a session token or an API key: as ``CallerIdentity`` found it before the route
    ran, else from the :class:`PrincipalCache` when it saw the credential within its max age (no thread
    hand-off, no database), else from the database."""
    credential: str
    via: Literal["api_key", "session"]
    if bearer is not None:
        credential, via, source = bearer.credentials, "session", "bearer"
    elif api_key:
        credential, via, source = api_key, "api_key", "api_key"
    else:
        raise AuthError(
            "authentication required: send 'Authorization: Bearer <session token>' or 'X-API-Key: <key>'",
            code="unauthenticated",
        )
    caller = caller_of(request)
    if caller is not None and caller.source == source:
        if caller.principal is not None:
            return caller.principal
        if caller.error is not None:
            raise caller.error
    return await authenticate_credential(request.app.state, session, credential, via)


async def authenticate_credential(
    state: Any, session: Session, credential: str, via: Literal["api_key", "session"]
) -> Principal:
    """The principal of ``credential`` (an API key or a session token) for the app whose ``state`` is
    given: from its principal cache when it has one, else from the database (AuthError when it does
    not authenticate)."""
    cache: PrincipalCache | None = getattr(state, "principal_cache", None)
    if cache is None:
        return await anyio.to_thread.run_sync(_authenticate, session, credential, via)
    key = f"{via}:{hash_secret(credential)}"
    principal = cache.get(key)
    if principal is None:  # one lookup per credential and process at a time (SingleFlight)
        principal = await cache.flights.run(
            key, lambda: _authenticate_into(cache, key, session, credential, via)
        )
    return principal


async def _authenticate_into(
    cache: PrincipalCache, key: str, session: Session, credential: str, via: Literal["api_key", "session"]
) -> Principal:
    principal = await anyio.to_thread.run_sync(_authenticate, session, credential, via)
    cache.put(key, principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


#: Attribute of a role-checking dependency: the roles it lets through. The role check of a state-changing
#: request is made from it before the request's body is read (identity.AuthenticateBeforeBody).
ALLOWED_ROLES = "allowed_roles"


def forbidden_role(role: Role, allowed: frozenset[Role]) -> AuthError:
    names = ", ".join(sorted(r.value for r in allowed))
    return _forbidden(f"requires one of the roles: {names}; you are {role}")


def _forbidden(message: str) -> AuthError:
    return AuthError(message, code="forbidden", status=403)


def require_roles(*roles: Role) -> Callable[[Principal], Principal]:
    """Dependency factory: the caller must hold one of ``roles``; admins always pass."""
    allowed = frozenset(roles) | {Role.admin}

    async def _require(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            raise forbidden_role(principal.role, allowed)
        return principal

    setattr(_require, ALLOWED_ROLES, allowed)  # read by identity.AuthenticateBeforeBody
    return _require


async def require_writer(principal: CurrentPrincipal) -> Principal:
    """Any role that may change state: everyone except auditors, who are read-only."""
    if principal.role == Role.auditor:
        raise _forbidden("auditors have read-only access")
    return principal


setattr(require_writer, ALLOWED_ROLES, frozenset(Role) - {Role.auditor})


WriterPrincipal = Annotated[Principal, Depends(require_writer)]
AdminPrincipal = Annotated[Principal, Depends(require_roles(Role.admin))]


def ensure_owner_or_admin(principal: Principal, address: str | None) -> None:
    """For resources owned by a wallet: only that wallet's account (or an admin) may touch them."""
    if principal.is_admin:
        return
    if principal.address is None or address is None or principal.address.lower() != address.lower():
        raise _forbidden(f"only the owner ({address}) or an admin may do this")


def ensure_self_or_admin(principal: Principal, user_id: int) -> None:
    """For resources owned by an account (API keys, ...): only that account or an admin."""
    if not principal.is_admin and principal.user_id != user_id:
        raise _forbidden(f"only user {user_id} or an admin may do this")


async def get_audit_scope(principal: CurrentPrincipal) -> AuditScope:
    """The caller's read scope on the audit paths (see :class:`AuditScope`)."""
    return principal.scope


CallerScope = Annotated[AuditScope, Depends(get_audit_scope)]


def out_of_scope(what: str) -> AuthError:
    """403 for a merchant or source outside a scoped auditor's scope."""
    return AuthError(f"{what} is outside your audit scope", code="out_of_scope", status=403)


def ensure_merchant_in_scope(scope: AuditScope, merchant_user_id: int | None) -> None:
    if not scope.allows_merchant(merchant_user_id):
        raise out_of_scope(f"merchant {merchant_user_id}")


def ensure_source_in_scope(scope: AuditScope, source_id: str | None) -> None:
    if not scope.allows_source(source_id):
        raise out_of_scope(f"source {source_id}")
