"""Who is calling, settled before a request's body is read: :class:`CallerIdentity`, the outermost
middleware of the API, and :class:`AuthenticateBeforeBody`.

For every HTTP request it finds

* the client address: the TCP peer, or, when the peer is one of ``TRUSTED_PROXIES`` (CIDRs, default
  none), the nearest address in ``X-Forwarded-For`` that is not a trusted proxy. A client can write any
  ``X-Forwarded-For`` it likes, so the header counts only from proxies the operator names;
* the principal of the credential the request carries (``Authorization: Bearer``, ``X-API-Key``, else the
  portal's session cookie), authenticated once through the :class:`PrincipalCache`.

Both go into the request's state as a :class:`Caller`: the rate limits key on the principal when there is
one, else on the client address (edgeledger.ratelimit), and :func:`get_principal` takes the principal from
there rather than looking the credential up again.

A state-changing request whose header credential does not authenticate, or that sends none to a route
that needs a caller, is refused with 401 by :class:`AuthenticateBeforeBody`, before its body is read
(after the rate limits have counted it against its sender's address). Without this, a multipart upload
(``POST /assets``, ``POST /verify``) was read to its end, up to ``MAX_UPLOAD_BYTES``, before FastAPI
resolved the route's dependencies and answered 401. A route needs a caller when the app's OpenAPI
document gives it a security requirement, which FastAPI does for every route that depends on
``get_principal``, however deep. The sign-in routes ignore a stale credential sent along rather than
refusing it.

A state-changing request whose principal lacks the route's role is refused with 403 ``forbidden`` before
its body is read too: the role-checking dependencies (``require_roles``, ``require_writer``) name the roles
they let through, and :func:`role_requirements` collects them per route from the app's own dependency
trees, so a creator's key posting a 1 GiB file to a merchant's route costs the server no body bytes. The
routes keep their own checks (the same roles): this is an early answer, not the only one.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import anyio
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from edgeledger.auth.dependencies import (
    ALLOWED_ROLES,
    CALLER_STATE,
    Caller,
    Source,
    authenticate_credential,
    caller_of,
    forbidden_role,
)
from edgeledger.auth.models import Role
from edgeledger.auth.service import AuthError

log = logging.getLogger(__name__)

#: The portal's session cookie (edgeledger.portal.views).
PORTAL_COOKIE = "edgeledger_session"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Routes that hand out credentials: a stale credential sent along is ignored there, not refused.
SIGN_IN_PATHS = frozenset({"/auth/siwe/nonce", "/auth/siwe/verify"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "192.0.2.1:443"
        value = value.split(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy; then, walking ``X-Forwarded-For``
    from the right (the hop nearest to us), the first address that is not a trusted proxy. A malformed
    entry ends the walk at the last good hop."""
    current = _ip(peer)
    if current is None or not trusted:
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        if not any(current in network for network in trusted):
            break
        parsed = _ip(hop)
        if parsed is None:
            break
        current = parsed
    return str(current)


def credential_of(connection: HTTPConnection) -> tuple[Source, str] | None:
    """The credential as :func:`get_principal` reads it (bearer token, else API key), else the portal's
    session cookie."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "bearer", token.strip()
    api_key = connection.headers.get("x-api-key")
    if api_key:
        return "api_key", api_key
    cookie = connection.cookies.get(PORTAL_COOKIE)
    if cookie:
        return "cookie", cookie
    return None


class CallerIdentity:
    """ASGI middleware: puts the request's :class:`Caller` into its state (before the body is read)."""

    def __init__(self, app: ASGIApp, trusted_proxies: tuple[Network, ...] = ()) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[CALLER_STATE] = await self._identify(scope)
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope) -> Caller:
        connection = HTTPConnection(scope)
        peer = scope["client"][0] if scope.get("client") else ""
        forwarded = connection.headers.getlist("x-forwarded-for") if self.trusted_proxies else []
        address = client_address(peer, forwarded, self.trusted_proxies)
        found = credential_of(connection)
        if found is None:
            return Caller(address)
        source, credential = found
        state = scope["app"].state
        session = state.sessionmaker()
        try:
            via: Literal["api_key", "session"] = "api_key" if source == "api_key" else "session"
            principal = await authenticate_credential(state, session, credential, via)
        except AuthError as exc:
            return Caller(address, source, error=exc)
        except Exception as exc:  # database unavailable, ...: the route's own lookup reports it
            log.warning("could not authenticate before the route: %s", type(exc).__name__)
            return Caller(address, source)
        finally:
            if session.in_transaction():
                await anyio.to_thread.run_sync(session.close)
            else:
                session.close()
        return Caller(address, source, principal=principal)


