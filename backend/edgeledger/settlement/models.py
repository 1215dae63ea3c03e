"""Settlement: tables and API schemas (docs/settlement.md, "Settling a period").

* a :class:`SettlementAccount` says how a merchant settles: its escrow address on chain, the token, the
  reconciliation tolerance, and the cursor of the next period to settle (periods are never skipped: the
  cursor only moves in the transaction that writes the period's :class:`Settlement` row);
* :class:`RateCardRow` and :class:`FxRateRow` store the pure models of ``rates.py`` as versioned rows;
* a :class:`BillingImport` is one CDN billing CSV of a merchant's period, aggregated per (region, day) in
  :class:`BillingUsageRow`; reconciliation against the anchored receipts opens a
  :class:`ReconciliationCase` per (region, day) beyond the tolerance, which a merchant or admin decides;
* a :class:`Settlement` is one attempt to settle (merchant, period): its statement, payout tree
  (:class:`SettlementPayout` rows, one per payee) and its state on chain.

Amounts are integers of minor units: the settlement token's for settlements, payouts and held royalties
(``TokenAmount``: exact up to 2^256 - 1, so 18-decimal tokens fit; the vault stops at 2^128 - 1), the rate
card's or the bill's for reconciliation (``BigInteger``, signed 64 bits).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from edgeledger.db import Base, TokenAmount, UTCDateTime, utcnow


class SettlementState(StrEnum):
    """A settlement attempt's life (docs/settlement.md has the diagram)."""

    blocked = "blocked"  # cannot be computed or posted yet (error_code says why); retried every tick
    empty = "empty"  # nothing delivered or nothing to pay: no post (terminal)
    computed = "computed"  # statement and payout tree stored, ready to post
    posting = "posting"  # post transaction about to be sent or sent (tx_hash), not yet mined
    posted = "posted"  # reserved on chain, challenge window running
    challenged = "challenged"  # frozen on chain until an admin resolves it
    claimable = "claimable"  # claims open (window passed, or challenge upheld) (terminal)
    cancelled = "cancelled"  # an admin cancelled it on chain; a recompute makes a new attempt (terminal)


class SettlementKind(StrEnum):
    period = "period"  # a merchant's period
    release = "release"  # held royalties of a posted period, released or refunded (settlement/held.py)
    correction = "correction"  # records of the period anchored after it settled (settlement/corrections.py)


OPEN_STATES = (
    SettlementState.blocked,
    SettlementState.computed,
    SettlementState.posting,
    SettlementState.posted,
    SettlementState.challenged,
)


class CaseState(StrEnum):
    open = "open"  # stops automatic settlement of the merchant's period
    accepted = "accepted"  # the receipts stand as they are
    adjusted = "adjusted"  # the region's delivery fee is adjusted by ``adjustment``
    superseded = "superseded"  # a newer billing import of the period replaced it


