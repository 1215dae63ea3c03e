"""The merchants' pages (/app/merchant/...): escrow with its shortfall and a deposit from the wallet, rate
cards, billing import, reconciliation cases to decide, settlements with their challenge window (and a
challenge from the wallet), statements to download.

Pages are server-rendered (``render``: the request's language, strict CSP); forms post to these routes
(multipart for the bill, urlencoded for a decision) and work without a script. Only the wallet steps
use ``static/merchant.js``: the page asks a JSON endpoint here for ready calldata, the wallet sends it.
Every route takes the merchant from the session (``page_user``/``api_user`` of role merchant) and only
ever reads or changes that merchant's account; state-changing requests must come from this site's
pages (``same_origin``, on top of the SameSite=Strict cookie).
"""

from __future__ import annotations

import base64
import hashlib
import time
from functools import partial
from typing import Annotated, Any, Literal

import anyio.from_thread
from fastapi import APIRouter, Body, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUploadFile

from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import get_session
from edgeledger.deps import get_app_settings, get_chain
from edgeledger.errors import EdgeLedgerError
from edgeledger.settlement.billing import utc_day
from edgeledger.settlement.statement_html import STATEMENT_CSS
from edgeledger.webapp import i18n, merchant
from edgeledger.webapp.session import AppUser, api_user, page_user, same_origin
from edgeledger.webapp.views import language, render

router = APIRouter()
NAV = {
    Role.merchant: [
        ("/app/merchant/escrow", "merchant.nav.escrow"),
        ("/app/merchant/rate-cards", "merchant.nav.rate_cards"),
        ("/app/merchant/billing", "merchant.nav.billing"),
        ("/app/merchant/cases", "merchant.nav.cases"),
        ("/app/merchant/settlements", "merchant.nav.settlements"),
    ]
}
STATIC = {"merchant.js": "text/javascript"}

