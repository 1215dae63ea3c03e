"""Merchant hosts: which request hosts (the ``Host`` a CDN log records) belong to which merchant account; a
record's merchant is keccak256 of its host (ledger/ids.py). And the sources each merchant authorises to
bill it: a log's Host is whatever its writer put there, so only authorised sources' records are charged.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgeledger.auth.dependencies import Principal
from edgeledger.auth.models import Role, User
from edgeledger.deliveries import service
from edgeledger.deliveries.models import DeliverySource, MerchantHost, MerchantSource
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
    """Admins and global auditors see every mapping, a scoped auditor its merchants', a merchant its own
    hosts."""
    query = select(MerchantHost).order_by(MerchantHost.host)
    if principal.role == Role.merchant:
        query = query.where(MerchantHost.merchant_user_id == principal.user_id)
    if (scope := service.limiting_scope(principal)) is not None:
        query = query.where(MerchantHost.merchant_user_id.in_(sorted(scope.merchants)))
    return [_host_read(row) for row in session.scalars(query)]


# ----------------------------------------------------------------------------------------------
# Sources a merchant authorises to bill it
# ----------------------------------------------------------------------------------------------


class MerchantSourceCreate(BaseModel):
    source: str = Field(description="The source's name or 0x source id")
    merchant_user_id: int | None = Field(
        None, description="The merchant (admins, on a merchant's behalf); a merchant names itself"
    )


class MerchantSourceRead(BaseModel):
    merchant_user_id: int
    source: str
    source_id: str
    authorised_by: str
    created_at: datetime


def _merchant_of(session: Session, principal: Principal, merchant_user_id: int | None) -> User:
    if principal.role == Role.merchant:
        if merchant_user_id not in (None, principal.user_id):
            raise service.DeliveryError(
                "a merchant authorises sources for itself only", code="forbidden", status=403
            )
        merchant_user_id = principal.user_id
    if merchant_user_id is None:
        raise service.DeliveryError("name the merchant (merchant_user_id)", code="merchant_missing")
    user = session.get(User, merchant_user_id)
    if user is None or user.role != Role.merchant:
        raise service.DeliveryError(
            f"user {merchant_user_id} is not a merchant", code="not_a_merchant", status=422
        )
    return user


def _source_read(row: MerchantSource, source: DeliverySource) -> MerchantSourceRead:
    return MerchantSourceRead(
        merchant_user_id=row.merchant_user_id,
        source=source.name,
        source_id=source.source_id,
        authorised_by=row.authorised_by,
        created_at=row.created_at,
    )


def authorise_source(
    session: Session, principal: Principal, body: MerchantSourceCreate
) -> MerchantSourceRead:
    """The merchant (or an admin on its behalf) lets a source bill it (idempotent). Only authorised
    sources' records for the merchant's hosts are charged; the others are listed as not billed."""
    user = _merchant_of(session, principal, body.merchant_user_id)
    source = service.get_source(session, body.source)
    row = session.get(MerchantSource, (user.id, source.id))
    if row is None:
        row = MerchantSource(
            merchant_user_id=user.id,
            source_pk=source.id,
            authorised_by=f"user:{principal.user_id}:{principal.role}",
        )
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # authorised concurrently
            session.rollback()
            row = session.get(MerchantSource, (user.id, source.id))
            assert row is not None
    return _source_read(row, source)


def revoke_source(
    session: Session, principal: Principal, source_ref: str, merchant_user_id: int | None
) -> None:
    """Stops a source billing the merchant from the next settlement computed (404 when not authorised)."""
    user = _merchant_of(session, principal, merchant_user_id)
    source = service.get_source(session, source_ref)
    row = session.get(MerchantSource, (user.id, source.id))
    if row is None:
        raise service.DeliveryError(
            f"{source.name} is not authorised to bill merchant {user.id}", code="not_authorised", status=404
        )
    session.delete(row)
    session.commit()


def list_merchant_sources(session: Session, principal: Principal) -> list[MerchantSourceRead]:
    """Admins and global auditors see every authorisation, a scoped auditor its merchants', a merchant
    its own."""
    query = (
        select(MerchantSource, DeliverySource)
        .join(DeliverySource, MerchantSource.source_pk == DeliverySource.id)
        .order_by(MerchantSource.merchant_user_id, DeliverySource.name)
    )
    if principal.role == Role.merchant:
        query = query.where(MerchantSource.merchant_user_id == principal.user_id)
    if (scope := service.limiting_scope(principal)) is not None:
        query = query.where(MerchantSource.merchant_user_id.in_(sorted(scope.merchants)))
    return [_source_read(row, source) for row, source in session.execute(query)]


def authorised_source_pks(session: Session, merchant_user_id: int) -> list[int]:
    """The sources that may bill the merchant."""
    return list(
        session.scalars(
            select(MerchantSource.source_pk).where(MerchantSource.merchant_user_id == merchant_user_id)
        )
    )
