"""The web app's shared routes (/app): home, sign-in and sign-out, the language switch, static files, and
the page renderer every area uses (:func:`render`: language, navigation, strict CSP).

An area (creators, merchants) is a module with its own ``router`` (no prefix; its paths start with
``/``), its navigation entries in :data:`NAV`, and its catalog file in ``catalogs/``; it is included at
the end of this module. The Content-Security-Policy allows only this app's own scripts and styles
(``script-src 'self'``, no inline script): page data reaches scripts through
``<script type="application/json">`` blocks, which are data, never run.

Every page (each ``GET`` of home, sign-in and the areas; static files and the language switch aside)
counts against its caller's ``app`` rate-limit bucket (``RATE_LIMIT_APP_PER_MINUTE``; the caller as the
API counts it: the signed-in user, else the client address) before anything else runs. Over it the
answer is the API's 429 ``rate_limited`` with ``Retry-After``, rendered as the app's error page (the
code in ``data-code``). The app's ``POST``s count in the ``write`` bucket as the API's do, refused by the
middleware before any route: in JSON for the pages' scripts, as the same error page (:func:`refusal_page`)
for a plain form post (billing upload, case decision, sign-out), which accepts ``text/html``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role
from edgeledger.config import Settings
from edgeledger.db import get_session
from edgeledger.deps import get_app_settings
from edgeledger.errors import EdgeLedgerError
from edgeledger.ratelimit import RateLimited, RateLimitUnavailable, rate_limit
from edgeledger.webapp import i18n
from edgeledger.webapp.session import (
    AppUser,
    MaybeUser,
    RoleRequired,
    SignInRequired,
    same_origin,
    set_session_cookie,
    sign_in,
    sign_out,
    siwe_challenge,
)

HERE = Path(__file__).parent
STATIC = {"app.css": "text/css", "wallet.js": "text/javascript", "signin.js": "text/javascript"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: Navigation per role: (path, catalog key). Areas append their entries.
NAV: dict[Role, list[tuple[str, str]]] = {Role.creator: [], Role.merchant: []}

templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/app", include_in_schema=False)

SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


class PageRefused(Exception):
    """A page refused before it ran (over the ``app`` rate limit, or the limiter's store unreachable):
    answered as the app's error page with the API error's status, code and ``Retry-After``."""

    def __init__(self, error: EdgeLedgerError) -> None:
        super().__init__(error.message)
        self.error = error


_count_page = rate_limit("app")


async def page_rate_limit(request: Request) -> None:
    """Dependency of the app's pages: counts a ``GET``/``HEAD`` against the caller's ``app`` bucket
    (other methods already count in ``write``, in the middleware)."""
    if request.method not in ("GET", "HEAD"):
        return
    try:
        await _count_page(request)
    except (RateLimited, RateLimitUnavailable) as exc:
        raise PageRefused(exc) from None


PageLimit = [Depends(page_rate_limit)]


def language(request: Request) -> str:
    return i18n.negotiate(request.cookies.get(i18n.COOKIE), request.headers.get("accept-language"))


def page_data(value: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` block: ``<``, ``>`` and ``&`` escaped so the
    text can never close the element."""
    text = json.dumps(value, separators=(",", ":"))
    # Safe: JSON text with every character that could end the element or start markup escaped.
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))  # noqa: S704


