"""Routes of the auditor portal (/portal). Auditors (within their scope) and admins only; every route is
rate-limited per caller; record lookups are logged in the compliance log like any raw-data read."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.assets.models import Asset
from edgeledger.auth import service as auth_service
from edgeledger.auth.dependencies import Principal, principal_cache
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.compliance.models import Action
from edgeledger.compliance.service import record_access
from edgeledger.config import PROJECT_ROOT, Settings
from edgeledger.db import get_session, release_connection
from edgeledger.deliveries import proofs
from edgeledger.deliveries.models import DeliveryBatch
from edgeledger.deliveries.service import get_source
from edgeledger.deps import get_app_settings, get_chain
from edgeledger.errors import EdgeLedgerError
from edgeledger.portal import service
from edgeledger.ratelimit import rate_limit
from edgeledger.settlement.charts import duration
from edgeledger.settlement.models import Settlement
from edgeledger.settlement.payouts import Statement
from edgeledger.settlement.service import statement_context
from edgeledger.settlement.statement_html import STATEMENT_CSS, statement_html

HERE = Path(__file__).parent
COOKIE = "edgeledger_session"
#: js-sha3 (MIT) from the npm toolchain: the browser's keccak256.
KECCAK_JS = PROJECT_ROOT / "node_modules" / "js-sha3" / "build" / "sha3.min.js"
LOOKUP_BASIS = "GDPR Art. 6(1)(c): statutory audit (portal lookup)"

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["utc"] = service.utc
templates.env.filters["duration"] = duration  # anchoring lag as "3 h 4 min", not raw seconds
router = APIRouter(prefix="/portal", include_in_schema=False, dependencies=[Depends(rate_limit("audit"))])

SessionDep = Annotated[Session, Depends(get_session)]
ChainDep = Annotated[ChainClient, Depends(get_chain)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


class PortalAuthRequired(Exception):
    """No valid portal session: the browser is sent to the login page."""


class PortalForbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def portal_principal(request: Request, session: SessionDep) -> Principal:
    token = request.cookies.get(COOKIE)
    if not token:
        raise PortalAuthRequired
    try:
        user = auth_service.authenticate_session_token(session, token)
    except auth_service.AuthError:
        raise PortalAuthRequired from None
    if user.role not in (Role.auditor, Role.admin):
        raise PortalForbidden(f"the portal is for auditors and admins; you are {user.role}")
    principal = Principal.of(session, user, via="session")
    release_connection(session)  # no connection held across the hand-off to the page's thread
    return principal


PrincipalDep = Annotated[Principal, Depends(portal_principal)]


def install_portal_handlers(app: Any) -> None:
    @app.exception_handler(PortalAuthRequired)
    async def _login(request: Request, _: PortalAuthRequired) -> Response:
        return RedirectResponse("/portal/login", status_code=303)

    @app.exception_handler(PortalForbidden)
    async def _forbidden(request: Request, exc: PortalForbidden) -> Response:
        return _page(request, "error.html", {"message": exc.message}, status=403)


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src *; frame-ancestors 'none'"
    )
    return response


# --- sign-in -----------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", {"error": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    api_key: Annotated[str, Form(max_length=200)],
) -> Response:
    """Exchange an API key for a session cookie (HttpOnly, SameSite=Strict); the key is not kept."""
    try:
        key, user = auth_service.authenticate_api_key_row(session, api_key.strip())
    except auth_service.AuthError:
        return _page(request, "login.html", {"error": "That API key is not valid."}, status=401)
    if user.role not in (Role.auditor, Role.admin):
        return _page(request, "login.html", {"error": "The portal is for auditors and admins."}, status=403)
    ttl = timedelta(seconds=settings.session_ttl_seconds)
    token, _ = auth_service.create_session(session, user, ttl, api_key=key)  # ends when the key is revoked
    response = RedirectResponse("/portal/", status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=secure,
        max_age=int(ttl.total_seconds()),
        path="/portal",
    )
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        auth_service.revoke_session_token(session, token)
        cache = principal_cache(request)
        if cache is not None:
            cache.clear()
    response = RedirectResponse("/portal/login", status_code=303)
    response.delete_cookie(COOKIE, path="/portal")
    return response


# --- pages -------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, principal: PrincipalDep) -> HTMLResponse:
    charts = service.charts(session, principal.scope)
    return _page(request, "overview.html", {"principal": principal, "charts": charts})


@router.get("/sources", response_class=HTMLResponse)
def sources(request: Request, session: SessionDep, chain: ChainDep, principal: PrincipalDep) -> HTMLResponse:
    views = service.source_views(session, chain, principal.scope)
    return _page(request, "sources.html", {"principal": principal, "sources": views})


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch(
    request: Request, batch_id: str, session: SessionDep, chain: ChainDep, principal: PrincipalDep
) -> HTMLResponse:
    found = session.scalar(select(DeliveryBatch).where(DeliveryBatch.batch_id == batch_id.lower()))
    view = service.batch_view(session, chain, found) if found is not None else None
    if view is None or not principal.scope.allows_source(view.source.source_id):
        return _page(
            request,
            "error.html",
            {"principal": principal, "message": f"No batch {batch_id} in your scope."},
            status=404,
        )
    return _page(request, "batch.html", {"principal": principal, "view": view})


@router.get("/settlements", response_class=HTMLResponse)
def settlements(
    request: Request, session: SessionDep, chain: ChainDep, principal: PrincipalDep
) -> HTMLResponse:
    views = service.settlement_views(session, chain, principal.scope)
    return _page(request, "settlements.html", {"principal": principal, "settlements": views})


def _settlement_in_scope(
    request: Request, session: Session, principal: Principal, settlement_id: int
) -> Settlement | HTMLResponse:
    found = session.get(Settlement, settlement_id)
    if found is None or not principal.scope.allows_merchant(found.merchant_user_id):
        message = f"No settlement {settlement_id} in your scope."
        return _page(request, "error.html", {"principal": principal, "message": message}, status=404)
    return found


@router.get("/settlements/{settlement_id}", response_class=HTMLResponse)
def settlement(
    request: Request, settlement_id: int, session: SessionDep, chain: ChainDep, principal: PrincipalDep
) -> HTMLResponse:
    """State, merchant, period, totals in the token, root, challenge window, transaction, related
    settlements, counted batches and the statement link; the badge reads the vault."""
    found = _settlement_in_scope(request, session, principal, settlement_id)
    if isinstance(found, HTMLResponse):
        return found
    view = service.settlement_detail(session, chain, found)
    return _page(request, "settlement.html", {"principal": principal, "view": view})


#: The statement is a document of its own (inline CSS, no script): its one style element is allowed by hash.
_STATEMENT_CSP = (
    "default-src 'none'; img-src data:; frame-ancestors 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(STATEMENT_CSS.encode()).digest()).decode()}'"
)


@router.get("/settlements/{settlement_id}/statement", response_class=HTMLResponse)
def settlement_statement(
    request: Request, settlement_id: int, session: SessionDep, principal: PrincipalDep
) -> HTMLResponse:
    """The merchant's statement of the settlement as printable HTML (the API's ``format=html``)."""
    found = _settlement_in_scope(request, session, principal, settlement_id)
    if isinstance(found, HTMLResponse):
        return found
    if found.statement_json is None:
        message = f"Settlement {settlement_id} has no statement ({found.state})."
        return _page(request, "error.html", {"principal": principal, "message": message}, status=404)
    statement = Statement.model_validate_json(found.statement_json)
    ctx = dataclasses.replace(
        statement_context(session, found, statement), api_base=str(request.base_url).rstrip("/")
    )
    response = HTMLResponse(statement_html(statement, ctx))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = _STATEMENT_CSP
    return response


@router.get("/cases", response_class=HTMLResponse)
def cases(request: Request, session: SessionDep, principal: PrincipalDep) -> HTMLResponse:
    return _page(
        request, "cases.html", {"principal": principal, "cases": service.cases(session, principal.scope)}
    )


@router.get("/assets", response_class=HTMLResponse)
def assets(request: Request, session: SessionDep, chain: ChainDep, principal: PrincipalDep) -> HTMLResponse:
    return _page(
        request, "assets.html", {"principal": principal, "assets": service.asset_views(session, chain)}
    )


@router.get("/assets/{asset_id}", response_class=HTMLResponse)
def asset(
    request: Request, asset_id: int, session: SessionDep, chain: ChainDep, principal: PrincipalDep
) -> HTMLResponse:
    found = session.get(Asset, asset_id)
    if found is None:
        return _page(
            request, "error.html", {"principal": principal, "message": f"No asset {asset_id}."}, status=404
        )
    return _page(
        request, "asset.html", {"principal": principal, "view": service.asset_view(session, chain, found)}
    )


# --- lookup --------------------------------------------------------------------------------------------


def _lookup_page(
    request: Request, principal: Principal, settings: Settings, chain: ChainClient, **context: Any
) -> HTMLResponse:
    try:
        chain_id: int | None = chain.chain_id
    except ChainError:
        chain_id = None
    rpc_url = settings.public_rpc_url or settings.eth_rpc_url
    defaults = {
        "principal": principal,
        "rpc_url": rpc_url,
        "chain_id": chain_id,
        "proof": None,
        "error": None,
    }
    return _page(request, "lookup.html", {**defaults, **context}, status=400 if context.get("error") else 200)


@router.get("/lookup", response_class=HTMLResponse)
def lookup(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    chain: ChainDep,
    principal: PrincipalDep,
    source: str | None = None,
    request_id: str | None = None,
) -> HTMLResponse:
    """Look up a record by source and request id; the proof is then verified in the browser."""
    if not source or not request_id:
        return _lookup_page(
            request, principal, settings, chain, source=source or "", request_id=request_id or ""
        )
    return _prove(request, session, settings, chain, principal, source, request_id=request_id)


@router.post("/lookup", response_class=HTMLResponse)
def lookup_line(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    chain: ChainDep,
    principal: PrincipalDep,
    source: Annotated[str, Form(max_length=120)],
    line: Annotated[str, Form(max_length=65_536)],
) -> HTMLResponse:
    """Paste a raw log line (POSTed, so it never lands in a URL or an access log); its client IP is
    neither stored nor echoed."""
    return _prove(request, session, settings, chain, principal, source, line=line)


def _prove(
    request: Request,
    session: Session,
    settings: Settings,
    chain: ChainClient,
    principal: Principal,
    source_ref: str,
    *,
    request_id: str | None = None,
    line: str | None = None,
) -> HTMLResponse:
    try:
        source = get_source(session, source_ref.strip())
        if not principal.scope.allows_source(source.source_id):
            raise EdgeLedgerError(f"source {source.name} is outside your audit scope", code="out_of_scope")
        if line is not None:
            record = proofs.find_record_by_line(session, source, line.strip(), None)
        else:
            assert request_id is not None
            record = proofs.find_record(session, source, request_id.strip())
        proof = proofs.record_proof(session, settings, record)
    except EdgeLedgerError as exc:
        return _lookup_page(
            request,
            principal,
            settings,
            chain,
            source=source_ref,
            request_id=request_id or "",
            error=exc.message,
        )
    record_access(
        session, principal, Action.read_raw, f"record:{source.name}/{record.request_id}", LOOKUP_BASIS
    )
    return _lookup_page(
        request,
        principal,
        settings,
        chain,
        source=source.name,
        request_id=record.request_id,
        proof=proof,
        proof_json=service.proof_json(proof),
        server_badge=service.batch_root_badge(chain, session.get(DeliveryBatch, record.batch_pk)),  # type: ignore[arg-type]
    )


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The portal's CSS and script, and js-sha3 from the npm toolchain."""
    if name == "sha3.min.js":
        if not KECCAK_JS.is_file():
            return Response(
                "js-sha3 is missing: run scripts/bootstrap.sh", status_code=503, media_type="text/plain"
            )
        return FileResponse(KECCAK_JS, media_type="text/javascript")
    path = HERE / "static" / name
    if name not in {"portal.css", "verify.js"} or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    media = "text/css" if name.endswith(".css") else "text/javascript"
    return FileResponse(path, media_type=media)
