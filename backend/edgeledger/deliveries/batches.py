"""Batches: closing a source's period (totals, tree, root and fraud signals fixed in one transaction that
holds the batch's row lock; ingestion checks state "open" under the same lock), the manifest of a closed
batch, and the batch views of the API (docs/anchoring.md).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.compliance.models import Action
from edgeledger.compliance.service import record_event
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.deliveries import signals, trees
from edgeledger.deliveries.models import (
    BatchExtraLeaf,
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
)
from edgeledger.deliveries.service import KIND_CODES, DeliveryError
from edgeledger.ledger.hashing import ZERO32, hex32
from edgeledger.ledger.manifest import Manifest

log = logging.getLogger(__name__)

#: Correction batches close this long after they opened at most (or sooner with a shorter late window).
CORRECTION_MAX_OPEN_SECONDS = 3600


class BatchRead(BaseModel):
    id: int
    batch_id: str
    source: str
    source_id: str
    kind: str
    correction_seq: int
    corrects: str | None
    period_start: int
    period_end: int
    state: str
    leaf_count: int
    total_requests: int
    total_bytes: int
    root: str | None
    manifest_hash: str | None
    prev_manifest_hash: str | None
    signer: str | None
    tx_hash: str | None
    block_number: int | None
    confirmations: int | None
    attempts: int
    error_code: str | None
    error_message: str | None
    closed_at: datetime | None
    anchored_at: datetime | None
    finalized_at: datetime | None
    abandoned_at: datetime | None = None
    abandoned_by: str | None = None
    abandon_reason: str | None = None


class AbandonRequest(BaseModel):
    reason: str = Field(
        min_length=3, max_length=500, description="Why the batch will never anchor (kept with the batch)"
    )


class CloseRequest(BaseModel):
    force: bool = Field(
        False, description="Close every open batch now, ignoring the late window (demos and tests only)"
    )
    anchor_now: bool = Field(False, description="Also anchor and confirm in this request (no worker)")


def _unix(now: datetime | int | None) -> int:
    if now is None:
        return int(datetime.now(UTC).timestamp())
    return int(now.timestamp()) if isinstance(now, datetime) else int(now)


def due_batch_ids(session: Session, settings: Settings, now: int, *, force: bool = False) -> list[int]:
    """Open batches to close: regular ones whose period ended a late window ago, corrections open for
    min(late window, 1 h); with ``force`` every open batch."""
    query = select(DeliveryBatch.id).where(DeliveryBatch.state == BatchState.open)
    if not force:
        late = settings.delivery_late_window_seconds
        correction_cutoff = datetime.fromtimestamp(now - min(late, CORRECTION_MAX_OPEN_SECONDS), UTC)
        regular_due = (DeliveryBatch.kind == BatchKind.regular) & (DeliveryBatch.period_end + late <= now)
        correction_due = (DeliveryBatch.kind == BatchKind.correction) & (
            DeliveryBatch.created_at <= correction_cutoff
        )
        query = query.where(regular_due | correction_due)
    return list(session.scalars(query.order_by(DeliveryBatch.period_start, DeliveryBatch.id)))


def close_due_batches(
    session: Session, settings: Settings, now: datetime | int | None = None, *, force: bool = False
) -> list[DeliveryBatch]:
    """Closes every due batch (see :func:`due_batch_ids`). ``force=True`` ignores the late window:
    records of those periods that arrive later go to correction batches. For demos and tests."""
    closed = []
    for batch_pk in due_batch_ids(session, settings, _unix(now), force=force):
        batch = close_batch(session, settings, batch_pk)
        if batch is not None:
            closed.append(batch)
    return closed


def close_batch(session: Session, settings: Settings, batch_pk: int) -> DeliveryBatch | None:
    """Closes one batch in one transaction under its row lock: totals, tree, root, fraud signals.
    None when someone else closed it first."""
    # Write before reading: on SQLite FOR UPDATE is a no-op and reads run outside a transaction, so the
    # UPDATE is what takes the database's write lock; an ingest chunk then cannot commit records into
    # this batch between the count below and the close (they would be missing from the tree). On
    # PostgreSQL it takes the row lock FOR UPDATE would.
    session.execute(
        update(DeliveryBatch)
        .where(DeliveryBatch.id == batch_pk, DeliveryBatch.state == BatchState.open)
        .values(updated_at=utcnow())
    )
    batch = session.scalar(select(DeliveryBatch).where(DeliveryBatch.id == batch_pk).with_for_update())
    if batch is None or batch.state != BatchState.open:
        session.rollback()
        return None
    count, total_bytes = session.execute(
        select(
            func.count(DeliveryRecordRow.id), func.coalesce(func.sum(DeliveryRecordRow.bytes_delivered), 0)
        ).where(DeliveryRecordRow.batch_pk == batch.id)
    ).one()
    extra = session.scalar(select(func.count(BatchExtraLeaf.id)).where(BatchExtraLeaf.batch_pk == batch.id))
    batch.total_requests = int(count)
    batch.leaf_count = int(count) + int(extra or 0)
    batch.total_bytes = int(total_bytes)
    batch.closed_at = utcnow()
    if batch.leaf_count == 0:
        batch.state = BatchState.empty  # nothing to anchor (the contract refuses empty batches)
    else:
        tree = trees.build_batch_tree(session, settings, batch)
        batch.root = hex32(tree.root)
        batch.state = BatchState.closed
        signals.flag_batch(session, settings, batch)
    session.commit()
    log.info("closed batch %s (%s, %d leaves)", batch.batch_id, batch.state, batch.leaf_count)
    return batch


def manifest_of(session: Session, batch: DeliveryBatch, prev_manifest_hash: str) -> Manifest:
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None and batch.root is not None
    corrects = ZERO32
    if batch.kind == BatchKind.correction and batch.corrects_pk is not None:
        corrected = session.get(DeliveryBatch, batch.corrects_pk)
        assert corrected is not None
        corrects = corrected.batch_id
    return Manifest(
        source_id=source.source_id,
        batch_id=batch.batch_id,
        period_start=batch.period_start,
        period_end=batch.period_end,
        root=batch.root,
        leaf_count=batch.leaf_count,
        total_bytes=batch.total_bytes,
        total_requests=batch.total_requests,
        prev_manifest_hash=prev_manifest_hash,
        kind=KIND_CODES[batch.kind],
        corrects=corrects,
    )


def stored_manifest(session: Session, batch: DeliveryBatch) -> Manifest:
    """The manifest prepared for a batch (409 ``manifest_not_ready`` before it was prepared)."""
    if batch.prev_manifest_hash is None or batch.root is None:
        raise DeliveryError(
            f"batch {batch.batch_id} has no manifest yet (state {batch.state})",
            code="manifest_not_ready",
            status=409,
            state=batch.state,
        )
    return manifest_of(session, batch, batch.prev_manifest_hash)


def batch_read(session: Session, batch: DeliveryBatch, head: int | None) -> BatchRead:
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    corrects = None
    if batch.corrects_pk is not None:
        corrected = session.get(DeliveryBatch, batch.corrects_pk)
        corrects = corrected.batch_id if corrected else None
    confirmations = None
    if head is not None and batch.block_number is not None:
        confirmations = max(0, head - batch.block_number + 1)
    return BatchRead(
        id=batch.id,
        batch_id=batch.batch_id,
        source=source.name,
        source_id=source.source_id,
        kind=batch.kind,
        correction_seq=batch.correction_seq,
        corrects=corrects,
        period_start=batch.period_start,
        period_end=batch.period_end,
        state=batch.state,
        leaf_count=batch.leaf_count,
        total_requests=batch.total_requests,
        total_bytes=batch.total_bytes,
        root=batch.root,
        manifest_hash=batch.manifest_hash,
        prev_manifest_hash=batch.prev_manifest_hash,
        signer=batch.signer,
        tx_hash=batch.tx_hash,
        block_number=batch.block_number,
        confirmations=confirmations,
        attempts=batch.attempts,
        error_code=batch.error_code,
        error_message=batch.error_message,
        closed_at=batch.closed_at,
        anchored_at=batch.anchored_at,
        finalized_at=batch.finalized_at,
        abandoned_at=batch.abandoned_at,
        abandoned_by=batch.abandoned_by,
        abandon_reason=batch.abandon_reason,
    )


#: States a batch can be abandoned from: nothing of it is on chain, and no anchor transaction is out.
ABANDONABLE = (BatchState.open, BatchState.closed, BatchState.awaiting_signature, BatchState.anchoring)


def abandon_batch(session: Session, batch_pk: int, actor: str, reason: str) -> DeliveryBatch:
    """An admin's decision that a batch will never anchor (its node lost its key, crashed for good, or
    its anchoring keeps failing): the batch leaves every queue, its records become unbillable (no
    settlement counts a batch that is not anchored) and no merchant's period waits for it any longer.

    Under the batch's row lock (ingestion and anchoring take the same), only from a state with nothing
    on chain; a batch whose anchor transaction is out (``anchoring`` with a hash) is refused until that
    transaction is known. Who, when and why go to the batch and, in the same transaction, to the
    compliance log; a node's late signature for it is refused. Records arriving later for the source's
    period go to a correction batch, as for any closed batch."""
    batch = session.scalars(select(DeliveryBatch).where(DeliveryBatch.id == batch_pk).with_for_update()).one()
    if batch.state not in ABANDONABLE or (batch.state == BatchState.anchoring and batch.tx_hash):
        session.rollback()
        raise DeliveryError(
            f"batch {batch.batch_id} is {batch.state}"
            + (" with its anchor transaction out" if batch.state == BatchState.anchoring else "")
            + ": only a batch with nothing on chain can be abandoned",
            code="batch_not_abandonable",
            status=409,
        )
    previous = batch.state
    batch.state = BatchState.abandoned
    batch.abandoned_at = utcnow()
    batch.abandoned_by = actor
    batch.abandon_reason = reason
    record_event(
        session,
        actor=actor,
        action=Action.batch_abandoned,
        subject=f"batch:{batch.batch_id}",
        legal_basis="settlement: a batch that will never anchor is not billed",
        detail={"previous_state": previous, "reason": reason, "records": batch.leaf_count},
    )
    session.commit()
    log.warning("batch %s abandoned by %s (was %s): %s", batch.batch_id, actor, previous, reason)
    return batch


def chain_head_or_none(chain: ChainClient) -> int | None:
    """The chain's block number for confirmation counts; None while the RPC is down (reads still work)."""
    try:
        return chain.block_number()
    except ChainError:
        return None


def list_batches(
    session: Session,
    *,
    source: str | None = None,
    state: str | None = None,
    period_start: int | None = None,
    limit: int = 500,
    within: Select[tuple[int]] | None = None,
) -> list[DeliveryBatch]:
    """Newest first; ``within``: only batches of these sources (keys, a subquery: an audit scope)."""
    query = select(DeliveryBatch)
    if within is not None:
        query = query.where(DeliveryBatch.source_pk.in_(within))
    if source is not None:
        column = DeliverySource.source_id if source.startswith("0x") else DeliverySource.name
        pk = session.scalar(select(DeliverySource.id).where(column == source))
        query = query.where(DeliveryBatch.source_pk == (pk if pk is not None else -1))
    if state is not None:
        query = query.where(DeliveryBatch.state == state)
    if period_start is not None:
        query = query.where(DeliveryBatch.period_start == period_start)
    query = query.order_by(DeliveryBatch.period_start.desc(), DeliveryBatch.id.desc()).limit(limit)
    return list(session.scalars(query))
