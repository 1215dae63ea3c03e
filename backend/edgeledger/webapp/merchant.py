"""View models of the merchants' pages (/app/merchant/...): escrow and shortfall, ready-made wallet
transactions (approve + deposit, challenge), rate cards, billing imports, reconciliation cases,
settlements with their challenge window, and statements.

Everything here calls the settlement domain's own functions (``settlement.service``, ``flows``) with the
API's rules: a merchant sees and changes only its own account (the user id of its session), an admin
may use the pages too (it has no account of its own, so they show that). Why it is safe:

* money stays integer: amounts typed in token units are parsed by :func:`parse_amount` with a regular
  expression and integer arithmetic (no floats), bounded in digits, refused when more precise than the
  token's decimals;
* the server never signs for the merchant: it returns calldata ``{to, data}`` which the merchant's own
  wallet sends; the vault itself checks the sender (deposit credits ``msg.sender``; only the merchant or
  an auditor may challenge), so prepared calldata cannot move anyone else's funds;
* a billing file is read with a size limit before it is parsed; its problems come back with their line
  numbers and nothing is stored (``service.import_billing``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from eth_utils import keccak, to_checksum_address
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.auth.models import User
from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.config import Settings
from edgeledger.settlement import SettlementError, flows, service, statements
from edgeledger.settlement.billing import ISO_CURRENCIES
from edgeledger.settlement.models import (
    BillingImport,
    BillingUsageRow,
    CaseState,
    RateCardRow,
    ReconciliationCase,
    Settlement,
    SettlementAccount,
    SettlementState,
)
from edgeledger.settlement.payouts import Statement
from edgeledger.settlement.rates import RateCard, card_at
from edgeledger.settlement.schemas import AccountDetail
from edgeledger.settlement.statement_html import statement_html
from edgeledger.webapp.session import AppUser, WebAppError

#: A billing file is one period's CDN report: a few MB at most.
BILLING_MAX_BYTES = 16 * 1024 * 1024
#: Digits of a typed amount (before the decimal point): far beyond any escrow, bounded work.
MAX_WHOLE_DIGITS = 30
#: What the vault can hold per merchant and token (it credits uint128).
MAX_DEPOSIT = 2**128 - 1
#: Settlements listed on the page (newest period first).
SETTLEMENTS_SHOWN = 50
#: Decided cases listed under the open ones.
DECIDED_SHOWN = 30

_AMOUNT = re.compile(r"(-?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d*))?")
_ERC20_ABI = [
    {
        "name": "approve",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]


def parse_amount(text: str, decimals: int, *, signed: bool = False) -> int:
    """``text`` in token units (``12``, ``1,250.5``) as integer minor units of a token with ``decimals``.
    Refuses (400) text that is not a number, more precise than the token, zero, or (unless ``signed``)
    negative."""
    value = (text or "").strip().replace(" ", "")
    match = _AMOUNT.fullmatch(value)
    if not match or len(match.group(2).replace(",", "")) > MAX_WHOLE_DIGITS:
        raise WebAppError(f"{value[:40]!r} is not an amount", code="amount_invalid", status=400)
    sign, whole, fraction = match.group(1), match.group(2).replace(",", ""), match.group(3) or ""
    if sign and not signed:
        raise WebAppError("the amount must not be negative", code="amount_invalid", status=400)
    if len(fraction.rstrip("0")) > decimals:
        raise WebAppError(
            f"the token has {decimals} decimals", code="amount_too_precise", status=400, decimals=decimals
        )
    fraction = fraction.rstrip("0")
    minor = int(whole) * 10**decimals + (int(fraction.ljust(decimals, "0")) if fraction else 0)
    if minor == 0:
        raise WebAppError("the amount must not be zero", code="amount_zero", status=400)
    return -minor if sign else minor


def _hex(data: Any) -> str:
    return data if isinstance(data, str) else "0x" + bytes(data).hex()


# --- the account and its escrow ----------------------------------------------------------------------


def account_of(session: Session, user: AppUser) -> SettlementAccount | None:
    """The signed-in merchant's settlement account (None: not opened yet, or an admin)."""
    return session.scalar(select(SettlementAccount).where(SettlementAccount.merchant_user_id == user.user_id))


def require_account(session: Session, user: AppUser) -> SettlementAccount:
    account = account_of(session, user)
    if account is None:
        raise WebAppError("you have no settlement account yet", code="account_missing", status=404)
    return account


