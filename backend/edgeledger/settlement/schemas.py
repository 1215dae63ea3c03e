"""Request and response models of the settlement API (``settlement/views.py``).

Every money amount is an ``int`` of minor units (the settlement token's for settlements, payouts and
escrow; the rate card's for reconciliation cases). FX rates are exact fractions whose integers can
outgrow what JSON clients hold exactly, so they travel as decimal strings.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeledger.settlement.models import (
    BillingImport,
    BillingUsageRow,
    FxRateRow,
    RateCardRow,
    ReconciliationCase,
    Settlement,
    SettlementAccount,
    SettlementPayout,
)


class Page(BaseModel):
    total: int
    limit: int
    offset: int


# --- accounts ----------------------------------------------------------------------------------------


class AccountRead(BaseModel):
    merchant_user_id: int
    address: str
    token: str
    token_symbol: str
    token_decimals: int
    tolerance_bps: int
    require_billing: bool
    auto_settle: bool
    next_period_start: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, account: SettlementAccount) -> AccountRead:
        return cls(
            merchant_user_id=account.merchant_user_id,
            address=account.address,
            token=account.token,
            token_symbol=account.token_symbol,
            token_decimals=account.token_decimals,
            tolerance_bps=account.tolerance_bps,
            require_billing=account.require_billing,
            auto_settle=account.auto_settle,
            next_period_start=account.next_period_start,
            created_at=account.created_at,
            updated_at=account.updated_at,
        )


class AccountDetail(AccountRead):
    """The account with its live escrow (the vault's unreserved balance) and its open settlements."""

    #: SettlementVault.escrowOf(address, token) now; null when the chain could not be read
    escrow: int | None
    chain_error: str | None = None
    #: totals of settlements reserved on chain (posted, challenged)
    reserved: int
    #: totals of computed settlements not reserved yet (computed, posting, blocked with a payout tree)
    pending: int
    #: what the merchant must still deposit for the pending settlements to post (0 when escrow covers it)
    shortfall: int | None
    open_settlements: int
    #: the merchant's own bounds in the vault (SettlementVault.boundsOf): the most one period may reserve
    #: (0: no bound), the only settler that may post for it (null: any), the most all postings may
    #: reserve within one span of block time (the vault's period length; 0: no bound) and what they
    #: reserved in the current span
    period_cap: int | None = None
    chosen_settler: str | None = None
    rate_cap: int | None = None
    rate_spent: int | None = None


# --- rate cards and FX -------------------------------------------------------------------------------


class RateCardRead(BaseModel):
    merchant_user_id: int
    version: int
    valid_from: int
    valid_until: int | None
    card: dict[str, Any]
    created_by: int | None
    created_at: datetime | None

    @classmethod
    def of(cls, row: RateCardRow) -> RateCardRead:
        return cls(
            merchant_user_id=row.merchant_user_id,
            version=row.version,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            card=json.loads(row.card_json),
            created_by=row.created_by,
            created_at=row.created_at,
        )


#: As rate cards name currencies (rates.Currency): a rate between other codes would never be used.
CURRENCY_CODE = r"^[A-Z][A-Z0-9]{2,9}$"


class FxRateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=64)
    timestamp: int = Field(ge=0, description="Unix seconds the rate was published at")
    base: str = Field(pattern=CURRENCY_CODE, description="A rate card's or token's currency code (TUSDC)")
    quote: str = Field(pattern=CURRENCY_CODE)
    rate: str = Field(
        min_length=1, max_length=80, description='1 base = rate quote: a decimal string ("1.0842") or "n/d"'
    )


class FxRateRead(BaseModel):
    id: int
    source: str
    timestamp: int
    base: str
    quote: str
    #: the exact rate as "numerator/denominator" (decimal integers)
    rate: str
    numerator: str
    denominator: str
    created_by: int | None
    created_at: datetime | None

    @classmethod
    def of(cls, row: FxRateRow) -> FxRateRead:
        return cls(
            id=row.id,
            source=row.source,
            timestamp=row.timestamp,
            base=row.base,
            quote=row.quote,
            rate=f"{row.numerator}/{row.denominator}",
            numerator=row.numerator,
            denominator=row.denominator,
            created_by=row.created_by,
            created_at=row.created_at,
        )