def nav_for(user: AppUser | None) -> list[tuple[str, str]]:
    if user is None:
        return []
    if user.role == Role.admin:
        return [entry for role in (Role.creator, Role.merchant) for entry in NAV[role]]
    return list(NAV.get(user.role, []))


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    user: AppUser | None = None,
    status: int = 200,
    script_messages: tuple[str, ...] = ("js.",),
) -> HTMLResponse:
    """A page in the request's language, with the navigation of ``user``'s role and the app's CSP.
    ``script_messages``: catalog prefixes the page's scripts get (in ``#app-messages``)."""
    lang = language(request)
    t = i18n.Translator(lang)
    messages: dict[str, str] = {}
    for prefix in (*script_messages, "error."):
        messages.update(t.messages(prefix))
    full = {
        "_": t,
        "fmt": t,
        "lang": lang,
        "languages": [(code, i18n.NATIVE_NAMES[code]) for code in i18n.LANGUAGES],
        "user": user,
        "nav": nav_for(user),
        "path": request.url.path,
        "messages_json": page_data(messages),
        "page_data": page_data,
        **context,
    }
    response = templates.TemplateResponse(request, name, full, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Content-Language"] = lang
    response.headers["Vary"] = "Accept-Language, Cookie"
    return response


def install_webapp_handlers(app: Any) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(f"/app/signin?next={exc.next_path}", status_code=303)

    @app.exception_handler(RoleRequired)
    async def _role(request: Request, exc: RoleRequired) -> Response:
        t = i18n.Translator(language(request))
        message = t("base.role_required", roles=", ".join(t(f"role.{r}") for r in exc.allowed))
        return render(request, "error.html", {"message": message}, status=403)

    @app.exception_handler(PageRefused)
    async def _refused(request: Request, exc: PageRefused) -> Response:
        return refusal_page(request, exc.error)


def refusal_page(request: Request, error: EdgeLedgerError) -> Response:
    """A rate-limit refusal as the app's error page: the API's status, code (``data-code``) and
    ``Retry-After``, in the request's language. Pages (``app`` bucket) and the app's plain form posts
    (``write`` bucket, refused by the middleware, which calls this) each get their own wording."""
    t = i18n.Translator(language(request))
    retry_after = int(error.details.get("retry_after", 1))
    if not isinstance(error, RateLimited):
        key = f"error.{error.code}"
    elif request.method in ("GET", "HEAD"):
        key = "base.rate_limited_page"
    else:
        key = "base.rate_limited_form"
    message = t(key, seconds=retry_after)
    response = render(request, "error.html", {"message": message, "code": error.code}, status=error.status)
    response.headers["Retry-After"] = str(retry_after)
    return response


def _local(next_path: str | None) -> str:
    """Only this app's own pages are redirect targets."""
    if next_path and next_path.startswith("/app/") and not next_path.startswith("/app//"):
        return next_path
    return "/app/"


# --- pages -------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, dependencies=PageLimit)
def home(request: Request, user: MaybeUser) -> Response:
    if user is None:
        return RedirectResponse("/app/signin", status_code=303)
    return render(request, "home.html", {}, user=user)


@router.get("/signin", response_class=HTMLResponse, dependencies=PageLimit)
def signin_page(request: Request, user: MaybeUser, next: str | None = None) -> HTMLResponse:
    return render(request, "signin.html", {"next": _local(next)}, user=user)


@router.post("/signin/nonce", dependencies=[Depends(rate_limit("auth"))])
def signin_nonce(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    address: Annotated[str, Body(embed=True, max_length=64)],
) -> dict[str, Any]:
    same_origin(request)
    return siwe_challenge(session, settings, getattr(request.app.state, "chain_id", None), address)


@router.post("/signin", dependencies=[Depends(rate_limit("auth"))])
def signin(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    message: Annotated[str, Body(max_length=4000)],
    signature: Annotated[str, Body(max_length=200)],
    next: Annotated[str | None, Body(max_length=500)] = None,
) -> JSONResponse:
    same_origin(request)
    user, token, ttl = sign_in(
        session, settings, getattr(request.app.state, "chain_id", None), message, signature
    )
    response = JSONResponse({"next": _local(next), "role": user.role})
    set_session_cookie(request, response, token, ttl)
    return response


@router.post("/signout")
def signout(request: Request, session: SessionDep) -> Response:
    same_origin(request)
    response = RedirectResponse("/app/signin", status_code=303)
    sign_out(request, session, response)
    return response


@router.get("/lang/{code}")
def switch_language(code: str, next: str | None = None) -> Response:
    """Sets the language cookie (a year) and returns to ``next``; an unknown code changes nothing."""
    response = RedirectResponse(_local(next), status_code=303)
    if code in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, code, max_age=365 * 86400, samesite="lax", path="/app")
    return response


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])


#: The area modules, each with ``router``, ``NAV`` ({role: [(path, catalog key)]}) and ``STATIC``
#: ({file name in static/: media type}). Imported here, after everything above, so each may import this one.
AREAS: tuple[str, ...] = ("creator_views", "merchant_views")

for _area in AREAS:
    _module = importlib.import_module(f"edgeledger.webapp.{_area}")
    router.include_router(_module.router, dependencies=PageLimit)  # every page of an area is counted
    STATIC.update(_module.STATIC)
    for _role, _entries in _module.NAV.items():
        NAV.setdefault(_role, []).extend(_entries)
