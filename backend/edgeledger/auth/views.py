"""HTTP API of the auth domain: SIWE sign-in, the caller's account, API keys; user admin under /admin."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy.orm import Session

from edgeledger.auth import service
from edgeledger.auth.dependencies import (
    AdminPrincipal,
    CallerScope,
    CurrentPrincipal,
    ensure_self_or_admin,
    principal_cache,
)
from edgeledger.auth.models import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    AuditorScopeRead,
    AuditorScopeSet,
    NonceRead,
    Role,
    SessionRead,
    SiweVerifyRequest,
    UserCreate,
    UserRead,
)
from edgeledger.compliance.models import Action
from edgeledger.compliance.service import DEFAULT_LEGAL_BASIS, actor_of, record_event
from edgeledger.config import Settings
from edgeledger.db import get_session
from edgeledger.deps import get_app_settings
from edgeledger.ratelimit import rate_limit

log = logging.getLogger(__name__)

# Sign-in and key issuing are what a credential-guessing client hammers: rate-limited per caller.
router = APIRouter(prefix="/auth", tags=["auth"], dependencies=[Depends(rate_limit("auth"))])
admin_router = APIRouter(prefix="/admin", tags=["admin"])

DbSession = Annotated[Session, Depends(get_session)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]


def _forget_principals(request: Request) -> None:
    """A credential or scope changed: this process authenticates everyone afresh (other processes
    within the principal cache's max age)."""
    cache = principal_cache(request)
    if cache is not None:
        cache.clear()


def _configured_chain_id(request: Request) -> int | None:
    """The chain sessions are bound to; None while the app runs without a chain."""
    return getattr(request.app.state, "chain_id", None)


@router.post(
    "/siwe/nonce",
    response_model=NonceRead,
    response_model_exclude_none=True,
    status_code=status.HTTP_201_CREATED,
)
def create_siwe_nonce(request: Request, session: DbSession, settings: AppSettings) -> NonceRead:
    """A single-use nonce to put into the EIP-4361 message the wallet signs."""
    nonce = service.issue_nonce(session, timedelta(seconds=settings.siwe_nonce_ttl_seconds))
    return NonceRead(
        nonce=nonce.nonce,
        expires_at=nonce.expires_at,
        domain=settings.resolved_siwe_domain,
        chain_id=_configured_chain_id(request),
    )


@router.post("/siwe/verify", response_model=SessionRead)
def verify_siwe(
    body: SiweVerifyRequest, request: Request, session: DbSession, settings: AppSettings
) -> SessionRead:
    """Exchange a signed SIWE message for a session token."""
    user = service.verify_siwe(
        session,
        message=body.message,
        signature=body.signature,
        expected_domain=settings.resolved_siwe_domain,
        expected_chain_id=_configured_chain_id(request),
    )
    token, record = service.create_session(session, user, timedelta(seconds=settings.session_ttl_seconds))
    return SessionRead(token=token, expires_at=record.expires_at, user=UserRead.model_validate(user))


@router.get("/me", response_model=UserRead)
def read_me(principal: CurrentPrincipal, session: DbSession) -> UserRead:
    return UserRead.model_validate(service.get_user(session, principal.user_id))


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
def create_api_key(body: ApiKeyCreate, principal: CurrentPrincipal, session: DbSession) -> ApiKeyCreated:
    """A new API key for yourself, or (admins) for ``user_id``. The key is shown only in this response."""
    owner_id = principal.user_id if body.user_id is None else body.user_id
    ensure_self_or_admin(principal, owner_id)
    key, api_key = service.create_api_key(session, service.get_user(session, owner_id), body.label)
    return ApiKeyCreated(key=key, **ApiKeyRead.model_validate(api_key).model_dump())


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_api_key(key_id: int, request: Request, principal: CurrentPrincipal, session: DbSession) -> None:
    api_key = service.get_api_key(session, key_id)
    ensure_self_or_admin(principal, api_key.user_id)
    service.revoke_api_key(session, api_key)
    _forget_principals(request)


@admin_router.post("/users", response_model=UserRead, status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, _: AdminPrincipal, session: DbSession) -> UserRead:
    user = service.create_user(session, role=body.role, address=body.address, name=body.name)
    return UserRead.model_validate(user)


@admin_router.get("/users", response_model=list[UserRead])
def list_users(
    _: AdminPrincipal,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[UserRead]:
    return [UserRead.model_validate(user) for user in service.list_users(session, limit=limit, offset=offset)]


def _scope_read(user_id: int, scope: service.AuditScope) -> AuditorScopeRead:
    return AuditorScopeRead(
        user_id=user_id,
        is_global=scope.is_global,
        merchants=sorted(scope.merchants),
        sources=sorted(scope.sources),
    )


@router.get("/me/scope", response_model=AuditorScopeRead)
def read_my_scope(principal: CurrentPrincipal, scope: CallerScope) -> AuditorScopeRead:
    """What you may read on the audit paths (portal, audit packages, auditors' reads): global, or these
    merchants and sources; an auditor nobody has scoped reads nothing. Roles other than auditor and admin
    read nothing there."""
    return _scope_read(principal.user_id, scope)


@admin_router.get("/users/{user_id}/scope", response_model=AuditorScopeRead)
def read_auditor_scope(user_id: int, _: AdminPrincipal, session: DbSession) -> AuditorScopeRead:
    user = service.get_user(session, user_id)
    return _scope_read(user.id, service.audit_scope(session, user.id, user.role))


@admin_router.put("/users/{user_id}/scope", response_model=AuditorScopeRead)
def set_auditor_scope(
    user_id: int, body: AuditorScopeSet, request: Request, principal: AdminPrincipal, session: DbSession
) -> AuditorScopeRead:
    """Restricts an auditor to these merchants and sources. Scopes fail closed: both lists empty leave
    the auditor reading nothing; ``is_global: true`` (alone) grants every merchant and source. Every
    change is recorded in the compliance log (action ``policy_change``, subject ``auditor-scope:<id>``)."""
    user = service.get_user(session, user_id)
    admin = service.get_user(session, principal.user_id)
    scope = service.set_audit_scope(
        session, user, body.merchants, body.sources, granted_by=admin, is_global=body.is_global
    )
    record_event(
        session,
        actor=actor_of(principal),
        action=Action.policy_change,
        subject=f"auditor-scope:{user.id}",
        legal_basis=DEFAULT_LEGAL_BASIS[Role.admin],
        detail={
            "is_global": scope.is_global,
            "merchants": sorted(scope.merchants),
            "sources": sorted(scope.sources),
        },
    )
    session.commit()
    _forget_principals(request)
    if scope.is_global:
        log.warning("auditor %d granted the global audit scope by admin %d", user.id, admin.id)
    else:
        log.info(
            "auditor %d scoped by admin %d to %d merchant(s) and %d source(s)",
            user.id,
            admin.id,
            len(scope.merchants),
            len(scope.sources),
        )
    return _scope_read(user.id, scope)
