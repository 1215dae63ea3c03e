"""Deliveries: the small shared pieces every flow uses (record leaves, periods, lookups, pseudonym keys).

The ids that go on chain (source, batch, merchant, request key, client commitment) are derived in
``edgeledger.ledger.ids``, the one definition the verifiers share.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path

from Crypto.Cipher import AES
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgeledger.auth.dependencies import Principal, ensure_source_in_scope
from edgeledger.auth.models import Role
from edgeledger.auth.service import AuditScope
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.deliveries.models import (
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    PseudonymKey,
)
from edgeledger.deliveries.records import Pseudonymiser
from edgeledger.errors import EdgeLedgerError
from edgeledger.ledger.delivery_leaf import LeafValues
from edgeledger.ledger.hashing import bytes32
from edgeledger.ledger.ids import (
    BATCH_KIND_CODES,
    country_bytes,
    edge_location_bytes,
    request_key,
)

KIND_CODES: dict[str, int] = BATCH_KIND_CODES


class DeliveryError(EdgeLedgerError):
    status = 422
    code = "delivery_invalid"


# ----------------------------------------------------------------------------------------------
# Leaves
# ----------------------------------------------------------------------------------------------


def leaf_values_of(source_id: str, record: DeliveryRecordRow) -> LeafValues:
    """The leaf preimage (docs/delivery-leaf.md) of a stored record."""
    return LeafValues(
        bytes32(source_id),
        request_key(record.request_id),
        record.timestamp_ms,
        edge_location_bytes(record.edge_location),
        country_bytes(record.country),
        record.asset_id,
        record.merchant_id,
        record.bytes_delivered,
        record.status,
        record.cache_result,
        record.client_commitment,
    )


# ----------------------------------------------------------------------------------------------
# Periods
# ----------------------------------------------------------------------------------------------


def period_bounds(timestamp_ms: int, period_seconds: int) -> tuple[int, int]:
    """[start, end) in unix seconds of the period holding ``timestamp_ms`` (periods align with UTC days)."""
    start = (timestamp_ms // 1000) // period_seconds * period_seconds
    return start, start + period_seconds


def period_closes_at(period_end: int, settings: Settings) -> int:
    """Unix second at which a period stops taking records into its regular batch."""
    return period_end + settings.delivery_late_window_seconds


# ----------------------------------------------------------------------------------------------
# Lookups
# ----------------------------------------------------------------------------------------------


def get_source(session: Session, ref: str) -> DeliverySource:
    """A source by name or by 0x source id; 404 ``source_not_found`` otherwise."""
    column = DeliverySource.source_id if ref.startswith("0x") else DeliverySource.name
    source = session.scalar(
        select(DeliverySource).where(column == (ref.lower() if ref.startswith("0x") else ref))
    )
    if source is None:
        raise DeliveryError(f"no delivery source {ref!r}", code="source_not_found", status=404)
    return source


#: A numeric database id: ASCII digits only (str.isdigit() also takes "²", which int() refuses), and few
#: enough of them to fit the signed 64-bit column (a longer number is looked up as a batch id: 404).
_DATABASE_ID = re.compile(r"[0-9]{1,18}")


def get_batch(session: Session, batch_id: str) -> DeliveryBatch:
    """A batch by 0x batch id or by its numeric database id; 404 ``batch_not_found`` otherwise."""
    if _DATABASE_ID.fullmatch(batch_id):
        batch = session.get(DeliveryBatch, int(batch_id))
    else:
        batch = session.scalar(select(DeliveryBatch).where(DeliveryBatch.batch_id == batch_id.lower()))
    if batch is None:
        raise DeliveryError(f"no batch {batch_id!r}", code="batch_not_found", status=404)
    return batch


# ----------------------------------------------------------------------------------------------
# Audit scopes (docs/api.md "Auditor scopes")
# ----------------------------------------------------------------------------------------------


def limiting_scope(principal: Principal) -> AuditScope | None:
    """The audit scope that limits what ``principal`` reads here: a non-global auditor's (possibly
    empty: scopes fail closed), or None for everyone else (admins, global auditors, and the roles whose
    own-resource rules apply instead)."""
    if principal.role == Role.auditor and not principal.scope.is_global:
        return principal.scope
    return None


def scope_source_pks(scope: AuditScope) -> Select[tuple[int]]:
    """The database keys of the sources in ``scope`` (a subquery; empty for an empty scope)."""
    return select(DeliverySource.id).where(DeliverySource.source_id.in_(sorted(scope.sources)))


def ensure_source_visible(principal: Principal, source: DeliverySource) -> None:
    """403 ``out_of_scope`` when a scoped auditor names a source outside its scope."""
    if (scope := limiting_scope(principal)) is not None:
        ensure_source_in_scope(scope, source.source_id)


def ensure_batch_visible(session: Session, principal: Principal, batch: DeliveryBatch) -> None:
    if limiting_scope(principal) is not None:
        source = session.get(DeliverySource, batch.source_pk)
        assert source is not None
        ensure_source_visible(principal, source)


# ----------------------------------------------------------------------------------------------
# Pseudonym keys
# ----------------------------------------------------------------------------------------------

_MASTER_FILE = "pseudonym-master.key"


def master_key(settings: Settings) -> bytes:
    """32-byte key-wrapping key: PSEUDONYM_MASTER_KEY (hex), else a 0600 file created in DATA_DIR.

    Also the root of the rate limiter's address-hashing key (edgeledger.ratelimit), which every API
    process must derive alike."""
    if settings.pseudonym_master_key is not None:
        raw = bytes.fromhex(settings.pseudonym_master_key.get_secret_value().removeprefix("0x"))
        if len(raw) != 32:
            raise DeliveryError(
                "PSEUDONYM_MASTER_KEY must be 32 bytes of hex", code="config_invalid", status=500
            )
        return raw
    path = Path(settings.data_dir) / _MASTER_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def _wrap(master: bytes, key_id: str, key: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    cipher = AES.new(master, AES.MODE_GCM, nonce=nonce)
    cipher.update(key_id.encode())
    sealed, tag = cipher.encrypt_and_digest(key)
    return nonce + tag + sealed


def _unwrap(master: bytes, key_id: str, wrapped: bytes) -> bytes:
    nonce, tag, sealed = wrapped[:12], wrapped[12:28], wrapped[28:]
    cipher = AES.new(master, AES.MODE_GCM, nonce=nonce)
    cipher.update(key_id.encode())
    return cipher.decrypt_and_verify(sealed, tag)


def pseudonym_key_id(now: datetime | None = None) -> str:
    """Keys rotate per UTC day of ingestion: ``"YYYY-MM-DD"``."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d")


