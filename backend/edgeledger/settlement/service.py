"""Settlement: plain functions over a session (accounts, rate cards, FX table, billing imports, cases);
an account's detail also reads its live escrow and bounds from the vault (the API and the merchant app
show the same figures).

The multi-step work (computing a period, posting it, following it on chain) is in ``flows.py``; the pure
arithmetic in ``rates.py``, ``billing.py`` and ``payouts.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator
from typing import Any, Literal

from eth_utils import is_address, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role, User
from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.ledger.abis import SETTLEMENT_VAULT
from edgeledger.settlement import SettlementError
from edgeledger.settlement.billing import BillingReader, BillingRow, aggregate_billing, billing_lines, utc_day
from edgeledger.settlement.models import (
    OPEN_STATES,
    BillingImport,
    BillingUsageRow,
    CaseState,
    FxRateRow,
    RateCardRow,
    ReconciliationCase,
    Settlement,
    SettlementAccount,
    SettlementKind,
    SettlementState,
)
from edgeledger.settlement.payouts import Decision, Statement
from edgeledger.settlement.rates import INT64_MAX, FxRate, FxTable, RateCard, check_versions
from edgeledger.settlement.schemas import AccountDetail, AccountRead
from edgeledger.settlement.statements import StatementContext

# ----------------------------------------------------------------------------------------------
# Periods
# ----------------------------------------------------------------------------------------------


def period_id_for(period_start: int, settings: Settings) -> int:
    """The vault's periodId: consecutive numbers, the same for every merchant."""
    return period_start // settings.delivery_period_seconds


def next_sequence(session: Session, merchant_user_id: int, period_start: int) -> int:
    """The next supplementary sequence number of a merchant's period (corrections and releases share
    them: on chain ``period id + (sequence << 32)``)."""
    latest = session.scalar(
        select(func.max(Settlement.sequence)).where(
            Settlement.merchant_user_id == merchant_user_id, Settlement.period_start == period_start
        )
    )
    return 1 + int(latest or 0)


def period_start_of(at: int, settings: Settings) -> int:
    return at - at % settings.delivery_period_seconds


def _address(value: str, what: str) -> str:
    if not is_address(value):
        raise SettlementError(f"{what} {value!r} is not an address", code="address_invalid")
    return to_checksum_address(value)


# ----------------------------------------------------------------------------------------------
# Accounts
# ----------------------------------------------------------------------------------------------


class AccountParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="Escrow owner on chain; default the merchant's address")
    token: str = Field(description="Settlement token (allow-listed in SettlementVault)")
    token_symbol: str | None = Field(
        None,
        min_length=1,
        max_length=10,
        description="The token's own symbol(); read from the chain when left out",
    )
    token_decimals: int | None = Field(
        None, ge=0, le=18, description="The token's own decimals(); read from the chain when left out"
    )
    tolerance_bps: int | None = Field(None, ge=0, le=10_000)
    require_billing: bool = False
    auto_settle: bool = True
    settle_from: int | None = Field(None, ge=0, description="First period to settle (unix seconds)")


def get_account(session: Session, merchant_user_id: int) -> SettlementAccount:
    account = session.scalar(
        select(SettlementAccount).where(SettlementAccount.merchant_user_id == merchant_user_id)
    )
    if account is None:
        raise SettlementError(
            f"merchant {merchant_user_id} has no settlement account", code="account_not_found", status=404
        )
    return account


def merchant_user(session: Session, merchant_user_id: int) -> User:
    user = session.get(User, merchant_user_id)
    if user is None or user.role != Role.merchant:
        raise SettlementError(
            f"no merchant with id {merchant_user_id}", code="merchant_not_found", status=404
        )
    return user


