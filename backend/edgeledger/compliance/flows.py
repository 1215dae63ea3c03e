"""Batching and anchoring of compliance events, and one pass of the compliance job.

Events are anchored "the same way as deliveries": they are the leaves of batches of one delivery
source of their own, ``edgeledger-compliance-log`` (a CDN-provider source, so the platform's ingest key
signs its manifests), and the deliveries pipeline closes, signs and anchors those batches exactly once
and follows them to finality. A batch covers [end of the previous one, now); it is cut when the oldest
waiting event is COMPLIANCE_BATCH_SECONDS old (or ``force``). The leaves are copied into
``batch_extra_leaves`` and the events point at their batch in the same transaction, so an event is in
exactly one batch; a crash before the close leaves an open batch that the next pass closes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.compliance import service
from edgeledger.compliance.models import ComplianceEvent, EventProof
from edgeledger.config import Settings
from edgeledger.db import exclusive_work
from edgeledger.deliveries import anchoring, batches, sources, trees
from edgeledger.deliveries.models import (
    BatchExtraLeaf,
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliverySource,
    SourceKind,
    SourceStatus,
)
from edgeledger.deliveries.proofs import ledger_location
from edgeledger.ledger.hashing import hex32
from edgeledger.ledger.ids import batch_id_for

log = logging.getLogger(__name__)

SOURCE_NAME = "edgeledger-compliance-log"
MAX_EVENTS_PER_BATCH = 100_000


def log_source(session: Session, chain: ChainClient, settings: Settings) -> DeliverySource:
    """The compliance log's source, registered on chain on first use (journaled like any source)."""
    source = session.scalar(select(DeliverySource).where(DeliverySource.name == SOURCE_NAME))
    if source is not None and source.status != SourceStatus.registering:
        return source
    params = sources.SourceCreate(
        name=SOURCE_NAME,
        kind=SourceKind.cdn_provider,
        provider="edgeledger",
        regions=["*"],
        jurisdiction=service.zone_of(settings.data_storage_zone),
    )
    return sources.register_source(session, chain, settings, params)


def cut_batch(
    session: Session, settings: Settings, source: DeliverySource, now_s: int, *, force: bool = False
) -> DeliveryBatch | None:
    """Moves the waiting events into a new batch of the compliance source and closes it."""
    lock_dir = Path(settings.data_dir) / "locks"
    with exclusive_work(session, lock_dir, "compliance-cut", 0) as mine:
        if not mine:
            return None
        waiting = list(
            session.scalars(
                select(ComplianceEvent)
                .where(ComplianceEvent.batch_pk.is_(None))
                .order_by(ComplianceEvent.id)
                .limit(MAX_EVENTS_PER_BATCH)
            )
        )
        if not waiting:
            return None
        oldest_s = min(e.occurred_at_ms for e in waiting) // 1000
        if not force and now_s - oldest_s < settings.compliance_batch_seconds:
            return None
        last_end = session.scalar(
            select(func.max(DeliveryBatch.period_end)).where(DeliveryBatch.source_pk == source.id)
        )
        start = int(last_end) if last_end is not None else oldest_s
        end = max(now_s, start + 1)
        batch = DeliveryBatch(
            batch_id=batch_id_for(source.source_id, start, end, BatchKind.regular, 0),
            source_pk=source.id,
            period_start=start,
            period_end=end,
            kind=BatchKind.regular,
            correction_seq=0,
            state=BatchState.open,
        )
        session.add(batch)
        session.flush()
        session.add_all(BatchExtraLeaf(batch_pk=batch.id, leaf=e.leaf) for e in waiting)
        for event in waiting:
            event.batch_pk = batch.id
        session.commit()
        log.info("compliance batch %s: %d events", batch.batch_id, len(waiting))
    return batches.close_batch(session, settings, batch.id)


@dataclass
class RunReport:
    retention: dict[str, Any] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)
    anchoring: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def retryable(self) -> bool:
        return self.error is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "retention": self.retention,
            "batches": self.batches,
            "anchoring": self.anchoring,
            "error": self.error,
        }


RETENTION_EVERY_SECONDS = 3600


def _retention_due(settings: Settings, now_s: int) -> bool:
    """Retention scans old records: once an hour per host is plenty (it is idempotent; the stamp file
    only saves work)."""
    stamp = Path(settings.data_dir) / "locks" / "retention.last"
    try:
        last = int(stamp.read_text())
    except (OSError, ValueError):
        last = 0
    if now_s - last < RETENTION_EVERY_SECONDS:
        return False
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(str(now_s))
    return True


def run_once(
    session: Session, chain: ChainClient, settings: Settings, now_s: int, *, force: bool = False
) -> RunReport:
    """Retention purge (hourly, or now with ``force``), then batch and anchor the waiting events. Chain
    trouble is reported (the events wait in the database and the next pass anchors them); nothing is lost
    or anchored twice."""
    report = RunReport()
    if force or _retention_due(settings, now_s):
        purged = service.purge_expired(session, settings)
        report.retention = {
            "records_redacted": purged.records_redacted,
            "quarantined_lines_deleted": purged.quarantined_lines_deleted,
            "keys_destroyed": purged.keys_destroyed,
        }
    try:
        source = log_source(session, chain, settings)
        batch = cut_batch(session, settings, source, now_s, force=force)
        if batch is not None:
            report.batches.append(batch.batch_id)
        for leftover in session.scalars(
            select(DeliveryBatch.id).where(
                DeliveryBatch.source_pk == source.id, DeliveryBatch.state == BatchState.open
            )
        ).all():
            batches.close_batch(session, settings, leftover)
        report.anchoring = anchoring.anchor_source(session, chain, settings, source.id).as_dict()
    except ChainError as exc:
        session.rollback()
        report.error = f"{exc.code}: {exc}"
        log.warning("compliance anchoring deferred: %s", report.error)
    return report


def event_proof(session: Session, settings: Settings, event: ComplianceEvent) -> EventProof:
    """The event, its leaf and Merkle proof, its batch's root and anchoring transaction; 409
    ``event_not_batched`` until its batch has a root."""
    batch = session.get(DeliveryBatch, event.batch_pk) if event.batch_pk is not None else None
    if batch is None or batch.root is None:
        raise service.ComplianceError(
            f"event {event.event_id} is not in a closed batch yet", code="event_not_batched", status=409
        )
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None  # foreign key
    with trees.open_batch_tree(session, settings, batch) as tree:
        position = tree.position_of(event.leaf)
        assert position is not None, "an event's batch tree holds its leaf"
        proof = [hex32(node) for node in tree.proof(position)]
    contract, chain_id = ledger_location(settings)
    return EventProof(
        event=service.event_read(session, event),
        leaf=hex32(event.leaf),
        proof=proof,
        root=batch.root,
        batch_id=batch.batch_id,
        source_id=source.source_id,
        tx_hash=batch.tx_hash,
        chain_id=chain_id,
        contract=contract,
    )
