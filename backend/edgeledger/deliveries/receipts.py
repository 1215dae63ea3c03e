"""Delivery receipts: anchored deliveries per (batch, asset, merchant, region, country), the input of
settlement (``settlement.period_inputs.period_receipts`` reads them; records are aggregated once, here).

A batch's :class:`DeliveryReceipt` rows are recomputed from its records whenever what counts changes
(the batch is anchored, a fraud flag on it is reviewed): requests and bytes of the records that are not
excluded, and the excluded ones beside them, so ``requests + excluded_requests`` is always the number of
records and the anchored totals can be reconciled line by line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel
from sqlalchemy import ColumnElement, case, delete, func, or_, select
from sqlalchemy.orm import Session

from edgeledger.auth.service import AuditScope
from edgeledger.db import utcnow
from edgeledger.deliveries.models import (
    ANCHORED_STATES,
    DeliveryBatch,
    DeliveryReceipt,
    DeliveryRecordRow,
    MerchantHost,
)
from edgeledger.deliveries.service import DeliveryError, scope_source_pks
from edgeledger.ledger.hashing import hex32
from edgeledger.ledger.ids import merchant_id_for

Record = DeliveryRecordRow


class ReceiptRead(BaseModel):
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
    the batch ids behind it. ``merchant_ids`` None means every merchant; ``visible`` further limits the
    receipts (an audit scope, :func:`scope_clause`)."""
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
    for receipt, batch_id in session.execute(
        query.order_by(DeliveryReceipt.period_start, DeliveryReceipt.id)
    ):
        key = (receipt.asset_id, receipt.merchant_id, receipt.region, receipt.period_start)
        total = totals.setdefault(key, _Total(receipt.host, receipt.period_end))
        total.requests += receipt.requests
        total.bytes_delivered += receipt.bytes_delivered
        total.excluded_requests += receipt.excluded_requests
        total.excluded_bytes += receipt.excluded_bytes
        if batch_id not in total.batch_ids:
            total.batch_ids.append(batch_id)
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
        )
        for (asset, merchant, region, start), total in sorted(totals.items())
    ]