# --- billing imports and cases -----------------------------------------------------------------------


class BillingUsageRead(BaseModel):
    region: str
    day: str
    bytes: int
    requests: int
    amount: int | None
    currency: str | None

    @classmethod
    def of(cls, row: BillingUsageRow) -> BillingUsageRead:
        return cls(
            region=row.region,
            day=row.day,
            bytes=row.bytes,
            requests=row.requests,
            amount=row.amount,
            currency=row.currency,
        )


class BillingImportRead(BaseModel):
    id: int
    merchant_user_id: int
    period_start: int
    period_end: int
    filename: str
    sha256: str
    layout: str
    rows: int
    ignored: int
    superseded: bool
    #: earlier imports of the period this one superseded (their open cases too)
    supersedes: list[int] = []
    reconciled_at: datetime | None
    imported_by: int | None
    created_at: datetime | None
    usage: list[BillingUsageRead]

    @classmethod
    def of(
        cls, record: BillingImport, usage: list[BillingUsageRow], supersedes: list[int] | None = None
    ) -> BillingImportRead:
        return cls(
            id=record.id,
            merchant_user_id=record.merchant_user_id,
            period_start=record.period_start,
            period_end=record.period_end,
            filename=record.filename,
            sha256=record.sha256,
            layout=record.layout,
            rows=record.rows,
            ignored=record.ignored,
            superseded=record.superseded,
            supersedes=supersedes or [],
            reconciled_at=record.reconciled_at,
            imported_by=record.imported_by,
            created_at=record.created_at,
            usage=[BillingUsageRead.of(u) for u in usage],
        )


class CaseRead(BaseModel):
    id: int
    merchant_user_id: int
    period_start: int
    import_id: int
    region: str
    day: str
    reasons: list[str]
    #: each authorised source's own volume at the key: {source, bytes, requests, over_bill}
    sources: list[dict[str, Any]] = []
    ours_bytes: int
    theirs_bytes: int
    ours_requests: int
    theirs_requests: int
    #: rate-card minor units (ours) and the bill's minor units (theirs); null when the bill has no amounts
    ours_amount: int | None
    theirs_amount: int | None
    currency: str | None
    #: a bill in another currency than the card's: its amount in the card's minor units and the FX rate
    #: used (source, timestamp, base, quote, numerator, denominator, inverted); null when not converted
    theirs_amount_converted: int | None = None
    fx: dict[str, Any] | None = None
    state: str
    adjustment: int
    decided_by: int | None
    decided_by_name: str | None
    decided_at: datetime | None
    reason: str | None
    created_at: datetime | None

    @classmethod
    def of(cls, case: ReconciliationCase) -> CaseRead:
        return cls(
            id=case.id,
            merchant_user_id=case.merchant_user_id,
            period_start=case.period_start,
            import_id=case.import_pk,
            region=case.region,
            day=case.day,
            reasons=[r for r in case.reasons.split(",") if r],
            sources=json.loads(case.sources_json or "[]"),
            ours_bytes=case.ours_bytes,
            theirs_bytes=case.theirs_bytes,
            ours_requests=case.ours_requests,
            theirs_requests=case.theirs_requests,
            ours_amount=case.ours_amount,
            theirs_amount=case.theirs_amount,
            currency=case.currency,
            theirs_amount_converted=case.theirs_amount_converted,
            fx=json.loads(case.fx_json) if case.fx_json else None,
            state=case.state,
            adjustment=case.adjustment,
            decided_by=case.decided_by,
            decided_by_name=case.decided_by_name,
            decided_at=case.decided_at,
            reason=case.reason,
            created_at=case.created_at,
        )


class CaseDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["accept", "adjust"]
    #: rate-card minor units added to the region's delivery fee (may be negative); 0 for accept
    adjustment: int = Field(0, strict=True, ge=-(2**63 - 1), le=2**63 - 1)
    reason: str = Field(min_length=1, max_length=10_000)


# --- settlements -------------------------------------------------------------------------------------


