"""Per-caller request rate limits (fixed one-minute windows) for the auth, audit and portal endpoints.

A caller is its credential (API key, bearer token, portal cookie) when it sends one, else its client
address; either is reduced to a keyed hash at once, so neither a credential nor a raw IP is ever held
by the limiter (in memory or in Redis). With ``RATE_LIMIT_REDIS_URL`` every API process shares one
counter per caller and window (``INCR`` + ``EXPIRE``); without it each process counts on its own.

Over the limit a request gets ``429`` with code ``rate_limited`` and a ``Retry-After`` header. Buckets:
``auth`` (sign-in, API keys), ``audit`` (portal, audit, compliance, indexer routes) and ``write`` (every
state-changing request, counted by :class:`WriteRateLimit` before the body is read).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from edgeledger.config import Settings
from edgeledger.errors import EdgeLedgerError

WINDOW_SECONDS = 60


class RateLimited(EdgeLedgerError):
    status = 429
    code = "rate_limited"


class Counter(Protocol):
    def hit(self, key: str, window: int) -> int:
        """Counts one request of ``key`` in window number ``window``; returns the count so far."""
        ...


class MemoryCounter:
    """Counts in this process; forgets windows older than the current one."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._window = 0

    def hit(self, key: str, window: int) -> int:
        with self._lock:
            if window != self._window:
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
                self._window = window
            count = self._counts.get((key, window), 0) + 1
            self._counts[(key, window)] = count
            return count


class RedisCounter:
    """Counts in Redis, shared by every API process."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2)

    def hit(self, key: str, window: int) -> int:
        name = f"edgeledger:rl:{key}:{window}"
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, WINDOW_SECONDS * 2)
        count, _ = pipe.execute()
        return int(count)


class RateLimiter:
    def __init__(self, counter: Counter, limits: dict[str, int], secret: bytes) -> None:
        self.counter = counter
        self.limits = limits
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        counter: Counter = (
            RedisCounter(settings.rate_limit_redis_url) if settings.rate_limit_redis_url else MemoryCounter()
        )
        limits = {
            "auth": settings.rate_limit_auth_per_minute,
            "audit": settings.rate_limit_audit_per_minute,
            "write": settings.rate_limit_write_per_minute,
        }
        # Shared counters need one key across processes; the pseudonym master key is such a secret.
        master = settings.pseudonym_master_key
        secret = master.get_secret_value().encode() if master is not None else secrets.token_bytes(32)
        return cls(counter, limits, secret)

    def caller_key(self, request: Request) -> str:
        credential = (
            request.headers.get("x-api-key")
            or request.headers.get("authorization")
            or request.cookies.get("edgeledger_session")
        )
        who = f"c:{credential}" if credential else f"a:{request.client.host if request.client else ''}"
        return hmac.new(self._secret, who.encode(), hashlib.sha256).hexdigest()[:32]

    def check(self, bucket: str, request: Request, now: float | None = None) -> None:
        limit = self.limits[bucket]
        window = int((time.time() if now is None else now) // WINDOW_SECONDS)
        count = self.counter.hit(f"{bucket}:{self.caller_key(request)}", window)
        if count > limit:
            retry_after = WINDOW_SECONDS - int((time.time() if now is None else now) % WINDOW_SECONDS)
            raise RateLimited(
                f"too many {bucket} requests: at most {limit} per minute; retry in {retry_after} s",
                retry_after=retry_after,
            )


def rate_limit(bucket: str) -> Callable[[Request], Awaitable[None]]:
    """Dependency: counts the request against ``bucket``'s per-minute limit (429 when over it).

    Counting in memory happens in the event loop (no thread hand-off); counting in Redis is network I/O
    and runs in a worker thread."""

    async def _check(request: Request) -> None:
        limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
        if limiter is None:
            return
        if isinstance(limiter.counter, MemoryCounter):
            limiter.check(bucket, request)
        else:
            await anyio.to_thread.run_sync(limiter.check, bucket, request)

    return _check


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class WriteRateLimit:
    """ASGI middleware: every state-changing request (POST, PUT, PATCH, DELETE) counts against the
    caller's "write" bucket; over it the request is refused with 429 before it is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITE_METHODS:
            limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
            if limiter is not None:
                try:
                    limiter.check("write", Request(scope))
                except RateLimited as exc:
                    await JSONResponse(
                        exc.to_body(),
                        status_code=429,
                        headers={"Retry-After": str(exc.details["retry_after"])},
                    )(scope, receive, send)
                    return
        await self.app(scope, receive, send)