def upsert_account(
    session: Session, settings: Settings, merchant: User, params: AccountParams, now: int
) -> SettlementAccount:
    """Creates or updates the merchant's account (in the caller's transaction). The period cursor is
    set once, at creation: settlement starts at ``settle_from`` or the current period.

    An escrow address is one merchant's (409 ``address_taken`` otherwise): the vault keys escrow, caps,
    the chosen settler and every settlement by it, so two accounts on one address would pay each other's
    bills from one escrow and post into each other's period slots."""
    address = params.address or merchant.address
    if not address:
        raise SettlementError("the merchant has no address: give the escrow address", code="address_missing")
    escrow = ensure_address_free(session, merchant, address)
    account = session.scalar(
        select(SettlementAccount).where(SettlementAccount.merchant_user_id == merchant.id)
    )
    if account is None:
        start = params.settle_from if params.settle_from is not None else now
        account = SettlementAccount(
            merchant_user_id=merchant.id, next_period_start=period_start_of(start, settings)
        )
        session.add(account)
    account.address = escrow
    account.token = _address(params.token, "token")
    if params.token_symbol is None or params.token_decimals is None:
        raise SettlementError("the token's symbol and decimals are needed", code="token_metadata_missing")
    account.token_symbol = params.token_symbol
    account.token_decimals = params.token_decimals
    account.tolerance_bps = (
        params.tolerance_bps if params.tolerance_bps is not None else settings.settlement_tolerance_bps
    )
    account.require_billing = params.require_billing
    account.auto_settle = params.auto_settle
    session.flush()
    return account


def ensure_address_free(session: Session, merchant: User, address: str) -> str:
    """The checksummed escrow address, unless another merchant's account holds it (409
    ``address_taken``). The unique index ``uq_settlement_accounts_address`` enforces the same between
    concurrent writes: the caller asks again after the index refused its commit, to say why."""
    escrow = _address(address, "address")
    holder = session.scalar(
        select(SettlementAccount.merchant_user_id).where(
            func.lower(SettlementAccount.address) == escrow.lower(),
            SettlementAccount.merchant_user_id != merchant.id,
        )
    )
    if holder is not None:
        raise SettlementError(
            f"escrow address {escrow} is another merchant's settlement account",
            code="address_taken",
            status=409,
            merchant_user_id=int(holder),
        )
    return escrow


#: settlements computed but not reserved on chain yet (an account's ``pending`` total)
PENDING_STATES = (SettlementState.computed, SettlementState.posting, SettlementState.blocked)


def _open_totals(session: Session, merchant_user_id: int) -> tuple[int, int, int]:
    """(reserved on chain, computed but not reserved, number of open settlements) of one merchant.

    A period or correction reserves its total and its held royalties together (``postWithHeld``), so
    both count. A release is paid from its period's held reserve, never from escrow: posted, it counts
    as reserved (its period is final by then, so no longer open here); waiting, it needs no deposit."""
    # Summed here, not in SQL: amounts are exact integers of any size (TokenAmount), stored as text on SQLite.
    rows = session.execute(
        select(Settlement.state, Settlement.kind, Settlement.total, Settlement.held_total).where(
            Settlement.merchant_user_id == merchant_user_id,
            Settlement.state.in_([s.value for s in OPEN_STATES]),
        )
    ).all()
    reserved = pending = 0
    for state, kind, total, held in rows:
        amount = int(total or 0) + int(held or 0)
        if state in (SettlementState.posted, SettlementState.challenged):
            reserved += amount
        elif state in PENDING_STATES and kind != SettlementKind.release:
            pending += amount
    return reserved, pending, len(rows)