SessionDep = Annotated[Session, Depends(get_session)]
ChainDep = Annotated[ChainClient, Depends(get_chain)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
MerchantPage = Annotated[AppUser, Depends(page_user(Role.merchant))]
MerchantApi = Annotated[AppUser, Depends(api_user(Role.merchant))]
SCRIPTS = ("js.", "merchant.js.")
#: multipart framing and the small fields around the billing file
FORM_OVERHEAD = 64 * 1024
#: The statement is a document of its own (inline CSS, no script): its one style element allowed by hash.
STATEMENT_CSP = (
    "default-src 'none'; img-src data:; frame-ancestors 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(STATEMENT_CSS.encode()).digest()).decode()}'"
)


def _error_text(request: Request, exc: EdgeLedgerError) -> str:
    """The error in the page's language when the catalog knows its code, else the domain's message."""
    t = i18n.Translator(language(request))
    return t(f"error.{exc.code}") if t.has(f"error.{exc.code}") else exc.message


def _problem_text(request: Request, problem: dict[str, Any]) -> dict[str, Any]:
    """A bill's bad line worded in the page's language from its code and values (settlement.billing),
    else as the parser wrote it."""
    t = i18n.Translator(language(request))
    key = f"merchant.billing.problem.{problem.get('code')}"
    if not t.has(key):
        return problem
    try:
        text = t(key, **{k: str(v) for k, v in (problem.get("values") or {}).items()})
    except (KeyError, IndexError):  # a value the wording names is missing: keep the parser's text
        return problem
    return {**problem, "problem": text}


def _duration(t: i18n.Translator) -> Any:
    def text(seconds: int) -> str:
        days, rest = divmod(max(0, int(seconds)), 86400)
        hours, minutes = rest // 3600, rest % 3600 // 60
        if days:
            return t("merchant.duration.dh", d=days, h=hours)
        return t("merchant.duration.hm", h=hours, m=minutes)

    return text


def _page(
    request: Request,
    name: str,
    user: AppUser,
    account: Any,
    context: dict[str, Any],
    status: int = 200,
) -> HTMLResponse:
    t = i18n.Translator(language(request))
    full = {"account": account, "duration": _duration(t), **context}
    return render(request, name, full, user=user, status=status, script_messages=SCRIPTS)


# --- escrow ----------------------------------------------------------------------------------------------


@router.get("/merchant", include_in_schema=False)
def merchant_home() -> Response:
    return RedirectResponse("/app/merchant/escrow", status_code=303)


@router.get("/merchant/escrow", response_class=HTMLResponse)
def escrow_page(
    request: Request, session: SessionDep, chain: ChainDep, settings: SettingsDep, user: MerchantPage
) -> HTMLResponse:
    account = merchant.account_of(session, user)
    context: dict[str, Any] = {}
    if account is not None:
        view = merchant.escrow_view(session, chain, account, user)
        open_cases, _ = merchant.case_views(session, account)
        context = {
            "view": view,
            "open_cases": len(open_cases),
            "script_data": {
                "address": account.address,
                "chain_id": getattr(request.app.state, "chain_id", None),
                "decimals": account.token_decimals,
                "symbol": account.token_symbol,
                "escrow_call": view.escrow_call,
            },
        }
    return _page(request, "merchant_escrow.html", user, account, context)


@router.post("/merchant/escrow/deposit")
def prepare_deposit(
    session: SessionDep,
    chain: ChainDep,
    user: MerchantApi,
    amount: Annotated[str, Body(embed=True, max_length=80)],
) -> dict[str, Any]:
    """The approve and deposit transactions of ``amount`` (token units, e.g. ``"25.5"``) for the
    merchant's wallet to send, and the ``escrowOf`` call to re-read the balance after."""
    account = merchant.require_account(session, user)
    minor = merchant.parse_amount(amount, account.token_decimals)
    prepared = merchant.deposit_calls(chain, account, user, minor)
    prepared["amount_text"] = i18n.format_amount(minor, account.token_decimals, account.token_symbol)
    return prepared


# --- rate cards ------------------------------------------------------------------------------------------


@router.get("/merchant/rate-cards", response_class=HTMLResponse)
def rate_cards_page(request: Request, session: SessionDep, user: MerchantPage) -> HTMLResponse:
    account = merchant.account_of(session, user)
    cards = merchant.rate_card_views(session, account, int(time.time())) if account is not None else []
    return _page(request, "merchant_rate_cards.html", user, account, {"cards": cards})


# --- billing ---------------------------------------------------------------------------------------------


def _billing_context(session: Session, settings: Settings, account: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "default_day": utc_day(merchant.period_choices(settings, now, 1)[0]),
        "slots": list(range(0, 86400, settings.delivery_period_seconds)),
        "period_seconds": settings.delivery_period_seconds,
        "imports": merchant.recent_imports(session, account) if account is not None else [],
    }


@router.get("/merchant/billing", response_class=HTMLResponse)
def billing_page(
    request: Request, session: SessionDep, settings: SettingsDep, user: MerchantPage
) -> HTMLResponse:
    account = merchant.account_of(session, user)
    return _page(
        request, "merchant_billing.html", user, account, _billing_context(session, settings, account)
    )


@router.post("/merchant/billing", response_class=HTMLResponse)
def billing_import(
    request: Request, session: SessionDep, settings: SettingsDep, user: MerchantPage
) -> HTMLResponse:
    """Imports the uploaded bill (multipart: ``file``, ``day``, ``slot``, ``bytes_unit``) for the chosen
    period; the page shows every problem with its line number (422) or a summary of what was stored.
    The body is read only after the session, role and origin are checked, and at most
    ``BILLING_MAX_BYTES`` of the file."""
    same_origin(request)
    account = merchant.require_account(session, user)
    result: merchant.ImportResult | None = None
    problems: list[dict[str, Any]] = []
    error: str | None = None
    status = 200
    day, filename = "", ""
    try:
        declared = request.headers.get("content-length", "")
        if (
            declared.isascii()
            and declared.isdigit()
            and int(declared) > merchant.BILLING_MAX_BYTES + FORM_OVERHEAD
        ):
            raise merchant.WebAppError("the file is too large", code="upload_too_large", status=413)
        form: FormData = anyio.from_thread.run(partial(request.form, max_files=1, max_fields=10))  # type: ignore[arg-type]
        try:
            upload = form.get("file")
            day, slot = str(form.get("day") or "")[:20], str(form.get("slot") or "0")[:10]
            unit: Literal["bytes", "GB"] = "GB" if form.get("bytes_unit") == "GB" else "bytes"
            if not isinstance(upload, StarletteUploadFile) or not upload.filename:
                raise merchant.WebAppError("choose the billing file", code="billing_file_missing", status=400)
            filename = upload.filename[:255]
            data = upload.file.read(merchant.BILLING_MAX_BYTES + 1)
        finally:
            anyio.from_thread.run(form.close)
        if len(data) > merchant.BILLING_MAX_BYTES:
            raise merchant.WebAppError("the file is too large", code="upload_too_large", status=413)
        period = merchant.period_of(settings, day, slot)
        result = merchant.import_bill(session, settings, account, user, period, filename, data, unit)
    except EdgeLedgerError as exc:
        session.rollback()
        status = exc.status if exc.status >= 400 else 422
        error = _error_text(request, exc)
        problems = [_problem_text(request, p) for p in exc.details.get("problems") or []]
        problems += [{"line": line, "problem": exc.message} for line in exc.details.get("lines") or []]
    context = {
        **_billing_context(session, settings, account),
        "result": result,
        "problems": problems,
        "error": error,
        "chosen_day": day,
        "filename": filename,
    }
    return _page(request, "merchant_billing.html", user, account, context, status=status)


# --- cases -----------------------------------------------------------------------------------------------


def _cases_context(session: Session, account: Any) -> dict[str, Any]:
    if account is None:
        return {"open": [], "decided": []}
    open_, decided = merchant.case_views(session, account)
    return {"open": open_, "decided": decided}


@router.get("/merchant/cases", response_class=HTMLResponse)
def cases_page(
    request: Request, session: SessionDep, user: MerchantPage, decided: int | None = None
) -> HTMLResponse:
    account = merchant.account_of(session, user)
    context = {**_cases_context(session, account), "just_decided": decided}
    return _page(request, "merchant_cases.html", user, account, context)


@router.post("/merchant/cases/{case_id}/decision", response_class=HTMLResponse)
def decide_case(
    case_id: int,
    request: Request,
    session: SessionDep,
    user: MerchantPage,
    action: Annotated[str, Form(max_length=10)],
    reason: Annotated[str, Form(max_length=10_000)] = "",
    adjustment: Annotated[str, Form(max_length=80)] = "",
) -> Response:
    """Accept or adjust one of the merchant's open cases, with a reason; back to the list."""
    same_origin(request)
    account = merchant.require_account(session, user)
    try:
        merchant.decide(session, account, user, case_id, action, adjustment, reason)
    except EdgeLedgerError as exc:
        session.rollback()
        context = {
            **_cases_context(session, account),
            "error": _error_text(request, exc),
            "error_case": case_id,
            "form": {"action": action, "reason": reason, "adjustment": adjustment},
        }
        return _page(request, "merchant_cases.html", user, account, context, status=max(exc.status, 400))
    return RedirectResponse(f"/app/merchant/cases?decided={case_id}", status_code=303)


# --- settlements -----------------------------------------------------------------------------------------


@router.get("/merchant/settlements", response_class=HTMLResponse)
def settlements_page(
    request: Request, session: SessionDep, chain: ChainDep, user: MerchantPage
) -> HTMLResponse:
    account = merchant.account_of(session, user)
    context: dict[str, Any] = {"rows": [], "chain_now": None}
    if account is not None:
        rows, now = merchant.settlement_views(session, chain, account, user)
        context = {
            "rows": rows,
            "chain_now": now,
            "script_data": {
                "address": account.address,
                "chain_id": getattr(request.app.state, "chain_id", None),
            },
        }
    return _page(request, "merchant_settlements.html", user, account, context)


@router.post("/merchant/settlements/{settlement_id}/challenge")
def prepare_challenge(
    settlement_id: int,
    session: SessionDep,
    chain: ChainDep,
    user: MerchantApi,
    reason: Annotated[str, Body(embed=True, max_length=1000)],
) -> dict[str, Any]:
    """The ``challenge`` transaction of one of the merchant's posted roots, for its wallet to send."""
    account = merchant.require_account(session, user)
    settlement = merchant.own_settlement(session, account, settlement_id)
    return merchant.challenge_call(chain, settlement, user, reason)


_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json", "html": "text/html; charset=utf-8"}


@router.get("/merchant/settlements/{settlement_id}/statement.{fmt}", response_model=None)
def statement(
    settlement_id: int, fmt: str, request: Request, session: SessionDep, user: MerchantPage
) -> Response:
    """The merchant's statement (the API's, same content): csv and json as downloads, html to print."""
    if fmt not in _MEDIA:
        return Response("not found", status_code=404, media_type="text/plain")
    account = merchant.account_of(session, user)
    try:
        if account is None:
            raise merchant.WebAppError(
                "you have no settlement account yet", code="account_missing", status=404
            )
        settlement = merchant.own_settlement(session, account, settlement_id)
        kind: Literal["csv", "json", "html"] = "csv" if fmt == "csv" else "json" if fmt == "json" else "html"
        body, name = merchant.statement_document(session, settlement, kind, str(request.base_url).rstrip("/"))
    except EdgeLedgerError as exc:
        return render(
            request, "error.html", {"message": _error_text(request, exc)}, user=user, status=exc.status
        )
    disposition = "inline" if fmt == "html" else "attachment"
    response = Response(body, media_type=_MEDIA[fmt])
    response.headers["Content-Disposition"] = f'{disposition}; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = STATEMENT_CSP
    return response