def pseudonymiser_for(session: Session, settings: Settings, key_id: str) -> Pseudonymiser:
    """The pseudonymiser of ``key_id``, creating (and committing) its key on first use.

    Raises ``pseudonym_key_destroyed`` (409) for a destroyed key: pseudonyms of that day can no longer
    be computed, by design.
    """
    master = master_key(settings)
    row = session.get(PseudonymKey, key_id)
    if row is None:
        row = PseudonymKey(key_id=key_id, key_wrapped=_wrap(master, key_id, secrets.token_bytes(32)))
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # a concurrent ingest created it first: use theirs
            session.rollback()
            row = session.get(PseudonymKey, key_id)
            if row is None:
                raise
    if row.key_wrapped is None:
        raise DeliveryError(
            f"pseudonym key {key_id} was destroyed", code="pseudonym_key_destroyed", status=409, key_id=key_id
        )
    return Pseudonymiser(_unwrap(master, key_id, row.key_wrapped), key_id)


def destroy_pseudonym_key(session: Session, key_id: str) -> None:
    """Forget a day's key for good (retention): its pseudonyms become unlinkable to any IP."""
    row = session.get(PseudonymKey, key_id)
    if row is not None and row.key_wrapped is not None:
        row.key_wrapped = None
        row.destroyed_at = utcnow()