class SettlementRead(BaseModel):
    id: int
    merchant_user_id: int
    period_start: int
    period_end: int
    period_id: int
    attempt: int
    #: "period", "correction" (late records of a settled period, ``sequence`` n) or "release" (held
    #: royalties of the period ``funded_by`` paid out or refunded)
    kind: str = "period"
    #: 0 for a period; n for its n-th supplementary settlement (on chain: period id + (n << 32))
    sequence: int = 0
    funded_by: int | None = None
    state: str
    merchant_address: str
    token: str
    root: str | None
    total: int
    #: royalties held back and reserved in the vault with the root
    held_total: int = 0
    #: the block the assets' terms were read at
    terms_block: int | None = None
    payee_count: int
    receipt_count: int
    inputs_digest: str | None
    batch_ids: list[str]
    tx_hash: str | None
    block_number: int | None
    claims_open_at: int | None
    send_attempts: int
    error_code: str | None
    error_message: str | None
    computed_at: datetime | None
    posted_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, row: Settlement) -> SettlementRead:
        return cls(
            id=row.id,
            merchant_user_id=row.merchant_user_id,
            period_start=row.period_start,
            period_end=row.period_end,
            period_id=row.period_id,
            attempt=row.attempt,
            kind=row.kind,
            sequence=row.sequence,
            funded_by=row.funded_by_pk,
            held_total=row.held_total,
            terms_block=row.terms_block,
            state=row.state,
            merchant_address=row.merchant_address,
            token=row.token,
            root=row.root,
            total=row.total,
            payee_count=row.payee_count,
            receipt_count=row.receipt_count,
            inputs_digest=row.inputs_digest,
            batch_ids=json.loads(row.batch_ids_json or "[]"),
            tx_hash=row.tx_hash,
            block_number=row.block_number,
            claims_open_at=row.claims_open_at,
            send_attempts=row.send_attempts,
            error_code=row.error_code,
            error_message=row.error_message,
            computed_at=row.computed_at,
            posted_at=row.posted_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class SettlementPage(Page):
    items: list[SettlementRead]


class PayoutRead(BaseModel):
    payee: str
    amount: int
    leaf: str

    @classmethod
    def of(cls, row: SettlementPayout) -> PayoutRead:
        return cls(payee=row.payee, amount=row.amount, leaf=row.leaf)


class PayoutPage(Page):
    settlement_id: int
    root: str | None
    total: int
    items: list[PayoutRead]


class RunReportRead(BaseModel):
    opened: list[int]
    computed: list[int]
    #: settlement id (as a string key) -> why it is blocked
    blocked: dict[str, str]
    posted: list[int]
    claimable: list[int]
    cancelled: list[int]
    #: another worker holds the settlement, or its merchant's posting
    busy: list[int]
    #: settlement id (as a string key) -> why it was left as it is this run, to go on by itself in a later
    #: one (``merchant_post_in_flight``: another post of its merchant is not mined yet)
    waiting: dict[str, str] = {}
    #: releases of held royalties opened by the run
    released: list[int] = []
    #: corrections (late records of settled periods) opened by the run
    corrections: list[int] = []
    retryable: bool


# --- payees ------------------------------------------------------------------------------------------


class EarningItem(BaseModel):
    settlement_id: int
    period_id: int
    period_start: int
    attempt: int
    merchant: str
    token: str
    amount: int
    state: str
    claims_open_at: int | None
    #: SettlementVault.isClaimed now; always false for settlements that are not on chain
    claimed: bool
    #: "period", "correction" (late records of a settled period) or "release" (held royalties released to
    #: this payee after a dispute, or refunded)
    kind: str = "period"


class EarningTotals(BaseModel):
    """Per token, a running ledger across periods: ``earned`` (every payout of a settlement that was not
    cancelled, periods, corrections and releases alike) = ``claimed`` + ``unclaimed``; ``unclaimed`` =
    ``claimable`` now + ``pending`` on chain (window running or challenged) + ``not_posted`` (computed,
    not yet on chain); ``released`` is the part of ``earned`` paid by releases of held royalties.
    Cancelled attempts count nowhere."""

    earned: int = 0
    released: int = 0
    claimed: int = 0
    unclaimed: int = 0
    claimable: int = 0
    pending: int = 0
    not_posted: int = 0


class EarningsRead(BaseModel):
    payee: str
    items: list[EarningItem]
    totals: dict[str, EarningTotals]