def account_detail(session: Session, chain: ChainClient, account: SettlementAccount) -> AccountDetail:
    """The account with its live escrow and bounds in the vault and the totals of its open settlements
    (``GET /settlement/accounts/{id}`` and the merchant app's escrow page). When the chain cannot be read
    the chain figures are None and ``chain_error`` says why."""
    reserved, pending, count = _open_totals(session, account.merchant_user_id)
    escrow: int | None = None
    cap: int | None = None
    settler: str | None = None
    rate_cap: int | None = None
    rate_spent: int | None = None
    chain_error: str | None = None
    merchant, token = to_checksum_address(account.address), to_checksum_address(account.token)
    try:
        vault = chain.contract(SETTLEMENT_VAULT)
        # one round trip instead of two
        raw_escrow, (raw_cap, raw_settler, raw_rate_cap, raw_rate_spent) = chain.call_many(
            [vault.functions.escrowOf(merchant, token), vault.functions.boundsOf(merchant, token)]
        )
        escrow = int(raw_escrow)
        cap, rate_cap, rate_spent = int(raw_cap), int(raw_rate_cap), int(raw_rate_spent)
        settler = None if int(raw_settler, 16) == 0 else to_checksum_address(raw_settler)
    except ChainError as exc:  # the account is still worth showing when the chain is down
        chain_error = f"{exc.code}: {exc.message}"
    return AccountDetail(
        **AccountRead.of(account).model_dump(),
        escrow=escrow,
        chain_error=chain_error,
        reserved=reserved,
        pending=pending,
        shortfall=max(0, pending - escrow) if escrow is not None else None,
        open_settlements=count,
        period_cap=cap,
        chosen_settler=settler,
        rate_cap=rate_cap,
        rate_spent=rate_spent,
    )


# ----------------------------------------------------------------------------------------------
# Rate cards and FX
# ----------------------------------------------------------------------------------------------


def _card_from_row(row: RateCardRow, merchant_key: str) -> RateCard:
    data = json.loads(row.card_json)
    data["merchant"] = merchant_key
    return RateCard.model_validate_json(json.dumps(data))


def merchant_key(account: SettlementAccount) -> str:
    """How statements and cards name the merchant: its escrow address, lower case (public on chain)."""
    return account.address.lower()


def rate_cards(session: Session, account: SettlementAccount) -> list[RateCard]:
    rows = session.scalars(
        select(RateCardRow)
        .where(RateCardRow.merchant_user_id == account.merchant_user_id)
        .order_by(RateCardRow.version)
    )
    return [_card_from_row(row, merchant_key(account)) for row in rows]