class AuthenticateBeforeBody:
    """ASGI middleware, inside the rate limits (so refused requests still count against their sender):
    a state-changing request whose header credential did not authenticate, or that sends none to a route
    that needs a caller, is refused with 401 before its body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._secured: list[tuple[str, re.Pattern[str]]] | None = None
        self._roles: list[RoleRequirement] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITE_METHODS:
            caller = caller_of(HTTPConnection(scope))
            refusal = self._refusal(scope, caller) if caller is not None else None
            if refusal is not None:
                await JSONResponse(refusal.to_body(), status_code=refusal.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, caller: Caller) -> AuthError | None:
        if caller.principal is not None:
            # The API's routes take header credentials only; a browser session's cookie is for the
            # portal's and the app's pages, which check their own roles.
            return self._role_refusal(scope, caller.principal.role) if caller.source != "cookie" else None
        if caller.error is not None and caller.source != "cookie":
            # A client signing in again may still send its expired token: sign-in is for exactly that.
            if scope["path"].rstrip("/") in SIGN_IN_PATHS:
                return None
            return caller.error
        if caller.source in (None, "cookie") and self._route_needs_principal(scope):
            return AuthError(
                "authentication required: send 'Authorization: Bearer <session token>' or 'X-API-Key: <key>'",
                code="unauthenticated",
            )
        return None

    def _route_needs_principal(self, scope: Scope) -> bool:
        if self._secured is None:
            self._secured = secured_operations(scope["app"].openapi())
        path = _app_path(scope)
        return any(method == scope["method"] and regex.match(path) for method, regex in self._secured)

    def _role_refusal(self, scope: Scope, role: Role) -> AuthError | None:
        if self._roles is None:
            self._roles = role_requirements(scope["app"].routes)
        path, method = _app_path(scope), scope["method"]
        # The first route matching method and path is the one Starlette's router will call.
        for methods, regex, allowed in self._roles:
            if method in methods and regex.match(path):
                return forbidden_role(role, allowed) if allowed is not None and role not in allowed else None
        return None


#: (methods, path pattern, roles let through or None for "no role check") of one route.
RoleRequirement = tuple[frozenset[str], re.Pattern[str], frozenset[Role] | None]


def _app_path(scope: Scope) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def role_requirements(routes: Sequence[BaseRoute]) -> list[RoleRequirement]:
    """Every API route in routing order (routers included into the app flattened, as FastAPI's router
    sees them) with the roles its dependencies let through: the intersection of the ``allowed_roles`` of
    every role-checking dependency in its tree, however deep (None: no role check)."""
    table: list[RoleRequirement] = []
    for context in iter_route_contexts(routes):
        route, path = context.original_route, context.path
        if not isinstance(route, APIRoute) or path is None:
            continue
        dependant = getattr(context, "dependant", None) or route.dependant
        regex, _, _ = compile_path(path)
        table.append((frozenset(context.methods or ()), regex, _allowed_roles(dependant)))
    return table


def _allowed_roles(dependant: Dependant) -> frozenset[Role] | None:
    allowed: frozenset[Role] | None = getattr(dependant.call, ALLOWED_ROLES, None)
    for sub in dependant.dependencies:
        inner = _allowed_roles(sub)
        if inner is not None:
            allowed = inner if allowed is None else allowed & inner
    return allowed


def secured_operations(openapi: dict[str, Any]) -> list[tuple[str, re.Pattern[str]]]:
    """(method, path pattern) of every operation the OpenAPI document says needs a credential: FastAPI
    lists the security schemes of :func:`get_principal` (bearer token, API key) for every route that
    depends on it, however deep."""
    secured = []
    for path, operations in openapi.get("paths", {}).items():
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
        for method, operation in operations.items():
            if isinstance(operation, dict) and operation.get("security"):
                secured.append((method.upper(), pattern))
    return secured
