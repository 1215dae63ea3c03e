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
from typing import Annotated, Literal

from fastapi import Depends
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
)
from edgeledger.db import get_session

# auto_error=False: a missing header must produce our error shape, not FastAPI's default 403.
_bearer = HTTPBearer(auto_error=False, description="Session token from POST /auth/siwe/verify")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key from POST /auth/api-keys")


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


def get_principal(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
    session: Annotated[Session, Depends(get_session)],
) -> Principal:
    if bearer is not None:
        return Principal.of(session, authenticate_session_token(session, bearer.credentials), via="session")
    if api_key:
        return Principal.of(session, authenticate_api_key(session, api_key), via="api_key")
    raise AuthError(
        "authentication required: send 'Authorization: Bearer <session token>' or 'X-API-Key: <key>'",
        code="unauthenticated",
    )


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def _forbidden(message: str) -> AuthError:
    return AuthError(message, code="forbidden", status=403)


def require_roles(*roles: Role) -> Callable[[Principal], Principal]:
    """Dependency factory: the caller must hold one of ``roles``; admins always pass."""
    allowed = frozenset(roles) | {Role.admin}
    names = ", ".join(sorted(role.value for role in allowed))

    def _require(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            raise _forbidden(f"requires one of the roles: {names}; you are {principal.role}")
        return principal

    return _require


def require_writer(principal: CurrentPrincipal) -> Principal:
    """Any role that may change state: everyone except auditors, who are read-only."""
    if principal.role == Role.auditor:
        raise _forbidden("auditors have read-only access")
    return principal


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


def get_audit_scope(principal: CurrentPrincipal) -> AuditScope:
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