def add_rate_card(
    session: Session, account: SettlementAccount, card_data: dict[str, Any], created_by: int | None
) -> RateCard:
    """Validates a new version against the existing ones (no overlap, new version number) and stores it."""
    data = {**card_data, "merchant": merchant_key(account)}
    try:
        card = RateCard.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        raise SettlementError(
            f"invalid rate card: {exc.errors()[0]['msg']}",
            code="rate_card_invalid",
            problems=[{"field": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()],
        ) from None
    check_versions([*rate_cards(session, account), card])
    stored = card.model_dump(mode="json", exclude={"merchant"})
    session.add(
        RateCardRow(
            merchant_user_id=account.merchant_user_id,
            version=card.version,
            valid_from=card.valid_from,
            valid_until=card.valid_until,
            card_json=json.dumps(stored, sort_keys=True),
            created_by=created_by,
        )
    )
    session.flush()
    return card


def add_fx_rate(session: Session, rate: FxRate, created_by: int | None) -> FxRateRow:
    exists = session.scalar(
        select(FxRateRow).where(
            FxRateRow.source == rate.source,
            FxRateRow.timestamp == rate.timestamp,
            FxRateRow.base == rate.base,
            FxRateRow.quote == rate.quote,
        )
    )
    if exists is not None:
        raise SettlementError(
            f"{rate.source} already has a {rate.base}/{rate.quote} rate at {rate.timestamp}",
            code="fx_rate_exists",
            status=409,
        )
    row = FxRateRow(
        source=rate.source,
        timestamp=rate.timestamp,
        base=rate.base,
        quote=rate.quote,
        numerator=str(rate.numerator),
        denominator=str(rate.denominator),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row


def fx_rate_of(row: FxRateRow) -> FxRate:
    return FxRate(
        source=row.source,
        timestamp=row.timestamp,
        base=row.base,
        quote=row.quote,
        numerator=int(row.numerator),
        denominator=int(row.denominator),
    )


def fx_table(session: Session, pairs: Iterable[tuple[str, str]] = ()) -> FxTable:
    """The FX table (only the rows of ``pairs`` when given, either direction)."""
    query = select(FxRateRow).order_by(FxRateRow.id)
    wanted = {frozenset(p) for p in pairs}
    rows = [r for r in session.scalars(query) if not wanted or frozenset((r.base, r.quote)) in wanted]
    return FxTable(rates=tuple(fx_rate_of(r) for r in rows))


# ----------------------------------------------------------------------------------------------
# Billing imports and reconciliation cases
# ----------------------------------------------------------------------------------------------


#: The latest period start a bill can name (a day before 10000-01-01: its days are calendar dates).
LAST_PERIOD_START = 253_402_214_400 - 86_400


def import_billing(
    session: Session,
    settings: Settings,
    account: SettlementAccount,
    period_start: int,
    filename: str,
    data: bytes,
    imported_by: int | None,
    cloudfront_bytes_unit: Literal["bytes", "GB"] = "bytes",
) -> BillingImport:
    """Stores a CDN billing CSV of one period, aggregated per (region, day), superseding earlier imports
    of the period and their undecided cases. Any bad row rejects the whole file (nothing is stored) with
    every problem and its line number."""
    if period_start % settings.delivery_period_seconds:
        raise SettlementError("period_start is not a period boundary", code="period_invalid")
    if not 0 <= period_start <= LAST_PERIOD_START:
        raise SettlementError("period_start is before 1970 or after 9999", code="period_invalid")
    period_end = period_start + settings.delivery_period_seconds
    try:
        lines = billing_lines(data)
    except UnicodeDecodeError:
        raise SettlementError("billing file is not UTF-8 text", code="billing_invalid") from None
    reader = BillingReader(lines, merchant=merchant_key(account), cloudfront_bytes_unit=cloudfront_bytes_unit)
    # One pass, row by row: only the per-(region, day) sums and the first lines of each problem are kept,
    # so a file's memory is its sums, not a Python object per row.
    day = utc_day(period_start)  # a period never crosses a UTC day (its length divides a day)
    ours = merchant_key(account)
    count, outside, outside_lines, foreign = 0, set[str](), list[int](), list[int]()

    def checked() -> Iterator[BillingRow]:
        nonlocal count
        for row in reader:
            count += 1
            if row.day != day:
                outside.add(row.day)
                if len(outside_lines) < 100:
                    outside_lines.append(row.line)
            if row.merchant.lower() != ours and len(foreign) < 100:
                foreign.append(row.line)
            yield row

    totals = aggregate_billing(checked())
    if reader.problem_count:
        raise SettlementError(
            f"billing file has {reader.problem_count} bad row(s); first: line {reader.problems[0].line}: "
            f"{reader.problems[0].problem}",
            code="billing_invalid",
            problems=[
                {"line": p.line, "problem": p.problem, "code": p.code, "values": dict(p.values)}
                for p in reader.problems
            ],
        )
    if not count:
        raise SettlementError("billing file has no usage rows", code="billing_empty")
    if outside:
        raise SettlementError(
            f"billing rows for days outside the period: {', '.join(sorted(outside)[:5])}",
            code="billing_wrong_period",
            lines=outside_lines,
        )
    if foreign:
        raise SettlementError(
            "billing rows for another merchant", code="billing_foreign_merchant", lines=foreign
        )
    too_large = [k for k, u in totals.items() if max(u.bytes, u.requests, u.amount or 0) > INT64_MAX]
    if too_large:
        _merchant, region, when = too_large[0]
        raise SettlementError(
            f"billing rows of {region} {when} sum beyond {INT64_MAX}: not a CDN's bill",
            code="billing_invalid",
            problems=[
                {"line": 0, "problem": f"the sums of {region} {when} exceed 64 bits", "code": "too_large"}
            ],
        )
    _supersede_imports(session, account, period_start)
    record = BillingImport(
        merchant_user_id=account.merchant_user_id,
        period_start=period_start,
        period_end=period_end,
        filename=filename[:255],
        sha256=hashlib.sha256(data).hexdigest(),
        layout=reader.layout,
        rows=count,
        ignored=reader.ignored,
        imported_by=imported_by,
    )
    session.add(record)
    session.flush()
    for (_merchant, region, usage_day), usage in sorted(totals.items()):
        session.add(
            BillingUsageRow(
                import_pk=record.id,
                region=region,
                day=usage_day,
                bytes=usage.bytes,
                requests=usage.requests,
                amount=usage.amount,
                currency=usage.currency,
            )
        )
    session.flush()
    return record


def _supersede_imports(session: Session, account: SettlementAccount, period_start: int) -> None:
    olds = list(
        session.scalars(
            select(BillingImport.id).where(
                BillingImport.merchant_user_id == account.merchant_user_id,
                BillingImport.period_start == period_start,
                BillingImport.superseded.is_(False),
            )
        )
    )
    if not olds:
        return
    session.execute(update(BillingImport).where(BillingImport.id.in_(olds)).values(superseded=True))
    session.execute(
        update(ReconciliationCase)
        .where(ReconciliationCase.import_pk.in_(olds), ReconciliationCase.state == CaseState.open)
        .values(state=CaseState.superseded)
    )


def current_import(session: Session, account: SettlementAccount, period_start: int) -> BillingImport | None:
    return session.scalar(
        select(BillingImport)
        .where(
            BillingImport.merchant_user_id == account.merchant_user_id,
            BillingImport.period_start == period_start,
            BillingImport.superseded.is_(False),
        )
        .order_by(BillingImport.id.desc())
    )


def cases_of(
    session: Session,
    merchant_user_id: int | None = None,
    period_start: int | None = None,
    state: str | None = None,
    *,
    merchants: Collection[int] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[ReconciliationCase]:
    """Cases oldest first: of one merchant, of ``merchants`` (a scoped auditor's; filtered in the query,
    so a page holds only cases the caller may read), or of all; ``limit``/``offset`` page them."""
    query = select(ReconciliationCase).order_by(ReconciliationCase.id)
    if merchant_user_id is not None:
        query = query.where(ReconciliationCase.merchant_user_id == merchant_user_id)
    if merchants is not None:
        query = query.where(ReconciliationCase.merchant_user_id.in_(sorted(merchants)))
    if period_start is not None:
        query = query.where(ReconciliationCase.period_start == period_start)
    if state is not None:
        query = query.where(ReconciliationCase.state == state)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query.offset(offset)))


def get_case(session: Session, case_id: int) -> ReconciliationCase:
    case = session.get(ReconciliationCase, case_id)
    if case is None:
        raise SettlementError(f"no reconciliation case {case_id}", code="case_not_found", status=404)
    return case


def decide_case(
    session: Session,
    case: ReconciliationCase,
    user: User,
    action: Literal["accept", "adjust"],
    adjustment: int,
    reason: str,
) -> ReconciliationCase:
    """Records who decided what, when and why (in the caller's transaction)."""
    if case.state != CaseState.open:
        raise SettlementError(f"case {case.id} is {case.state}, not open", code="case_not_open", status=409)
    if not reason.strip():
        raise SettlementError("a decision needs a reason", code="reason_missing")
    if action == "accept" and adjustment:
        raise SettlementError("an accepted case carries no adjustment", code="adjustment_invalid")
    if action == "adjust" and not adjustment:
        raise SettlementError("an adjustment must not be zero", code="adjustment_invalid")
    if abs(adjustment) > INT64_MAX:  # stored in a signed 64-bit column (the API's schema bounds it too)
        raise SettlementError(f"an adjustment is at most {INT64_MAX} in size", code="adjustment_invalid")
    case.state = CaseState.accepted if action == "accept" else CaseState.adjusted
    case.adjustment = adjustment
    case.decided_by = user.id
    case.decided_by_name = user.name
    case.decided_at = utcnow()
    case.reason = reason.strip()
    session.flush()
    return case


def decision_of(case: ReconciliationCase, merchant: str) -> Decision:
    assert case.decided_at is not None and case.reason is not None
    return Decision(
        merchant=merchant,
        region=case.region,
        day=case.day,
        action="accept" if case.state == CaseState.accepted else "adjust",
        adjustment=case.adjustment,
        decided_by=f"{case.decided_by_name} (user {case.decided_by})",
        decided_at=int(case.decided_at.timestamp()),
        reason=case.reason,
    )


# ----------------------------------------------------------------------------------------------
# Settlements
# ----------------------------------------------------------------------------------------------


def get_settlement(session: Session, settlement_id: int) -> Settlement:
    settlement = session.get(Settlement, settlement_id)
    if settlement is None:
        raise SettlementError(f"no settlement {settlement_id}", code="settlement_not_found", status=404)
    return settlement


def list_settlements(
    session: Session,
    merchant_user_id: int | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Settlement]:
    query = select(Settlement).order_by(Settlement.period_start.desc(), Settlement.attempt.desc())
    if merchant_user_id is not None:
        query = query.where(Settlement.merchant_user_id == merchant_user_id)
    if state is not None:
        query = query.where(Settlement.state == state)
    return list(session.scalars(query.limit(limit).offset(offset)))


# ----------------------------------------------------------------------------------------------
# Statements
# ----------------------------------------------------------------------------------------------


def statement_context(session: Session, settlement: Settlement, statement: Statement) -> StatementContext:
    """What a statement is rendered with (settlement/statements.py): names, token, state and usage."""
    merchant = session.get(User, settlement.merchant_user_id)
    account = session.scalar(
        select(SettlementAccount).where(SettlementAccount.merchant_user_id == settlement.merchant_user_id)
    )
    if account is not None and account.token.lower() == settlement.token.lower():
        symbol, decimals = account.token_symbol, account.token_decimals
    else:  # the account moved to another token since: the statement names the one it was computed in
        symbol, decimals = statement.currency.code, statement.currency.decimals
    usage = {(r, d): (int(b), int(q)) for r, d, b, q in json.loads(settlement.usage_json or "[]")}
    return StatementContext(
        settlement_id=settlement.id,
        period_id=settlement.period_id,
        period_start=settlement.period_start,
        period_end=settlement.period_end,
        merchant_name=merchant.name if merchant is not None else f"merchant {settlement.merchant_user_id}",
        merchant_address=to_checksum_address(settlement.merchant_address),
        token_address=to_checksum_address(settlement.token),
        token_symbol=symbol,
        token_decimals=decimals,
        state=settlement.state,
        root=settlement.root,
        tx_hash=settlement.tx_hash,
        claims_open_at=settlement.claims_open_at,
        usage_by_region_day=usage,
        terms_block=settlement.terms_block,
        unbillable=tuple(json.loads(settlement.unbillable_json or "[]")),
        related=tuple(related_settlements(session, settlement)),
    )


def related_settlements(session: Session, settlement: Settlement) -> list[dict[str, Any]]:
    """The other settlements of the same merchant and period, in sequence order: the period (each
    attempt), its corrections (late records) and its releases (held royalties)."""
    rows = session.scalars(
        select(Settlement)
        .where(
            Settlement.merchant_user_id == settlement.merchant_user_id,
            Settlement.period_start == settlement.period_start,
            Settlement.id != settlement.id,
        )
        .order_by(Settlement.sequence, Settlement.attempt)
    )
    return [
        {
            "settlement_id": row.id,
            "kind": row.kind,
            "sequence": row.sequence,
            "period_id": row.period_id,
            "state": row.state,
            "total": int(row.total),
        }
        for row in rows
    ]
