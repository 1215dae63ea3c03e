"""Request rate limits, counted by the ``limits`` library in this process or, with
``RATE_LIMIT_REDIS_URL``, in Redis shared by every API process.

Who is counted. ``CallerIdentity`` (edgeledger.auth.identity) settles the caller before the route runs
and before the body is read: the authenticated principal (key ``u:<user id>``) when the request's
credential authenticates, else the client address (after ``TRUSTED_PROXIES``). A credential that does
not authenticate counts for nothing, so sending a fresh random ``X-API-Key`` per request no longer opens a
fresh bucket: every such request counts against the sender's address. An address is reduced at once to
a keyed hash (IPv6 by its /64, which one subscriber usually holds whole), so no raw address is ever held
by the limiter, in memory or in Redis. The hash key is derived from the pseudonym master key
(``PSEUDONYM_MASTER_KEY``, else its 0600 file in ``DATA_DIR``), the one secret every process of a
deployment already shares, so two processes give the same address the same counter.

Buckets, each a number of requests per minute and caller:

* ``auth`` (``RATE_LIMIT_AUTH_PER_MINUTE``): the /auth routes (sign-in, API keys);
* ``audit`` (``RATE_LIMIT_AUDIT_PER_MINUTE``): portal, audit, compliance and chain-indexer routes;
* ``write`` (``RATE_LIMIT_WRITE_PER_MINUTE``): every state-changing request (:class:`RequestRateLimit`);
* ``app`` (``RATE_LIMIT_APP_PER_MINUTE``): the web app's pages (every ``GET`` under ``/app`` but its
  static files and language switch; edgeledger.webapp answers its refusals as pages);
* ``anonymous`` (``RATE_LIMIT_ANONYMOUS_PER_MINUTE``): a global budget, all callers together, for each
  route that anyone may call without a credential and that costs the service something: a sign-in nonce,
  a sign-in (a wallet's first creates its ``creator`` account), a file verification upload. Requests
  with a valid credential do not draw on it.

Over a limit a request gets ``429`` with code ``rate_limited`` and a ``Retry-After`` header (seconds
until the window that refused it ends). ``RATE_LIMIT_STRATEGY`` picks the ``limits`` strategy:
``fixed-window`` (default: one counter per caller and window), ``moving-window`` (exact over the last
60 s, one entry per request) or ``sliding-window-counter`` (two counters, weighted).

Crash safety: counters are the only state and are meant to be forgotten: a restarted process (memory
counters) or a restarted Redis starts every caller's window afresh, which can only let a caller through
early, never lock one out. When Redis cannot be reached, requests that need a counter get ``503``
``rate_limit_unavailable`` rather than going through unlimited.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from functools import cached_property

import anyio
from fastapi import Request
from fastapi.requests import HTTPConnection
from fastapi.responses import JSONResponse, Response
from limits import RateLimitItem, RateLimitItemPerMinute, strategies
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from edgeledger.auth.dependencies import caller_of
from edgeledger.config import Settings
from edgeledger.deliveries.service import master_key
from edgeledger.errors import EdgeLedgerError

STRATEGIES: dict[str, Callable[[Storage], strategies.RateLimiter]] = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
#: Prefix of every counter's key in Redis.
REDIS_PREFIX = "edgeledger:rl"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Routes anyone may call without a credential, each with its own global ``anonymous`` budget.
ANONYMOUS_ROUTES = {
    ("POST", "/auth/siwe/nonce"): "siwe-nonce",
    ("POST", "/auth/siwe/verify"): "siwe-sign-in",
    # The web app's sign-in (edgeledger.webapp) draws on the same budgets: not a second way around them.
    ("POST", "/app/signin/nonce"): "siwe-nonce",
    ("POST", "/app/signin"): "siwe-sign-in",
    ("POST", "/verify"): "verify-upload",
}


class RateLimited(EdgeLedgerError):
    status = 429
    code = "rate_limited"


class RateLimitUnavailable(EdgeLedgerError):
    status = 503
    code = "rate_limit_unavailable"


class RateLimiter:
    """Counts requests per bucket and caller key with one ``limits`` strategy over one storage."""

    def __init__(
        self,
        storage: Storage,
        limits: dict[str, int],
        secret: bytes | Callable[[], bytes],
        strategy: str = "fixed-window",
    ) -> None:
        self.storage = storage
        self.limits = dict(limits)
        self.strategy = STRATEGIES[strategy](storage)
        self._items: dict[str, RateLimitItem] = {
            bucket: RateLimitItemPerMinute(amount, namespace="edgeledger")
            for bucket, amount in limits.items()
        }
        self._secret_source = secret

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        storage: Storage = (
            RedisStorage(
                settings.rate_limit_redis_url,
                key_prefix=REDIS_PREFIX,
                wrap_exceptions=True,
                socket_timeout=2,
                socket_connect_timeout=2,
            )
            if settings.rate_limit_redis_url
            else MemoryStorage()
        )
        limits = {
            "auth": settings.rate_limit_auth_per_minute,
            "audit": settings.rate_limit_audit_per_minute,
            "write": settings.rate_limit_write_per_minute,
            "app": settings.rate_limit_app_per_minute,
            "anonymous": settings.rate_limit_anonymous_per_minute,
        }
        return cls(storage, limits, lambda: master_key(settings), settings.rate_limit_strategy)

    @property
    def shared(self) -> bool:
        """True when the counters live outside this process (Redis): counting is network I/O."""
        return not isinstance(self.storage, MemoryStorage)

    @cached_property
    def _key(self) -> bytes:
        source = self._secret_source
        secret = source() if callable(source) else source
        return hmac.new(secret, b"edgeledger rate-limit caller key", hashlib.sha256).digest()

    def address_key(self, address: str) -> str:
        """``a:`` + a keyed hash of the address (of its /64 for IPv6)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            subject = address
        else:
            subject = str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)
        return "a:" + hmac.new(self._key, subject.encode(), hashlib.sha256).hexdigest()[:32]

    def caller_key(self, connection: HTTPConnection) -> str:
        """The principal's key when the request authenticated, else its client address's."""
        caller = caller_of(connection)
        if caller is not None and caller.principal is not None:
            return f"u:{caller.principal.user_id}"
        if caller is not None:
            return self.address_key(caller.address)
        return self.address_key(connection.client.host if connection.client else "")

    def hit(self, bucket: str, key: str) -> None:
        """Counts one request of ``key`` in ``bucket``; RateLimited when that is one too many."""
        item = self._items[bucket]
        try:
            if self.strategy.hit(item, bucket, key):
                return
            reset = self.strategy.get_window_stats(item, bucket, key).reset_time
        except StorageError as exc:
            raise RateLimitUnavailable(
                f"the rate-limit store cannot be reached ({type(exc.storage_error).__name__}); retry",
                retry_after=5,
            ) from None
        retry_after = max(1, math.ceil(reset - time.time()))
        what = "requests" if bucket != "anonymous" else f"unauthenticated {key} requests from all callers"
        raise RateLimited(
            f"too many {what}: at most {item.amount} per minute ({bucket}); retry in {retry_after} s",
            retry_after=retry_after,
            bucket=bucket,
        )

    async def ahit(self, bucket: str, key: str) -> None:
        """:meth:`hit` from the event loop: in place for memory counters, in a worker thread for Redis."""
        if self.shared:
            await anyio.to_thread.run_sync(self.hit, bucket, key)
        else:
            self.hit(bucket, key)