@dataclass(frozen=True)
class EscrowView:
    detail: AccountDetail
    #: the merchant's own token balance (what it could deposit); None when the chain is unreadable
    wallet_balance: int | None
    #: what the page's script re-reads after a deposit: ``escrowOf(merchant, token)``
    escrow_call: dict[str, str] | None
    #: the wallet the vault credits; deposits from another wallet would credit that one
    deposit_allowed: bool


def escrow_view(
    session: Session, chain: ChainClient, account: SettlementAccount, user: AppUser
) -> EscrowView:
    """Balance (the vault's unreserved escrow), reserved and pending totals, the shortfall, the bounds
    (the same figures as ``GET /settlement/accounts/{id}``) and the merchant's token balance."""
    detail = service.account_detail(session, chain, account)
    balance: int | None = None
    escrow_call: dict[str, str] | None = None
    merchant, token = to_checksum_address(account.address), to_checksum_address(account.token)
    try:
        vault = chain.contract(flows.VAULT)
        erc20 = chain.w3.eth.contract(address=token, abi=_ERC20_ABI)
        balance = int(chain.call(erc20.functions.balanceOf(merchant)))
        escrow_call = {
            "to": vault.address,
            "data": _hex(vault.encode_abi("escrowOf", args=[merchant, token])),
        }
    except ChainError:
        pass
    same_wallet = user.address is not None and user.address.lower() == account.address.lower()
    return EscrowView(detail, balance, escrow_call, same_wallet)


def deposit_calls(
    chain: ChainClient, account: SettlementAccount, user: AppUser, amount: int
) -> dict[str, Any]:
    """The two transactions of a deposit, for the merchant's wallet to send in order: the token's
    ``approve(vault, amount)`` and the vault's ``deposit(token, amount)`` (which credits the sender)."""
    if user.address is None or user.address.lower() != account.address.lower():
        raise WebAppError(
            "the vault credits the wallet that deposits: sign in with the account's wallet",
            code="wallet_not_account",
            status=403,
        )
    if amount > MAX_DEPOSIT:
        raise WebAppError("the amount is larger than the vault can hold", code="amount_invalid", status=400)
    token = to_checksum_address(account.token)
    try:
        vault = chain.contract(flows.VAULT)
        erc20 = chain.w3.eth.contract(address=token, abi=_ERC20_ABI)
        approve = erc20.encode_abi("approve", args=[vault.address, amount])
        deposit = vault.encode_abi("deposit", args=[token, amount])
        escrow = vault.encode_abi("escrowOf", args=[to_checksum_address(account.address), token])
    except ChainError as exc:
        raise WebAppError(exc.message, code="chain_unavailable", status=503) from None
    return {
        "amount": str(amount),
        "calls": [
            {"step": "approve", "to": token, "data": _hex(approve)},
            {"step": "deposit", "to": vault.address, "data": _hex(deposit)},
        ],
        "escrow_call": {"to": vault.address, "data": _hex(escrow)},
    }


# --- rate cards ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardView:
    version: int
    valid_from: int
    valid_until: int | None
    current: bool
    card: RateCard


def rate_card_views(session: Session, account: SettlementAccount, now: int) -> list[CardView]:
    """Every version, newest first, the one valid ``now`` marked current."""
    rows = session.scalars(
        select(RateCardRow)
        .where(RateCardRow.merchant_user_id == account.merchant_user_id)
        .order_by(RateCardRow.version.desc())
    )
    key = service.merchant_key(account)
    views = []
    for row in rows:
        card = RateCard.model_validate_json(json.dumps({**json.loads(row.card_json), "merchant": key}))
        views.append(CardView(row.version, row.valid_from, row.valid_until, card.covers(now), card))
    return views


def _card_decimals(session: Session, account: SettlementAccount, period_start: int) -> tuple[str, int]:
    """Currency code and decimals of the rate card a period is priced with (a case's adjustment is in
    them); the account's token when no card covers it."""
    try:
        card = card_at(service.rate_cards(session, account), service.merchant_key(account), period_start)
    except SettlementError:
        return account.token_symbol, account.token_decimals
    return card.currency.code, card.currency.decimals


# --- billing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    record: BillingImport
    usage: list[BillingUsageRow]
    superseded: int | None


