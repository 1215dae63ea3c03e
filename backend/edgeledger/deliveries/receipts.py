"""Delivery receipts: anchored deliveries per (batch, asset, merchant, region, country), the input of
settlement (``settlement.period_inputs.period_receipts`` reads them; records are aggregated once, here).

A batch's :class:`DeliveryReceipt` rows are recomputed from its records whenever what counts changes
(the batch is anchored, a fraud flag on it is reviewed): requests and bytes of the records that are not
excluded, and the excluded ones beside them, so ``requests + excluded_requests`` is always the number of
records and the anchored totals can be reconciled line by line.

What a receipt's counted records are billed by depends on one more thing the rows do not store: a batch
with an open fraud flag over records of a merchant is counted by no settlement of that merchant until
every such flag is decided (``settlement.period_inputs.under_review``, built on :func:`open_flag_cover`
here so both read one rule). :func:`aggregate_receipts` reads the open flags when it lists the rows and
reports the part of each row that waits (``under_review_*``) instead of leaving it out: it is
recomputed at every read, so it never lags a review.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, case, delete, func, or_, select
from sqlalchemy.orm import Session

from edgeledger.auth.service import AuditScope
from edgeledger.db import utcnow
from edgeledger.deliveries.models import (
    ANCHORED_STATES,
    DeliveryBatch,
    DeliveryReceipt,
    DeliveryRecordRow,
    FlagState,
    FraudFlag,
    FraudFlagRecord,
    MerchantHost,
)
from edgeledger.deliveries.service import DeliveryError, scope_source_pks
from edgeledger.ledger.hashing import hex32
from edgeledger.ledger.ids import merchant_id_for

Record = DeliveryRecordRow


#: batch keys per ``IN (...)`` of the open-flag query
_CHUNK = 500


class ReceiptRead(BaseModel):
    """One row of ``GET /deliveries/receipts``: a merchant's anchored deliveries of one asset in one
    region and period, summed over the batches behind it (docs/anchoring.md, "Receipts").

    ``requests`` and ``bytes_delivered`` count the records no fraud flag excludes; ``excluded_*`` the
    ones an open or confirmed flag does. The ``under_review*`` fields are the part of ``requests`` and
    ``bytes_delivered`` that no settlement bills yet: they are in batches with an open fraud flag over
    records of the same merchant (any host of it), and such a batch waits, whole, until every such flag
    is decided; then the period, or a correction of it, bills what the review left. The merchant's
    statement lists those batches as not billed, kind ``fraud_review``."""

    asset_id: int
    merchant_id: str
    host: str
    region: str
    period_start: int
    period_end: int
    requests: int
    bytes_delivered: int
    excluded_requests: int
    excluded_bytes: int
    batch_ids: list[str]
    under_review: bool = Field(
        default=False, description="some batch behind the row waits for a fraud review of the merchant"
    )
    under_review_requests: int = Field(
        default=0, description="requests of the row in batches waiting for a fraud review (not billed yet)"
    )
    under_review_bytes: int = Field(
        default=0, description="bytes of the row in batches waiting for a fraud review (not billed yet)"
    )
    under_review_batch_ids: list[str] = Field(
        default_factory=list, description="the batches among batch_ids waiting for a fraud review"
    )


def compute_receipts(session: Session, batch: DeliveryBatch) -> list[DeliveryReceipt]:
    """Replaces ``batch``'s receipts with aggregates of its records (in the caller's transaction)."""
    dropped = case((Record.excluded, 1), else_=0)
    counted = 1 - dropped
    rows = session.execute(
        select(
            Record.asset_id,
            Record.merchant_id,
            Record.region,
            Record.country,
            func.min(Record.host),
            func.sum(counted),
            func.sum(counted * Record.bytes_delivered),
            func.sum(dropped),
            func.sum(dropped * Record.bytes_delivered),
        )
        .where(Record.batch_pk == batch.id)
        .group_by(Record.asset_id, Record.merchant_id, Record.region, Record.country)
    ).all()
    session.execute(delete(DeliveryReceipt).where(DeliveryReceipt.batch_pk == batch.id))
    now = utcnow()
    receipts = [
        DeliveryReceipt(
            batch_pk=batch.id,
            period_start=batch.period_start,
            period_end=batch.period_end,
            asset_id=int(asset_id),
            merchant_id=hex32(bytes(merchant_id)),
            host=str(host).lower(),
            region=region,
            country=country,
            requests=int(requests),
            bytes_delivered=int(nbytes),
            excluded_requests=int(ex_requests),
            excluded_bytes=int(ex_bytes),
            computed_at=now,
        )
        for asset_id, merchant_id, region, country, host, requests, nbytes, ex_requests, ex_bytes in rows
    ]
    session.add_all(receipts)
    session.flush()
    return receipts


@dataclass
class _Total:
    host: str
    period_end: int
    requests: int = 0
    bytes_delivered: int = 0
    excluded_requests: int = 0
    excluded_bytes: int = 0
    batch_ids: list[str] = field(default_factory=list)
    under_review_requests: int = 0
    under_review_bytes: int = 0
    under_review_batch_ids: list[str] = field(default_factory=list)


def open_flag_cover(*columns: Any) -> Select[Any]:
    """``columns`` over the records an open fraud flag covers, one row per (flag, record): what a
    review is still pending on."""
    return (
        select(*columns)
        .select_from(FraudFlag)
        .join(FraudFlagRecord, FraudFlagRecord.flag_pk == FraudFlag.id)
        .join(Record, Record.id == FraudFlagRecord.record_pk)
        .where(FraudFlag.state == FlagState.open)
    )


def _waiting(session: Session, found: list[tuple[DeliveryReceipt, str]]) -> set[tuple[int, str]]:
    """The (batch key, merchant id) pairs among ``found`` that no settlement counts yet: an open fraud
    flag in the batch covers records of a merchant id of the same merchant (the hosts registered to one
    user; a host registered to nobody is its own merchant), as ``period_inputs.under_review`` holds a
    batch for the whole account."""
    batch_pks = sorted({receipt.batch_pk for receipt, _ in found})
    flagged: set[tuple[int, str]] = set()
    for start in range(0, len(batch_pks), _CHUNK):
        chunk = batch_pks[start : start + _CHUNK]
        query = open_flag_cover(FraudFlag.batch_pk, Record.merchant_id).where(FraudFlag.batch_pk.in_(chunk))
        flagged.update((pk, hex32(bytes(m))) for pk, m in session.execute(query.distinct()))
    if not flagged:
        return set()
    hosts = sorted({receipt.host for receipt, _ in found})
    owner_of: dict[str, int] = {}
    for start in range(0, len(hosts), _CHUNK):
        rows = session.execute(
            select(MerchantHost.host, MerchantHost.merchant_user_id).where(
                MerchantHost.host.in_(hosts[start : start + _CHUNK])
            )
        )
        owner_of.update((host, user_id) for host, user_id in rows)
    siblings = {user_id: merchant_ids_of_user(session, user_id) for user_id in set(owner_of.values())}
    waiting: set[tuple[int, str]] = set()
    for receipt, _ in found:
        owner = owner_of.get(receipt.host)
        group = siblings[owner] if owner is not None else [receipt.merchant_id]
        if any((receipt.batch_pk, m) in flagged for m in group):
            waiting.add((receipt.batch_pk, receipt.merchant_id))
    return waiting


def merchant_ids_of_user(session: Session, user_id: int) -> list[str]:
    hosts = session.scalars(select(MerchantHost.host).where(MerchantHost.merchant_user_id == user_id))
    return [hex32(merchant_id_for(host)) for host in hosts]


def scope_clause(session: Session, scope: AuditScope) -> ColumnElement[bool]:
    """The receipts a scoped auditor reads: those of its merchants' hosts, and those of batches of its
    sources (nothing for an empty scope)."""
    merchant_ids = [m for user_id in sorted(scope.merchants) for m in merchant_ids_of_user(session, user_id)]
    return or_(
        DeliveryReceipt.merchant_id.in_(merchant_ids),
        DeliveryBatch.source_pk.in_(scope_source_pks(scope)),
    )


def merchant_filter_id(merchant: str) -> str:
    """A merchant filter given as 0x merchant id or as host."""
    if merchant.startswith("0x"):
        if len(merchant) != 66:
            raise DeliveryError("a merchant id is 32 bytes of hex", code="invalid_merchant")
        return merchant.lower()
    return hex32(merchant_id_for(merchant))


def aggregate_receipts(
    session: Session,
    *,
    period_start: int | None = None,
    merchant_ids: Iterable[str] | None = None,
    asset_id: int | None = None,
    visible: ColumnElement[bool] | None = None,
) -> list[ReceiptRead]:
    """Receipts of anchored and final batches summed per (asset, merchant, region, period), each with
    the batch ids behind it and the part waiting for a fraud review (:class:`ReceiptRead`).
    ``merchant_ids`` None means every merchant; ``visible`` further limits the receipts (an audit scope,
    :func:`scope_clause`)."""
    query = (
        select(DeliveryReceipt, DeliveryBatch.batch_id)
        .join(DeliveryBatch, DeliveryBatch.id == DeliveryReceipt.batch_pk)
        .where(DeliveryBatch.state.in_(sorted(ANCHORED_STATES)))
    )
    if visible is not None:
        query = query.where(visible)
    if period_start is not None:
        query = query.where(DeliveryReceipt.period_start == period_start)
    if merchant_ids is not None:
        query = query.where(DeliveryReceipt.merchant_id.in_(list(merchant_ids)))
    if asset_id is not None:
        query = query.where(DeliveryReceipt.asset_id == asset_id)
    totals: dict[tuple[int, str, str, int], _Total] = {}
    found = [
        (receipt, batch_id)
        for receipt, batch_id in session.execute(
            query.order_by(DeliveryReceipt.period_start, DeliveryReceipt.id)
        )
    ]
    waiting = _waiting(session, found)
    for receipt, batch_id in found:
        key = (receipt.asset_id, receipt.merchant_id, receipt.region, receipt.period_start)
        total = totals.setdefault(key, _Total(receipt.host, receipt.period_end))
        total.requests += receipt.requests
        total.bytes_delivered += receipt.bytes_delivered
        total.excluded_requests += receipt.excluded_requests
        total.excluded_bytes += receipt.excluded_bytes
        if batch_id not in total.batch_ids:
            total.batch_ids.append(batch_id)
        if (receipt.batch_pk, receipt.merchant_id) in waiting:
            total.under_review_requests += receipt.requests
            total.under_review_bytes += receipt.bytes_delivered
            if batch_id not in total.under_review_batch_ids:
                total.under_review_batch_ids.append(batch_id)
    return [
        ReceiptRead(
            asset_id=asset,
            merchant_id=merchant,
            host=total.host,
            region=region,
            period_start=start,
            period_end=total.period_end,
            requests=total.requests,
            bytes_delivered=total.bytes_delivered,
            excluded_requests=total.excluded_requests,
            excluded_bytes=total.excluded_bytes,
            batch_ids=total.batch_ids,
            under_review=bool(total.under_review_batch_ids),
            under_review_requests=total.under_review_requests,
            under_review_bytes=total.under_review_bytes,
            under_review_batch_ids=total.under_review_batch_ids,
        )
        for (asset, merchant, region, start), total in sorted(totals.items())
    ]
