"""Merchant hosts: which request hosts (the ``Host`` a CDN log records) belong to which merchant account; a
record's merchant is keccak256 of its host (ledger/ids.py).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgeledger.auth.dependencies import Principal
from edgeledger.auth.models import Role, User
from edgeledger.deliveries import service
from edgeledger.deliveries.models import (
    MerchantHost,
)
from edgeledger.ledger.hashing import hex32
from edgeledger.ledger.ids import merchant_id_for


class MerchantHostCreate(BaseModel):
    host: str
    merchant_user_id: int


class MerchantHostRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    host: str
    merchant_user_id: int
    merchant_id: str  # keccak256(host), the records' merchantId
    created_at: datetime


def _host_read(row: MerchantHost) -> MerchantHostRead:
    return MerchantHostRead(
        host=row.host,
        merchant_user_id=row.merchant_user_id,
        merchant_id=hex32(merchant_id_for(row.host)),
        created_at=row.created_at,
    )


def add_merchant_host(session: Session, body: MerchantHostCreate) -> MerchantHostRead:
    """Map a request host to a merchant account (idempotent; 409 when the host is another merchant's)."""
    host = body.host.strip().lower().rstrip(".")
    if not host or len(host) > 255 or not host.isprintable() or " " in host or "/" in host:
        raise service.DeliveryError(f"{body.host!r} is not a host name", code="bad_host")
    user = session.get(User, body.merchant_user_id)
    if user is None or user.role != Role.merchant:
        raise service.DeliveryError(
            f"user {body.merchant_user_id} is not a merchant", code="not_a_merchant", status=422
        )
    existing = session.get(MerchantHost, host)
    if existing is not None:
        if existing.merchant_user_id != user.id:
            raise service.DeliveryError(
                f"host {host!r} belongs to merchant {existing.merchant_user_id}",
                code="merchant_host_taken",
                status=409,
            )
        return _host_read(existing)
    row = MerchantHost(host=host, merchant_user_id=user.id)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # added concurrently: report what is stored now
        session.rollback()
        return add_merchant_host(session, body)
    return _host_read(row)


def list_merchant_hosts(session: Session, principal: Principal) -> list[MerchantHostRead]:
    """Admins and auditors see every mapping, a merchant its own hosts."""
    query = select(MerchantHost).order_by(MerchantHost.host)
    if principal.role == Role.merchant:
        query = query.where(MerchantHost.merchant_user_id == principal.user_id)
    return [_host_read(row) for row in session.scalars(query)]
