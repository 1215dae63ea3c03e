"""Settlement API: accounts and escrow, rate cards, FX table, CDN billing imports, reconciliation cases,
settlements with their statements and payouts, payees' earnings (docs/settlement.md).

Who may do what: admins everything; auditors read within their audit scope (docs/api.md); a merchant
reads and manages its own account, cases and settlements; a payee (any role with a wallet address) reads
its own earnings and its own statement lines. Another merchant's resources answer 403 ``forbidden``,
like every other refusal.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from functools import partial
from typing import Annotated, Literal

import anyio.from_thread
from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUploadFile
from web3.exceptions import BadFunctionCallOutput

from edgeledger.auth.dependencies import (
    Principal,
    ensure_merchant_in_scope,
    get_principal,
    out_of_scope,
    require_roles,
)
from edgeledger.auth.models import Role, User
from edgeledger.chain.client import ChainClient, ChainError, ContractRevert
from edgeledger.config import Settings
from edgeledger.db import get_session
from edgeledger.deliveries.uploads import RequestBody
from edgeledger.deps import get_app_settings, get_chain
from edgeledger.ledger.abis import CONTENT_REGISTRY
from edgeledger.settlement import SettlementError, claims, flows, service, statements
from edgeledger.settlement.models import (
    BillingUsageRow,
    CaseState,
    FxRateRow,
    RateCardRow,
    ReconciliationCase,
    Settlement,
    SettlementAccount,
    SettlementPayout,
    SettlementState,
)
from edgeledger.settlement.payouts import Statement
from edgeledger.settlement.rates import FxRate
from edgeledger.settlement.schemas import (
    AccountDetail,
    AccountRead,
    BillingImportRead,
    CaseDecision,
    CaseRead,
    EarningsRead,
    EarningTotals,
    FxRateCreate,
    FxRateRead,
    PayoutPage,
    PayoutRead,
    RateCardRead,
    RunReportRead,
    SettlementPage,
    SettlementRead,
)
from edgeledger.settlement.statement_html import statement_html

router = APIRouter(prefix="/settlement", tags=["settlement"])

SessionDep = Annotated[Session, Depends(get_session)]
ChainDep = Annotated[ChainClient, Depends(get_chain)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
AnyoneDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_roles(Role.admin))]
AuditDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor))]
MerchantDep = Annotated[Principal, Depends(require_roles(Role.merchant))]
MerchantReaderDep = Annotated[Principal, Depends(require_roles(Role.merchant, Role.auditor))]

MAX_PAGE = 1_000
#: a CDN bill is aggregated per hour or day: a few MB at most. The file is held as text and read row by
#: row into its per-(region, day) sums, no object kept per row; the web app's upload allows as much
#: (webapp.merchant.BILLING_MAX_BYTES)
BILLING_MAX_BYTES = 16 * 1024 * 1024
#: settlements whose payout root the vault holds (claims can be checked there)
ON_CHAIN_STATES = claims.ON_CHAIN_STATES


# --- access ------------------------------------------------------------------------------------------


def _forbidden(message: str) -> SettlementError:
    return SettlementError(message, code="forbidden", status=403)


def _ensure_merchant(principal: Principal, merchant_user_id: int, *, write: bool) -> None:
    """Admins; auditors when only reading; otherwise only the merchant itself."""
    if principal.is_admin:
        return
    if principal.role == Role.auditor and not write:
        ensure_merchant_in_scope(principal.scope, merchant_user_id)
        return
    if principal.role == Role.merchant and principal.user_id == merchant_user_id:
        return
    raise _forbidden(f"only merchant {merchant_user_id}, an auditor (reading) or an admin may do this")


def _merchant_filter(principal: Principal, merchant_user_id: int | None) -> int | frozenset[int] | None:
    """The merchant(s) a listing is limited to: a merchant sees only its own; a scoped auditor the
    merchant it names (403 ``out_of_scope`` outside its scope) or else every merchant of its scope (none
    at all for an auditor nobody has scoped: an empty listing)."""
    if principal.role == Role.auditor and not principal.scope.is_global:
        if merchant_user_id is None:
            return principal.scope.merchants
        ensure_merchant_in_scope(principal.scope, merchant_user_id)
        return merchant_user_id
    if principal.role != Role.merchant:
        return merchant_user_id
    if merchant_user_id is not None and merchant_user_id != principal.user_id:
        raise _forbidden("merchants see only their own settlement data")
    return principal.user_id


def _page(limit: int, offset: int) -> tuple[int, int]:
    if limit < 1 or limit > MAX_PAGE or offset < 0:
        raise SettlementError(
            f"limit must be 1..{MAX_PAGE} and offset >= 0", code="bad_page", limit=limit, offset=offset
        )
    return limit, offset


def _checked_state(state: str | None, allowed: Sequence[str], what: str) -> str | None:
    if state is not None and state not in allowed:
        raise SettlementError(
            f"unknown {what} state {state!r}", code="bad_state", state=state, allowed=list(allowed)
        )
    return state


def _checksummed(value: str, what: str) -> str:
    if not is_address(value):
        raise SettlementError(f"{what} {value!r} is not an address", code="address_invalid")
    return to_checksum_address(value)


# --- accounts ----------------------------------------------------------------------------------------


#: How far back a merchant may start its own account's settlement (``settle_from``).
MERCHANT_BACKFILL = 31 * 86_400


@router.put("/accounts/{merchant_user_id}", response_model=AccountDetail)
def put_account(
    merchant_user_id: int,
    body: service.AccountParams,
    session: SessionDep,
    chain: ChainDep,
    settings: SettingsDep,
    principal: MerchantDep,
) -> AccountDetail:
    """Create or update a merchant's settlement account (admin or that merchant). The token must be
    allow-listed in SettlementVault (422 ``token_not_allowed``); the escrow address defaults to the
    merchant's wallet, and only an admin may name another one. The period cursor is set once, at
    creation: from ``settle_from`` or the current period."""
    _ensure_merchant(principal, merchant_user_id, write=True)
    merchant = service.merchant_user(session, merchant_user_id)
    if body.address is not None and not principal.is_admin:
        # The vault debits the escrow of this address: a merchant may only name its own wallet.
        escrow_owner = _checksummed(body.address, "address")
        if merchant.address is None or escrow_owner != to_checksum_address(merchant.address):
            raise _forbidden("only an admin may set an escrow address other than the merchant's own")
    token = _checksummed(body.token, "token")
    vault = chain.contract(flows.VAULT)
    if not chain.call(vault.functions.isTokenAllowed(token)):
        raise SettlementError(
            f"token {token} is not allow-listed in the SettlementVault", code="token_not_allowed", token=token
        )
    now = int(time.time())
    if not principal.is_admin and body.settle_from is not None and body.settle_from < now - MERCHANT_BACKFILL:
        # Each past period is a settlement row: a merchant starting in 1970 would have the worker open
        # millions of them. An admin may start an account further back (a migration).
        raise SettlementError(
            f"settle_from is more than {MERCHANT_BACKFILL // 86_400} days ago: an admin may start earlier",
            code="settle_from_too_early",
        )
    body = _with_token_metadata(chain, token, body)
    try:
        account = service.upsert_account(session, settings, merchant, body, now=now)
        session.commit()
    except IntegrityError:  # a concurrent write: this merchant's first PUT, or another on this address
        session.rollback()
        # the index on the escrow address refused it (409 address_taken, naming the holder), or the
        # merchant's account was created meanwhile
        service.ensure_address_free(session, merchant, body.address or merchant.address or "")
        raise SettlementError(
            f"the account of merchant {merchant_user_id} was written concurrently: retry",
            code="account_conflict",
            status=409,
        ) from None
    return service.account_detail(session, chain, account)


@router.get("/accounts/{merchant_user_id}", response_model=AccountDetail)
def get_account(
    merchant_user_id: int, session: SessionDep, chain: ChainDep, principal: MerchantReaderDep
) -> AccountDetail:
    """The account, its live escrow in the vault, and the totals of its open settlements."""
    _ensure_merchant(principal, merchant_user_id, write=False)
    return service.account_detail(session, chain, service.get_account(session, merchant_user_id))


@router.get("/accounts", response_model=list[AccountRead])
def list_accounts(session: SessionDep, principal: AuditDep) -> list[AccountRead]:
    """Every settlement account (admins and auditors; a scoped auditor's merchants)."""
    rows = session.scalars(select(SettlementAccount).order_by(SettlementAccount.merchant_user_id))
    return [AccountRead.of(a) for a in rows if principal.scope.allows_merchant(a.merchant_user_id)]


# --- rate cards and FX -------------------------------------------------------------------------------


@router.post("/accounts/{merchant_user_id}/rate-cards", status_code=201, response_model=RateCardRead)
def add_rate_card(
    merchant_user_id: int, body: dict[str, object], session: SessionDep, principal: AdminDep
) -> RateCardRead:
    """A new rate card version (the rates.RateCard fields without ``merchant``). Its window must not
    overlap another version's (422 ``rate_card_overlap``) and its number must be new
    (``rate_card_version``)."""
    account = service.get_account(session, merchant_user_id)
    card = service.add_rate_card(session, account, dict(body), created_by=principal.user_id)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise SettlementError(
            f"rate card version {card.version} was added concurrently", code="rate_card_version", status=409
        ) from None
    row = session.scalar(
        select(RateCardRow).where(
            RateCardRow.merchant_user_id == merchant_user_id, RateCardRow.version == card.version
        )
    )
    assert row is not None
    return RateCardRead.of(row)


@router.get("/accounts/{merchant_user_id}/rate-cards", response_model=list[RateCardRead])
def list_rate_cards(
    merchant_user_id: int, session: SessionDep, principal: MerchantReaderDep
) -> list[RateCardRead]:
    """Every version of the merchant's rate card, oldest first."""
    _ensure_merchant(principal, merchant_user_id, write=False)
    service.get_account(session, merchant_user_id)
    rows = session.scalars(
        select(RateCardRow)
        .where(RateCardRow.merchant_user_id == merchant_user_id)
        .order_by(RateCardRow.version)
    )
    return [RateCardRead.of(r) for r in rows]


@router.post("/fx-rates", status_code=201, response_model=FxRateRead)
def add_fx_rate(body: FxRateCreate, session: SessionDep, principal: AdminDep) -> FxRateRead:
    """One row of the FX table: ``1 base = rate quote``, the rate a decimal string parsed exactly. The
    same (source, timestamp, base, quote) twice is 409 ``fx_rate_exists``."""
    rate = FxRate.of(body.source, body.timestamp, body.base, body.quote, body.rate)
    row = service.add_fx_rate(session, rate, created_by=principal.user_id)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise SettlementError(
            f"{rate.source} already has a {rate.base}/{rate.quote} rate at {rate.timestamp}",
            code="fx_rate_exists",
            status=409,
        ) from None
    return FxRateRead.of(row)


@router.get("/fx-rates", response_model=list[FxRateRead])
def list_fx_rates(
    session: SessionDep, _: AnyoneDep, base: str | None = None, quote: str | None = None
) -> list[FxRateRead]:
    """The FX table, oldest first (optionally one pair, either direction)."""
    rows = session.scalars(select(FxRateRow).order_by(FxRateRow.timestamp, FxRateRow.id))
    wanted = {c for c in (base, quote) if c}
    return [FxRateRead.of(r) for r in rows if not wanted or wanted <= {r.base, r.quote}]


# --- billing imports and cases -----------------------------------------------------------------------


def _read_upload(request: Request, settings: Settings) -> tuple[str | None, bytes]:
    """The billing file: multipart field ``file``, or the raw body."""
    limit = min(settings.max_upload_bytes, BILLING_MAX_BYTES)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = anyio.from_thread.run(partial(request.form, max_files=1, max_fields=10))
        try:
            upload = form.get("file")
            if not isinstance(upload, StarletteUploadFile):
                raise SettlementError("multipart upload without a 'file' part", code="missing_file")
            data = upload.file.read(limit + 1)
            name = upload.filename
        finally:
            anyio.from_thread.run(form.close)
    else:
        data = RequestBody(request, limit + 1).read()
        name = None
    if len(data) > limit:
        raise SettlementError(f"billing file larger than {limit} bytes", code="upload_too_large", status=413)
    return name, data


@router.post("/accounts/{merchant_user_id}/billing", status_code=201, response_model=BillingImportRead)
def import_billing(
    merchant_user_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: MerchantDep,
    period_start: int,
    bytes_unit: Literal["bytes", "GB"] = "bytes",
    name: str | None = None,
) -> BillingImportRead:
    """Import the CDN's bill of one period (CSV: multipart field ``file`` or the raw body with
    ``?name=``), admin or that merchant. Any bad row rejects the whole file: 422 ``billing_invalid`` with
    ``details.problems`` = ``[{line, problem}]``; nothing is stored. A new import of a period supersedes
    the previous one and its undecided cases. ``bytes_unit=GB``: CloudFront usage values are GB."""
    _ensure_merchant(principal, merchant_user_id, write=True)
    account = service.get_account(session, merchant_user_id)
    filename, data = _read_upload(request, settings)
    previous = service.current_import(session, account, period_start)
    record = service.import_billing(
        session,
        settings,
        account,
        period_start,
        name or filename or f"billing-{period_start}.csv",
        data,
        imported_by=principal.user_id,
        cloudfront_bytes_unit=bytes_unit,
    )
    supersedes = [previous.id] if previous is not None else []
    session.commit()
    usage = list(
        session.scalars(
            select(BillingUsageRow)
            .where(BillingUsageRow.import_pk == record.id)
            .order_by(BillingUsageRow.day, BillingUsageRow.region)
        )
    )
    return BillingImportRead.of(record, usage, supersedes)


@router.get("/cases", response_model=list[CaseRead])
def list_cases(
    session: SessionDep,
    principal: MerchantReaderDep,
    merchant_user_id: int | None = None,
    state: str | None = None,
    period_start: int | None = None,
    limit: int = MAX_PAGE,
    offset: int = 0,
) -> list[CaseRead]:
    """Reconciliation cases, oldest first (merchants: their own), at most ``limit`` (1..1,000) from
    ``offset``."""
    limit, offset = _page(limit, offset)
    merchant = _merchant_filter(principal, merchant_user_id)
    _checked_state(state, [s.value for s in CaseState], "case")
    scoped = merchant if isinstance(merchant, frozenset) else None  # a scoped auditor's merchants
    cases = service.cases_of(
        session,
        merchant_user_id=merchant if isinstance(merchant, int) else None,
        period_start=period_start,
        state=state,
        merchants=scoped,
        limit=limit,
        offset=offset,
    )
    return [CaseRead.of(c) for c in cases]


@router.get("/cases/{case_id}", response_model=CaseRead)
def get_case(case_id: int, session: SessionDep, principal: MerchantReaderDep) -> CaseRead:
    case = service.get_case(session, case_id)
    _ensure_merchant(principal, case.merchant_user_id, write=False)
    return CaseRead.of(case)


@router.post("/cases/{case_id}/decision", response_model=CaseRead)
def decide_case(case_id: int, body: CaseDecision, session: SessionDep, principal: MerchantDep) -> CaseRead:
    """Accept the receipts as they are, or adjust the region's delivery fee (rate-card minor units),
    with a reason; who and when are recorded and go into the statement. A decided case is 409
    ``case_not_open``."""
    case = service.get_case(session, case_id)
    _ensure_merchant(principal, case.merchant_user_id, write=True)
    # Row lock (PostgreSQL) so two concurrent decisions cannot both find the case open.
    locked = session.get(ReconciliationCase, case_id, with_for_update=True, populate_existing=True)
    assert locked is not None
    user = session.get(User, principal.user_id)
    assert user is not None
    service.decide_case(session, locked, user, body.action, body.adjustment, body.reason)
    session.commit()
    return CaseRead.of(locked)


# --- settlements -------------------------------------------------------------------------------------


def _settlement_for(session: Session, principal: Principal, settlement_id: int) -> Settlement:
    settlement = service.get_settlement(session, settlement_id)
    _ensure_merchant(principal, settlement.merchant_user_id, write=False)
    return settlement


@router.get("/settlements", response_model=SettlementPage)
def list_settlements(
    session: SessionDep,
    principal: MerchantReaderDep,
    merchant_user_id: int | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> SettlementPage:
    """Settlement attempts, newest period first (merchants: their own)."""
    limit, offset = _page(limit, offset)
    merchant = _merchant_filter(principal, merchant_user_id)
    _checked_state(state, [s.value for s in SettlementState], "settlement")
    query = select(Settlement)
    if isinstance(merchant, frozenset):  # a scoped auditor's merchants
        query = query.where(Settlement.merchant_user_id.in_(sorted(merchant)))
    elif merchant is not None:
        query = query.where(Settlement.merchant_user_id == merchant)
    if state is not None:
        query = query.where(Settlement.state == state)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Settlement.period_start.desc(), Settlement.attempt.desc(), Settlement.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return SettlementPage(total=total, limit=limit, offset=offset, items=[SettlementRead.of(r) for r in rows])


@router.get("/settlements/{settlement_id}", response_model=SettlementRead)
def get_settlement(settlement_id: int, session: SessionDep, principal: MerchantReaderDep) -> SettlementRead:
    """State, period, payout root and total, transaction, claims opening time, error, counts, batches."""
    return SettlementRead.of(_settlement_for(session, principal, settlement_id))


StatementFormat = Annotated[Literal["json", "csv", "html"], Query(alias="format")]


def _statement_text(settlement: Settlement) -> str:
    if settlement.statement_json is None:
        raise SettlementError(
            f"settlement {settlement.id} has no statement ({settlement.state}: "
            f"{settlement.error_code or 'not computed'})",
            code="statement_missing",
            status=409,
        )
    return settlement.statement_json


@router.get("/settlements/{settlement_id}/statement", response_model=None)
def get_statement(
    settlement_id: int,
    request: Request,
    session: SessionDep,
    principal: MerchantReaderDep,
    fmt: StatementFormat = "json",
) -> Response:
    """The merchant's statement of one settlement: json, csv or html. Its batch, proof and settlement
    links are absolute URLs of this API (saved, they still work with a session token or API key)."""
    settlement = _settlement_for(session, principal, settlement_id)
    return _render(session, settlement, _statement_text(settlement), None, fmt, _base_url(request))


@router.get("/settlements/{settlement_id}/payees/{address}/statement", response_model=None)
def get_payee_statement(
    settlement_id: int,
    address: str,
    request: Request,
    session: SessionDep,
    chain: ChainDep,
    principal: AnyoneDep,
    fmt: StatementFormat = "json",
) -> Response:
    """One payee's part of a settlement: that payee, the settlement's merchant, auditors or admins."""
    payee = _checksummed(address, "payee")
    settlement = service.get_settlement(session, settlement_id)
    if not _is_payee(principal, payee):
        _ensure_merchant(principal, settlement.merchant_user_id, write=False)
    text = _statement_text(settlement)
    amount = session.scalar(
        select(SettlementPayout.amount).where(
            SettlementPayout.settlement_pk == settlement.id, SettlementPayout.payee == payee.lower()
        )
    )
    if amount is None:
        raise SettlementError(
            f"{payee} is not paid by settlement {settlement.id}", code="payee_not_found", status=404
        )
    totals = claims.earnings_of(session, chain, payee).totals.get(to_checksum_address(settlement.token))
    ledger = (totals or EarningTotals()).model_dump()
    return _render(session, settlement, text, payee, fmt, _base_url(request), ledger)


@router.get("/settlements/{settlement_id}/payouts", response_model=PayoutPage)
def list_payouts(
    settlement_id: int,
    session: SessionDep,
    principal: MerchantReaderDep,
    limit: int = 100,
    offset: int = 0,
) -> PayoutPage:
    """The payout tree's leaves (payee, amount, leaf hash), largest amount first."""
    limit, offset = _page(limit, offset)
    settlement = _settlement_for(session, principal, settlement_id)
    query = select(SettlementPayout).where(SettlementPayout.settlement_pk == settlement.id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(SettlementPayout.amount.desc(), SettlementPayout.payee).limit(limit).offset(offset)
    )
    return PayoutPage(
        settlement_id=settlement.id,
        root=settlement.root,
        total=total,
        limit=limit,
        offset=offset,
        items=[PayoutRead.of(r) for r in rows],
    )


@router.post("/settlements/{settlement_id}/recompute", response_model=SettlementRead)
def recompute(settlement_id: int, session: SessionDep, settings: SettingsDep, _: AdminDep) -> SettlementRead:
    """A blocked settlement is computed again on the next run; a cancelled one gets a new attempt
    (returned). Other states: 409 ``settlement_not_recomputable``."""
    settlement = service.get_settlement(session, settlement_id)
    return SettlementRead.of(flows.recompute(session, settings, settlement))


@router.post("/run", response_model=RunReportRead)
def run(
    session: SessionDep, chain: ChainDep, settings: SettingsDep, _: AdminDep, early: bool = False
) -> RunReportRead:
    """One run of the settlement scheduler now (the worker does the same every minute): open due
    periods, compute, post, follow. ``early``: open ended periods without waiting for their late window
    (demos; late records then go to correction batches, paid by a correction of the period)."""
    report = flows.run_once(session, chain, settings, now=int(time.time()), early=early)
    return RunReportRead(**report.as_dict())


# --- payees ------------------------------------------------------------------------------------------


def _is_payee(principal: Principal, address: str) -> bool:
    return principal.address is not None and principal.address.lower() == address.lower()


def _ensure_payee_reader(principal: Principal, payee: str) -> None:
    """The payee itself, admins and global auditors (a payee's earnings span merchants)."""
    if _is_payee(principal, payee) or principal.is_admin:
        return
    if principal.role == Role.auditor:
        if not principal.scope.is_global:
            raise out_of_scope("a payee's earnings across merchants")
        return
    raise _forbidden(f"only {payee}, an auditor or an admin may read this payee's earnings and claims")


@router.get("/payees/{address}/earnings", response_model=EarningsRead)
def payee_earnings(address: str, session: SessionDep, chain: ChainDep, principal: AnyoneDep) -> EarningsRead:
    """Every settlement that pays ``address`` (that payee, auditors and admins): amount, state, and
    whether it is claimed in the vault, with totals per token."""
    payee = _checksummed(address, "payee")
    _ensure_payee_reader(principal, payee)
    return claims.earnings_of(session, chain, payee)


@router.get("/payees/{address}/claims", response_model=claims.ClaimsRead)
def payee_claims(
    address: str,
    session: SessionDep,
    chain: ChainDep,
    principal: AnyoneDep,
    recipient: Annotated[str | None, Query(description="Where the tokens go; default the payee")] = None,
) -> claims.ClaimsRead:
    """The payee's on-chain payouts with proofs and claimed flags, and one ready-to-send ``claimMany``
    transaction (``call``: send ``data`` to ``to`` from the payee's wallet) over what is claimable now."""
    payee = _checksummed(address, "payee")
    _ensure_payee_reader(principal, payee)
    if recipient is not None:
        recipient = _checksummed(recipient, "recipient")
    return claims.claims_of(session, chain, payee, recipient)


@router.get("/payees/{address}/claims/authorization", response_model=claims.Authorization)
def payee_claim_authorization(
    address: str,
    session: SessionDep,
    chain: ChainDep,
    principal: AnyoneDep,
    recipient: Annotated[str | None, Query(description="Where the tokens go; default the payee")] = None,
    valid_for: Annotated[
        int,
        Query(ge=60, le=7 * 86400, description="Seconds the authorization is valid, by the chain's clock"),
    ] = 3600,
) -> claims.Authorization:
    """EIP-712 typed data for the payee to sign so the platform relays its open claims and pays the gas
    (then ``POST .../claims/relay`` with the signature)."""
    payee = _checksummed(address, "payee")
    if not (_is_payee(principal, payee) or principal.role == Role.admin):
        raise _forbidden(f"only {payee} or an admin may prepare its relayed claims")
    if recipient is not None:
        recipient = _checksummed(recipient, "recipient")
    return claims.authorization(session, chain, payee, recipient, valid_for)


@router.post("/payees/{address}/claims/relay", response_model=claims.RelayResult)
def payee_claim_relay(
    address: str, body: claims.RelayRequest, session: SessionDep, chain: ChainDep, _: AnyoneDep
) -> claims.RelayResult:
    """Sends the payee's signed claims with the server's relayer (``claimManyFor``); the vault checks
    the payee's signature, so any authenticated caller may hand it in."""
    return claims.relay(session, chain, _checksummed(address, "payee"), body)


@router.get("/settlements/{settlement_id}/inputs", response_model=None)
def settlement_inputs(
    settlement_id: int, session: SessionDep, chain: ChainDep, principal: MerchantReaderDep
) -> Response:
    """The exact inputs the payouts were computed from (receipts with their batches, assets' terms,
    rate cards, FX table, decisions): recompute and check them against the vault with
    ``edgeledger verify settlement`` (verify/settlement.py)."""
    settlement = _settlement_for(session, principal, settlement_id)
    try:
        chain_id, vault = chain.chain_id, chain.deployment.address_of(flows.VAULT)
        registry = chain.deployment.address_of(CONTENT_REGISTRY)
    except ChainError:
        chain_id, vault, registry = None, None, None
    document = flows.inputs_document(settlement, chain_id, vault, registry)
    return Response(json.dumps(document), media_type="application/json")


# --- statement rendering -----------------------------------------------------------------------------

#: symbol() and decimals() of an ERC-20 token
_ERC20_METADATA_ABI = [
    {
        "name": n,
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"type": t, "name": ""}],
    }
    for n, t in (("symbol", "string"), ("decimals", "uint8"))
]


