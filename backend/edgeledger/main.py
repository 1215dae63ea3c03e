"""The FastAPI application."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from sqlalchemy.orm import sessionmaker
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeledger import __version__
from edgeledger.api_errors import install_error_handlers
from edgeledger.apidocs.views import router as apidocs_router
from edgeledger.assets.views import router as assets_router
from edgeledger.assets.views import verify_router
from edgeledger.audit.package_views import router as audit_router
from edgeledger.auth.dependencies import PrincipalCache
from edgeledger.auth.identity import AuthenticateBeforeBody, CallerIdentity
from edgeledger.auth.views import admin_router
from edgeledger.auth.views import router as auth_router
from edgeledger.cache import SingleFlight, TtlCache
from edgeledger.chain.client import ChainClient, ChainError, Deployment
from edgeledger.compliance.views import router as compliance_router
from edgeledger.config import Settings, get_settings
from edgeledger.db import make_engine
from edgeledger.deliveries.views import router as deliveries_router
from edgeledger.errors import error_body
from edgeledger.indexer.views import router as indexer_router
from edgeledger.ipfs import IpfsClient
from edgeledger.portal.views import install_portal_handlers
from edgeledger.portal.views import router as portal_router
from edgeledger.ratelimit import RateLimiter, RequestRateLimit
from edgeledger.settlement.views import router as settlement_router
from edgeledger.webapp.views import install_webapp_handlers, refusal_page
from edgeledger.webapp.views import router as webapp_router

UPLOAD_OVERHEAD = 1024 * 1024  # multipart boundaries and the metadata field

#: The routes that take an upload (a multipart file or a raw log/billing body, read as a stream or spooled
#: to disk): their bodies may reach MAX_UPLOAD_BYTES (plus UPLOAD_OVERHEAD); every other request body
#: (JSON, forms) is read whole into memory by FastAPI, so it is held to MAX_JSON_BYTES.
UPLOAD_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/assets"),
    ("POST", "/assets/catalogues"),
    ("POST", "/verify"),
    ("POST", "/deliveries/sources/{ref}/logs"),
    ("POST", "/deliveries/sources/{ref}/stream"),
    ("POST", "/settlement/accounts/{merchant_user_id}/billing"),
    ("POST", "/app/upload"),
    ("POST", "/app/merchant/billing"),
)


class BodyLimit:
    """Refuses request bodies above their limit before they are read (Content-Length), and stops reading
    a chunked body the moment it passes the limit: 413 ``upload_too_large`` on the upload routes
    (MAX_UPLOAD_BYTES plus the multipart overhead), 413 ``body_too_large`` on every other route
    (MAX_JSON_BYTES).

    A chunked body crossing the limit makes ``receive`` raise; whatever the app then answers (FastAPI
    turns a failed body read into a 400) is replaced by the 413, as long as the app has not started its
    response yet."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_json_bytes: int | None = None,
        upload_routes: tuple[tuple[str, str], ...] = UPLOAD_ROUTES,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = max_bytes if max_json_bytes is None else max_json_bytes
        self._uploads = [(method, compile_path(path)[0]) for method, path in upload_routes]

    def _limit(self, scope: Scope) -> tuple[int, str]:
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if any(method == scope["method"] and regex.match(path) for method, regex in self._uploads):
            return self.max_bytes, "upload_too_large"
        return self.max_json_bytes, "body_too_large"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, code = self._limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit, code)
            return
        seen = 0
        tripped = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, tripped
            if tripped:
                raise _TooLarge
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                tripped = True
                raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if tripped and not started:
                return  # the app's answer to a body it could not read: the 413 goes out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not tripped or started:
                raise
        if tripped and not started:
            await self._reject(send, limit, code)

    async def _reject(self, send: Send, limit: int, code: str) -> None:
        what = "upload" if code == "upload_too_large" else "request body"
        body = error_body(code, f"{what} exceeds {limit} bytes", max_bytes=limit)
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class _TooLarge(Exception):
    pass


def _deployment_chain_id(settings: Settings) -> int | None:
    """The chain SIWE messages must name: the deployment's (no RPC call at start-up)."""
    try:
        return Deployment.load(settings.resolved_deployment_file).chain_id
    except ChainError:
        return None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Blocking request work (sync endpoints and dependencies) runs in this many threads per process.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="EdgeLedger",
        version=__version__,
        description="Content provenance, delivery receipts and settlement for CDNs. Errors are "
        '`{"error": {"code", "message", "details"}}` with a 4xx/5xx status.',
        docs_url=None,  # /docs and /redoc come from edgeledger.apidocs, with no asset from outside
        redoc_url=None,
    )
    engine = make_engine(
        settings.resolved_database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker(bind=engine, expire_on_commit=False)
    app.state.chain = ChainClient.from_settings(settings)
    app.state.ipfs = IpfsClient.from_settings(settings)
    # Added innermost first. A request meets CallerIdentity (who is calling), the rate limits keyed on
    # that caller, the 401 of a state-changing request without a valid caller, then the body size
    # limit: all before any of its body is read.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_upload_bytes + UPLOAD_OVERHEAD,
        max_json_bytes=settings.max_json_bytes,
    )
    app.add_middleware(AuthenticateBeforeBody)
    app.add_middleware(RequestRateLimit, pages=("/app/", refusal_page))
    app.add_middleware(CallerIdentity, trusted_proxies=settings.trusted_proxy_networks)
    # SIWE_CHAIN_ID, else the deployment's; with neither, sign-in is refused (never "any chain")
    app.state.chain_id = settings.siwe_chain_id or _deployment_chain_id(settings)
    app.state.rate_limiter = RateLimiter.from_settings(settings)
    app.state.principal_cache = PrincipalCache(settings.read_max_age_seconds)
    app.state.provenance_cache = TtlCache[bytes](settings.read_max_age_seconds)
    app.state.read_flights = SingleFlight[Any]()
    install_error_handlers(app)
    for router in (auth_router, admin_router, assets_router, verify_router, deliveries_router):
        app.include_router(router)
    app.include_router(settlement_router)
    app.include_router(compliance_router)
    app.include_router(indexer_router)
    app.include_router(audit_router)
    app.include_router(portal_router)
    app.include_router(webapp_router)
    app.include_router(apidocs_router)
    install_portal_handlers(app)
    install_webapp_handlers(app)

    @app.get("/health", tags=["health"], summary="Liveness (no dependencies checked)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["health"], summary="Readiness: database, chain and IPFS reachable")
    def ready() -> dict[str, Any]:
        checks: dict[str, Any] = {}
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            checks["database"] = "ok"
        checks["chain_block"] = app.state.chain.block_number()
        checks["ipfs_version"] = app.state.ipfs.version()
        return {"status": "ok", **checks}

    return app