def import_bill(
    session: Session,
    settings: Settings,
    account: SettlementAccount,
    user: AppUser,
    period_start: int,
    filename: str,
    data: bytes,
    bytes_unit: Literal["bytes", "GB"],
) -> ImportResult:
    """``POST /settlement/accounts/{id}/billing``'s work: a bad row rejects the file with every problem
    and its line (``SettlementError`` ``billing_invalid``, ``details.problems``); nothing is stored."""
    previous = service.current_import(session, account, period_start)
    record = service.import_billing(
        session,
        settings,
        account,
        period_start,
        filename or f"billing-{period_start}.csv",
        data,
        imported_by=user.user_id,
        cloudfront_bytes_unit=bytes_unit,
    )
    session.commit()
    usage = list(
        session.scalars(
            select(BillingUsageRow)
            .where(BillingUsageRow.import_pk == record.id)
            .order_by(BillingUsageRow.day, BillingUsageRow.region)
        )
    )
    return ImportResult(record, usage, previous.id if previous is not None else None)


def recent_imports(session: Session, account: SettlementAccount, limit: int = 10) -> list[BillingImport]:
    return list(
        session.scalars(
            select(BillingImport)
            .where(BillingImport.merchant_user_id == account.merchant_user_id)
            .order_by(BillingImport.id.desc())
            .limit(limit)
        )
    )


def period_choices(settings: Settings, now: int, count: int = 14) -> list[int]:
    """Starts of the last ``count`` ended periods, newest first (the page's choice of period)."""
    length = settings.delivery_period_seconds
    current = now - now % length
    return [current - i * length for i in range(1, count + 1)]


def period_of(settings: Settings, day: str, slot: str | None) -> int:
    """The period starting on UTC ``day`` (YYYY-MM-DD) at ``slot`` seconds into it (0 by default)."""
    match = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", (day or "").strip())
    if not match:
        raise WebAppError("choose the period's day", code="period_invalid", status=400)
    try:
        year, month, date = (int(part) for part in match.groups())
        start = int(datetime(year, month, date, tzinfo=UTC).timestamp())
    except ValueError:
        raise WebAppError("choose the period's day", code="period_invalid", status=400) from None
    slot = (slot or "").strip() or "0"
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses
    if not (slot.isascii() and slot.isdigit()):
        raise WebAppError("that is not the start of a period", code="period_invalid", status=400)
    offset = int(slot)
    if offset >= 86400 or offset % settings.delivery_period_seconds:
        raise WebAppError("that is not the start of a period", code="period_invalid", status=400)
    return start + offset


# --- cases -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseView:
    case: ReconciliationCase
    #: the rate card's currency (ours, adjustments) and the bill's (theirs), with decimals
    card_currency: str
    card_decimals: int
    bill_decimals: int
    reasons: list[str] = field(default_factory=list)


def case_views(session: Session, account: SettlementAccount) -> tuple[list[CaseView], list[CaseView]]:
    """(open cases oldest first, the latest decided ones newest first) of the merchant."""
    every = service.cases_of(session, merchant_user_id=account.merchant_user_id)
    decimals: dict[int, tuple[str, int]] = {}

    def view(case: ReconciliationCase) -> CaseView:
        if case.period_start not in decimals:
            decimals[case.period_start] = _card_decimals(session, account, case.period_start)
        code, places = decimals[case.period_start]
        bill = ISO_CURRENCIES.get(case.currency or "", places)
        return CaseView(case, code, places, bill, [r for r in case.reasons.split(",") if r])

    open_ = [view(c) for c in every if c.state == CaseState.open]
    decided = [view(c) for c in reversed(every) if c.state in (CaseState.accepted, CaseState.adjusted)]
    return open_, decided[:DECIDED_SHOWN]


def decide(
    session: Session,
    account: SettlementAccount,
    user: AppUser,
    case_id: int,
    action: str,
    adjustment_text: str,
    reason: str,
) -> ReconciliationCase:
    """``POST /settlement/cases/{id}/decision``'s work for the merchant's own case: accept, or adjust the
    region's delivery fee by an amount typed in the rate card's currency units (may be negative)."""
    if action not in ("accept", "adjust"):
        raise WebAppError("choose accept or adjust", code="action_invalid", status=400)
    case = service.get_case(session, case_id)
    if case.merchant_user_id != account.merchant_user_id:
        raise WebAppError("this case belongs to another merchant", code="forbidden", status=403)
    adjustment = 0
    if action == "adjust":
        _code, places = _card_decimals(session, account, case.period_start)
        adjustment = parse_amount(adjustment_text, places, signed=True)
    locked = session.get(ReconciliationCase, case_id, with_for_update=True, populate_existing=True)
    assert locked is not None
    decider = session.get(User, user.user_id)
    assert decider is not None
    literal: Literal["accept", "adjust"] = "accept" if action == "accept" else "adjust"
    service.decide_case(session, locked, decider, literal, adjustment, reason[:10_000])
    session.commit()
    return locked