class SettlementAccount(Base):
    __tablename__ = "settlement_accounts"
    # one merchant per escrow address (the vault keys escrow, caps and settlements by it; migration 0018)
    __table_args__ = (Index("uq_settlement_accounts_address", "address", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id"), unique=True)
    address: Mapped[str] = mapped_column(String(42))  # escrow owner in SettlementVault (checksummed)
    token: Mapped[str] = mapped_column(String(42))  # settlement token (checksummed)
    token_symbol: Mapped[str] = mapped_column(String(10))
    token_decimals: Mapped[int] = mapped_column(Integer)
    tolerance_bps: Mapped[int] = mapped_column(Integer)
    require_billing: Mapped[bool] = mapped_column(Boolean, default=False)  # wait for the CDN's bill
    auto_settle: Mapped[bool] = mapped_column(Boolean, default=True)
    next_period_start: Mapped[int] = mapped_column(BigInteger)  # the next period without a settlement
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RateCardRow(Base):
    __tablename__ = "settlement_rate_cards"
    __table_args__ = (UniqueConstraint("merchant_user_id", "version", name="uq_rate_card_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_until: Mapped[int | None] = mapped_column(BigInteger)
    card_json: Mapped[str] = mapped_column(Text)  # rates.RateCard as JSON
    created_by: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FxRateRow(Base):
    """One row of the configurable FX table (``1 base = numerator/denominator quote``)."""

    __tablename__ = "settlement_fx_rates"
    __table_args__ = (UniqueConstraint("source", "timestamp", "base", "quote", name="uq_fx_rate"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    base: Mapped[str] = mapped_column(String(10))
    quote: Mapped[str] = mapped_column(String(10))
    # Exact fractions can outgrow 64 bits: decimal strings of the integers.
    numerator: Mapped[str] = mapped_column(String(80))
    denominator: Mapped[str] = mapped_column(String(80))
    created_by: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BillingImport(Base):
    __tablename__ = "settlement_billing_imports"
    __table_args__ = (Index("ix_billing_imports_period", "merchant_user_id", "period_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id"))
    period_start: Mapped[int] = mapped_column(BigInteger)
    period_end: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    layout: Mapped[str] = mapped_column(String(20))
    rows: Mapped[int] = mapped_column(Integer)
    ignored: Mapped[int] = mapped_column(Integer, default=0)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # cases opened against receipts
    imported_by: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BillingUsageRow(Base):
    __tablename__ = "settlement_billing_usage"

    import_pk: Mapped[int] = mapped_column(
        ForeignKey("settlement_billing_imports.id", ondelete="CASCADE"), primary_key=True
    )
    region: Mapped[str] = mapped_column(String(8), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    requests: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(10))


class ReconciliationCase(Base):
    __tablename__ = "settlement_cases"
    __table_args__ = (
        UniqueConstraint("import_pk", "region", "day", name="uq_case_key"),
        Index("ix_settlement_cases_period", "merchant_user_id", "period_start", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id"))
    period_start: Mapped[int] = mapped_column(BigInteger)
    import_pk: Mapped[int] = mapped_column(ForeignKey("settlement_billing_imports.id"))
    region: Mapped[str] = mapped_column(String(8))
    day: Mapped[str] = mapped_column(String(10))
    # comma-separated: bytes,requests,amount,currency,source_over_bill
    reasons: Mapped[str] = mapped_column(String(100))
    # each source's own volume at the key, JSON [{source, bytes, requests, over_bill}] (period_inputs.py)
    sources_json: Mapped[str | None] = mapped_column(Text)
    ours_bytes: Mapped[int] = mapped_column(BigInteger)
    theirs_bytes: Mapped[int] = mapped_column(BigInteger)
    ours_requests: Mapped[int] = mapped_column(BigInteger)
    theirs_requests: Mapped[int] = mapped_column(BigInteger)
    ours_amount: Mapped[int | None] = mapped_column(BigInteger)
    theirs_amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(10))
    # a bill in another currency than the card's: its amount in the card's minor units, and the FX rate
    # that converted it (FxSnapshot JSON), so the comparison can be redone
    theirs_amount_converted: Mapped[int | None] = mapped_column(BigInteger)
    fx_json: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), default=CaseState.open)
    adjustment: Mapped[int] = mapped_column(BigInteger, default=0)  # rate-card minor units
    decided_by: Mapped[int | None] = mapped_column(Integer)
    decided_by_name: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Settlement(Base):
    __tablename__ = "settlements"
    __table_args__ = (
        UniqueConstraint(
            "merchant_user_id", "period_start", "sequence", "attempt", name="uq_settlement_attempt"
        ),
        Index("ix_settlements_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id"))
    period_start: Mapped[int] = mapped_column(BigInteger)
    period_end: Mapped[int] = mapped_column(BigInteger)
    period_id: Mapped[int] = mapped_column(BigInteger)  # period_start // period length: the vault's periodId
    attempt: Mapped[int] = mapped_column(Integer, default=1)  # a new attempt after a cancelled one
    # "period"; "release" (held royalties paid out or refunded: settlement/held.py); "correction" (the
    # period's records anchored after it settled: settlement/corrections.py)
    kind: Mapped[str] = mapped_column(String(16), default=SettlementKind.period, server_default="period")
    # 0 for the period itself; n >= 1 for its n-th supplementary settlement (period_id + (n << 32))
    sequence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # a release's source: the period (or correction) whose held reserve pays it
    funded_by_pk: Mapped[int | None] = mapped_column(ForeignKey("settlements.id"))
    # royalties held back and reserved with the root (postWithHeld), token minor units
    held_total: Mapped[int] = mapped_column(TokenAmount, default=0)
    state: Mapped[str] = mapped_column(String(20), default=SettlementState.computed)
    merchant_address: Mapped[str] = mapped_column(String(42))
    token: Mapped[str] = mapped_column(String(42))
    root: Mapped[str | None] = mapped_column(String(66))
    total: Mapped[int] = mapped_column(TokenAmount, default=0)
    payee_count: Mapped[int] = mapped_column(Integer, default=0)
    receipt_count: Mapped[int] = mapped_column(Integer, default=0)
    # The computation's inputs and result, canonical JSON: anyone can recompute and compare.
    inputs_digest: Mapped[str | None] = mapped_column(String(66))  # sha256 of the inputs' canonical JSON
    inputs_gz: Mapped[bytes | None] = mapped_column(LargeBinary)  # gzip of that JSON (payouts.PayoutInputs)
    statement_json: Mapped[str | None] = mapped_column(Text)
    usage_json: Mapped[str | None] = mapped_column(Text)  # bytes/requests per (region, day) for charts
    batch_ids_json: Mapped[str] = mapped_column(Text, default="[]")  # anchored batches it counted
    # the block the assets' terms were read at (settlement/terms.py); in the published inputs too
    terms_block: Mapped[int | None] = mapped_column(BigInteger)
    # batches of the period holding the merchant's records that are not billed (abandoned), as listed
    unbillable_json: Mapped[str | None] = mapped_column(Text)
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    # the signer's nonce of the post's transaction, and when ``tx_hash`` was sent: a post unmined for
    # TX_REPLACE_AFTER_SECONDS is sent again at that nonce with higher fees (chain/stuck_tx.py)
    tx_nonce: Mapped[int | None] = mapped_column(BigInteger)
    # the transaction at that nonce ``tx_hash`` replaced (or a reorg took out), while it may still wait
    tx_prev_hash: Mapped[str | None] = mapped_column(String(66))
    tx_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    claims_open_at: Mapped[int | None] = mapped_column(BigInteger)
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class HeldState(StrEnum):
    held = "held"  # reserved in the vault with its period's root
    released = "released"  # in a release settlement (release_pk) paying the rights holder
    refunded = "refunded"  # in a release settlement (release_pk) paying the merchant back


class SettlementHeld(Base):
    """One held-back royalty of a period's settlement (its statement's ``held_back[position]``), and
    what became of it. A release that is cancelled on chain returns its items to ``held``."""

    __tablename__ = "settlement_held"
    __table_args__ = (UniqueConstraint("settlement_pk", "position", name="uq_settlement_held"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    settlement_pk: Mapped[int] = mapped_column(ForeignKey("settlements.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    asset_id: Mapped[str] = mapped_column(String(78))
    reason: Mapped[str] = mapped_column(String(20))
    via_json: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(TokenAmount)
    state: Mapped[str] = mapped_column(String(12), default=HeldState.held)
    release_pk: Mapped[int | None] = mapped_column(ForeignKey("settlements.id"), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SettlementPayout(Base):
    """One leaf of a settlement's payout tree."""

    __tablename__ = "settlement_payouts"

    settlement_pk: Mapped[int] = mapped_column(
        ForeignKey("settlements.id", ondelete="CASCADE"), primary_key=True
    )
    payee: Mapped[str] = mapped_column(String(42), primary_key=True, index=True)  # lower case
    amount: Mapped[int] = mapped_column(TokenAmount)
    leaf: Mapped[str] = mapped_column(String(66))