def rate_limit(bucket: str) -> Callable[[Request], Awaitable[None]]:
    """Dependency: counts the request against the caller's ``bucket`` (429 when over it)."""

    async def _check(request: Request) -> None:
        limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
        if limiter is not None:
            await limiter.ahit(bucket, limiter.caller_key(request))

    return _check


#: Renders a refusal as a page: (the request, the refusal) -> the response.
PageRenderer = Callable[[Request, EdgeLedgerError], Response]


class RequestRateLimit:
    """ASGI middleware, inside ``CallerIdentity``: every state-changing request counts against its
    caller's ``write`` bucket, and an unauthenticated request to one of :data:`ANONYMOUS_ROUTES` against
    that route's global ``anonymous`` budget; over either it is refused before its body is read.

    The refusal is JSON, except for a browser's form submission to a path under ``pages``' prefix (a
    request that accepts ``text/html``, as a plain ``<form>`` post does and a script's ``fetch`` by default
    does not): that one gets ``pages``' renderer's page, with the same status and ``Retry-After``."""

    def __init__(self, app: ASGIApp, pages: tuple[str, PageRenderer] | None = None) -> None:
        self.app = app
        self.pages = pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITE_METHODS:
            limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
            if limiter is not None:
                try:
                    await self._count(limiter, HTTPConnection(scope))
                except (RateLimited, RateLimitUnavailable) as exc:
                    await self._refusal(scope, exc)(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, exc: EdgeLedgerError) -> Response:
        if self.pages is not None:
            prefix, render = self.pages
            request = Request(scope)
            if scope["path"].startswith(prefix) and "text/html" in request.headers.get("accept", ""):
                return render(request, exc)
        headers = {"Retry-After": str(exc.details["retry_after"])}
        return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)

    @staticmethod
    async def _count(limiter: RateLimiter, connection: HTTPConnection) -> None:
        await limiter.ahit("write", limiter.caller_key(connection))
        route = ANONYMOUS_ROUTES.get((connection.scope["method"], connection.scope["path"].rstrip("/")))
        caller = caller_of(connection)
        if route is not None and (caller is None or caller.principal is None):
            await limiter.ahit("anonymous", route)
