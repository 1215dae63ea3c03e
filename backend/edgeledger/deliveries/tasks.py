"""Celery tasks of the deliveries domain: closing, anchoring and confirming batches (docs/anchoring.md).

Beat schedule (edgeledger.worker): close_due_batches every 60 s, anchor_pending and confirm_anchors every
15 s. Closing enqueues anchor_pending per source at once. RPC trouble (ChainError other than a contract
revert, connection errors) raises :class:`RetryableChainError` so Celery retries with bounded exponential
backoff; every flow is resumable from the database, so a retry simply runs it again.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import requests
from celery import Celery, shared_task

from edgeledger.chain.client import ChainError
from edgeledger.config import Settings, get_settings
from edgeledger.db import get_sessionmaker
from edgeledger.deliveries import anchoring

log = logging.getLogger(__name__)

RETRY_OPTIONS: dict[str, Any] = {
    "autoretry_for": (ChainError, requests.ConnectionError, requests.Timeout),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
}


class RetryableChainError(ChainError):
    """The chain could not be reached; the flow recorded where it stopped."""


def chain_for(settings: Settings) -> Any:
    from edgeledger.main import make_chain_client

    return make_chain_client(settings)


@shared_task(name="edgeledger.deliveries.close_due_batches")
def close_due_batches(force: bool = False) -> dict[str, Any]:
    """Closes due batches (every 60 s with beat) and enqueues anchoring for their sources."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        closed = anchoring.close_due_batches(session, settings, force=force)
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


@lru_cache(maxsize=4)
def _sender(broker_url: str) -> Celery:
    app = Celery("edgeledger-api", broker=broker_url)
    app.conf.update(broker_connection_retry=False, broker_connection_timeout=3)
    return app


def enqueue(settings: Settings, task: str, **kwargs: Any) -> bool:
    """Sends ``edgeledger.deliveries.<task>`` from the API; False (logged) when the broker is down: the
    beat schedule picks the work up anyway."""
    try:
        _sender(settings.resolved_broker_url).send_task(
            f"edgeledger.deliveries.{task}", kwargs=kwargs, retry=False
        )
    except Exception as exc:  # kombu raises transport-specific errors
        log.warning("could not enqueue %s: %s", task, exc)
        return False
    return True