def _with_token_metadata(
    chain: ChainClient, token: str, body: service.AccountParams
) -> service.AccountParams:
    """The account's token named by its own ``symbol()`` and ``decimals()`` (statements print them): read
    from the chain when left out, and a 422 ``token_mismatch`` when the request says otherwise."""
    erc20 = chain.w3.eth.contract(address=to_checksum_address(token), abi=_ERC20_METADATA_ABI)
    try:
        symbol = str(chain.call(erc20.functions.symbol()))
        decimals = int(chain.call(erc20.functions.decimals()))
    except (ContractRevert, BadFunctionCallOutput):
        raise SettlementError(
            f"token {token} has no ERC-20 symbol() and decimals()", code="token_metadata_missing", token=token
        ) from None
    if not 1 <= len(symbol) <= 10 or not symbol.isprintable():
        raise SettlementError(f"token {token}'s symbol {symbol!r} is not usable", code="token_symbol_invalid")
    given = (body.token_symbol, body.token_decimals)
    if (given[0] is not None and given[0] != symbol) or (given[1] is not None and given[1] != decimals):
        raise SettlementError(
            f"token {token} is {symbol} with {decimals} decimals, not {given[0]} with {given[1]}",
            code="token_mismatch",
            token=token,
        )
    return body.model_copy(update={"token_symbol": symbol, "token_decimals": decimals})


_MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
}


def _base_url(request: Request) -> str:
    """This API's absolute base URL as the client reached it (links in statements start with it)."""
    return str(request.base_url).rstrip("/")


def _render(
    session: Session,
    settlement: Settlement,
    text: str,
    payee: str | None,
    fmt: str,
    base: str,
    ledger: dict[str, int] | None = None,
) -> Response:
    """The merchant's statement (``payee`` None) or one payee's (with its running ``ledger``), in json,
    csv or html."""
    statement = Statement.model_validate_json(text)
    ctx = dataclasses.replace(
        service.statement_context(session, settlement, statement), api_base=base, payee_ledger=ledger
    )
    filename = f"settlement-{settlement.id}" + (f"-{payee.lower()}" if payee else "") + f".{fmt}"
    disposition = "attachment" if fmt == "csv" else "inline"
    headers = {"Content-Disposition": f'{disposition}; filename="{filename}"'}
    body: str
    if fmt == "json":
        document = (
            statements.merchant_statement_json(statement, ctx)
            if payee is None
            else statements.payee_statement_json(statement, ctx, payee)
        )
        body = json.dumps(document)
    elif fmt == "csv":
        body = (
            statements.merchant_statement_csv(statement, ctx)
            if payee is None
            else statements.payee_statement_csv(statement, ctx, payee)
        )
    else:
        body = statement_html(statement, ctx, payee)
    return Response(body, media_type=_MEDIA_TYPES[fmt], headers=headers)
