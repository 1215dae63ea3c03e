"""Celery tasks of the deliveries domain: closing, anchoring and confirming batches (docs/anchoring.md).

Beat schedule (edgeledger.worker): close_due_batches every 60 s, anchor_pending and confirm_anchors every
15 s. Closing enqueues anchor_pending per source at once. RPC trouble (ChainError other than a contract
revert, connection errors) raises :class:`RetryableChainError` so Celery retries with the shared policy
(edgeledger.worker.RETRY_OPTIONS); every flow is resumable from the database, so a retry runs it again.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from edgeledger.config import get_settings
from edgeledger.db import get_sessionmaker
from edgeledger.deliveries import anchoring, batches
from edgeledger.worker import RETRY_OPTIONS, RetryableChainError, chain_for


@shared_task(name="edgeledger.deliveries.close_due_batches")
def close_due_batches(force: bool = False) -> dict[str, Any]:
    """Closes due batches (every 60 s with beat) and enqueues anchoring for their sources."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        closed = batches.close_due_batches(session, settings, force=force)
        sources = sorted({b.source_pk for b in closed if b.state == "closed"})
    for source_pk in sources:
        anchor_pending.delay(source_pk=source_pk)
    return {"closed": [b.batch_id for b in closed], "anchor_enqueued_for": sources}


@shared_task(name="edgeledger.deliveries.anchor_pending", **RETRY_OPTIONS)
def anchor_pending(source_pk: int | None = None) -> dict[str, Any]:
    """Signs and anchors pending batches, per source in order (every 15 s with beat)."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        report = anchoring.anchor_pending(session, chain_for(settings), settings, source_pk)
    if report.retryable:
        raise RetryableChainError(f"chain unavailable while anchoring: {report.errors}")
    return report.as_dict()


@shared_task(name="edgeledger.deliveries.confirm_anchors", **RETRY_OPTIONS)
def confirm_anchors() -> dict[str, list[str]]:
    """Makes anchored batches final after the configured confirmations (every 15 s with beat)."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        outcome = anchoring.confirm_anchors(session, chain_for(settings), settings)
    if outcome["reanchor"]:
        anchor_pending.delay()
    return outcome
