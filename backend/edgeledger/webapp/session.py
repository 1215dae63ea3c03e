"""Who is signed in to the web app: Sign-In with Ethereum from the browser's wallet, kept in a cookie.

The page asks for a nonce (:func:`siwe_challenge`: the nonce, the domain and chain id the server expects,
and the wallet's address in EIP-55 form), builds the EIP-4361 message, has the wallet ``personal_sign``
it, and posts message and signature. :func:`sign_in` checks them with ``auth.service.verify_siwe``
(domain, chain, validity window, signer, single-use nonce) and opens a session whose token goes into an
HttpOnly, SameSite=Strict cookie scoped to ``/app`` (the portal's cookie name, so the caller-identity
middleware counts rate limits per user). Only the token's hash is stored (auth.service).

State-changing requests of the app also must come from the app's own pages: a request whose ``Origin``
names another site is refused (:func:`same_origin`), on top of SameSite=Strict.

Dependencies: :data:`PageUser` (HTML pages: no session -> redirect to the sign-in page) and
:data:`ApiUser` (the pages' JSON endpoints: no session -> 401 JSON), each optionally narrowed to roles
with :func:`page_user` / :func:`api_user`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from eth_utils import is_address, to_checksum_address
from fastapi import Depends, Request, Response
from sqlalchemy.orm import Session

from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role, User
from edgeledger.config import Settings
from edgeledger.db import get_session, release_connection
from edgeledger.errors import EdgeLedgerError

COOKIE = "edgeledger_session"
COOKIE_PATH = "/app"
SIWE_STATEMENT = "Sign in to EdgeLedger."


class WebAppError(EdgeLedgerError):
    """An error of the app's JSON endpoints (rendered as the API's error body)."""


class SignInRequired(Exception):
    """No valid session on an HTML page: the browser is sent to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class RoleRequired(Exception):
    """Signed in, but this page is for another role."""

    def __init__(self, role: str, allowed: tuple[Role, ...]) -> None:
        super().__init__(role)
        self.role = role
        self.allowed = allowed


@dataclass(frozen=True)
class AppUser:
    user_id: int
    role: Role
    address: str | None
    name: str | None

    @property
    def is_creator(self) -> bool:
        return self.role in (Role.creator, Role.admin)

    @property
    def is_merchant(self) -> bool:
        return self.role in (Role.merchant, Role.admin)


def _user_of(request: Request, session: Session) -> AppUser | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        user = auth_service.authenticate_session_token(session, token)
    except auth_service.AuthError:
        return None
    address = to_checksum_address(user.address) if user.address else None
    found = AppUser(user.id, Role(user.role), address, user.name)
    release_connection(session)
    return found


def current_user(request: Request, session: Annotated[Session, Depends(get_session)]) -> AppUser | None:
    """The signed-in user, or None (pages that anyone may see)."""
    return _user_of(request, session)


def page_user(*roles: Role) -> Callable[..., AppUser]:
    """Dependency for HTML pages: the signed-in user (of ``roles``, when given)."""

    def dependency(request: Request, session: Annotated[Session, Depends(get_session)]) -> AppUser:
        user = _user_of(request, session)
        if user is None:
            raise SignInRequired(request.url.path)
        if roles and user.role not in roles and user.role != Role.admin:
            raise RoleRequired(user.role, roles)
        return user

    return dependency


def api_user(*roles: Role) -> Callable[..., AppUser]:
    """Dependency for the pages' JSON endpoints: the signed-in user, else 401/403 JSON."""

    def dependency(request: Request, session: Annotated[Session, Depends(get_session)]) -> AppUser:
        same_origin(request)
        user = _user_of(request, session)
        if user is None:
            raise WebAppError("sign in first", code="unauthenticated", status=401)
        if roles and user.role not in roles and user.role != Role.admin:
            raise WebAppError(
                f"this is for {', '.join(roles)}; you are {user.role}", code="forbidden", status=403
            )
        return user

    return dependency


PageUser = Annotated[AppUser, Depends(page_user())]
ApiUser = Annotated[AppUser, Depends(api_user())]
MaybeUser = Annotated[AppUser | None, Depends(current_user)]


def same_origin(request: Request) -> None:
    """Refuses a state-changing request sent from another site's page (its ``Origin`` header)."""
    if request.method in ("GET", "HEAD"):
        return
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise WebAppError("requests must come from this site's pages", code="cross_origin", status=403)


def _iso(moment: datetime) -> str:
    """EIP-4361's RFC 3339 form: whole seconds, UTC, "Z"."""
    return moment.replace(tzinfo=UTC, microsecond=0).isoformat().replace("+00:00", "Z")


def siwe_challenge(
    session: Session, settings: Settings, chain_id: int | None, address: str
) -> dict[str, Any]:
    """What the page needs to build the EIP-4361 message for ``address``."""
    if not is_address(address):
        raise WebAppError(f"{address!r} is not an Ethereum address", code="address_invalid", status=400)
    if chain_id is None:
        raise WebAppError(
            "sign-in is not available: no chain is configured", code="siwe_chain_unknown", status=503
        )
    nonce = auth_service.issue_nonce(session, timedelta(seconds=settings.siwe_nonce_ttl_seconds))
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "domain": settings.resolved_siwe_domain,
        "address": to_checksum_address(address),
        "statement": SIWE_STATEMENT,
        "uri": f"https://{settings.resolved_siwe_domain}",
        "version": "1",
        "chain_id": chain_id,
        "nonce": nonce.nonce,
        "issued_at": _iso(now),
        "expiration_time": _iso(nonce.expires_at),
    }


def sign_in(
    session: Session, settings: Settings, chain_id: int | None, message: str, signature: str
) -> tuple[User, str, timedelta]:
    """Verifies the signed message; returns the user, a new session token and its lifetime."""
    try:
        user = auth_service.verify_siwe(
            session,
            message=message,
            signature=signature,
            expected_domain=settings.resolved_siwe_domain,
            expected_chain_id=chain_id,
        )
    except auth_service.AuthError as exc:
        raise WebAppError(exc.message, code=exc.code, status=exc.status) from None
    ttl = timedelta(seconds=settings.session_ttl_seconds)
    token, _ = auth_service.create_session(session, user, ttl)
    return user, token, ttl


def set_session_cookie(request: Request, response: Response, token: str, ttl: timedelta) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=int(ttl.total_seconds()),
        path=COOKIE_PATH,
    )


def sign_out(request: Request, session: Session, response: Response) -> None:
    token = request.cookies.get(COOKIE)
    if token:
        auth_service.revoke_session_token(session, token)
        cache = getattr(request.app.state, "principal_cache", None)
        if cache is not None:
            cache.clear()
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