# --- settlements -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettlementView:
    settlement: Settlement
    #: seconds until claims open (the challenge window's end) by the chain's clock; None if not running
    time_left: int | None
    challengeable: bool
    has_statement: bool


def chain_now(chain: ChainClient) -> int | None:
    try:
        return flows.chain_time(chain)
    except ChainError:
        return None


def settlement_views(
    session: Session, chain: ChainClient, account: SettlementAccount, user: AppUser
) -> tuple[list[SettlementView], int | None]:
    """The merchant's settlements, newest period first, and the chain's time they were judged at."""
    rows = session.scalars(
        select(Settlement)
        .where(Settlement.merchant_user_id == account.merchant_user_id)
        .order_by(Settlement.period_start.desc(), Settlement.sequence.desc(), Settlement.attempt.desc())
        .limit(SETTLEMENTS_SHOWN)
    )
    now = chain_now(chain)
    views = []
    for row in rows:
        left = None
        if row.state == SettlementState.posted and row.claims_open_at is not None and now is not None:
            left = max(0, row.claims_open_at - now)
        own = user.address is not None and user.address.lower() == row.merchant_address.lower()
        views.append(SettlementView(row, left, bool(left) and own, row.statement_json is not None))
    return views, now


def own_settlement(session: Session, account: SettlementAccount, settlement_id: int) -> Settlement:
    settlement = service.get_settlement(session, settlement_id)
    if settlement.merchant_user_id != account.merchant_user_id:
        raise WebAppError("this settlement belongs to another merchant", code="forbidden", status=403)
    return settlement


def challenge_call(chain: ChainClient, settlement: Settlement, user: AppUser, reason: str) -> dict[str, Any]:
    """``challenge(periodId, merchant, reason)`` calldata for the merchant's wallet: only a posted root
    inside its window (checked again by the vault), only from the merchant's own wallet. The reason goes
    on chain as the keccak-256 of its UTF-8 text (the event carries it; the merchant keeps the text)."""
    text = reason.strip()
    if not 1 <= len(text) <= 1000:
        raise WebAppError("give a reason (up to 1,000 characters)", code="reason_missing", status=400)
    if user.address is None or user.address.lower() != settlement.merchant_address.lower():
        raise WebAppError(
            "only the settlement's merchant wallet may challenge it", code="wallet_not_account", status=403
        )
    if settlement.state != SettlementState.posted:
        raise WebAppError(
            f"settlement {settlement.id} is {settlement.state}, not posted",
            code="not_challengeable",
            status=409,
        )
    now = chain_now(chain)
    if now is not None and settlement.claims_open_at is not None and now >= settlement.claims_open_at:
        raise WebAppError("the challenge window has closed", code="challenge_window_closed", status=409)
    digest = keccak(text=text)
    try:
        vault = chain.contract(flows.VAULT)
        data = vault.encode_abi(
            "challenge",
            args=[settlement.period_id, to_checksum_address(settlement.merchant_address), digest],
        )
    except ChainError as exc:
        raise WebAppError(exc.message, code="chain_unavailable", status=503) from None
    return {"to": vault.address, "data": _hex(data), "reason_hash": "0x" + digest.hex()}


def statement_document(
    session: Session, settlement: Settlement, fmt: Literal["csv", "json", "html"], base_url: str
) -> tuple[str, str]:
    """(body, file name) of the merchant's statement in ``fmt``: the API's statement, same content."""
    if settlement.statement_json is None:
        raise WebAppError(
            f"settlement {settlement.id} has no statement ({settlement.state})",
            code="statement_missing",
            status=404,
        )
    statement = Statement.model_validate_json(settlement.statement_json)
    ctx = dataclasses.replace(service.statement_context(session, settlement, statement), api_base=base_url)
    name = f"settlement-{settlement.id}.{fmt}"
    if fmt == "csv":
        return statements.merchant_statement_csv(statement, ctx), name
    if fmt == "json":
        return json.dumps(statements.merchant_statement_json(statement, ctx)), name
    return statement_html(statement, ctx), name
