"""Celery: the application, its beat schedule, and the plumbing every domain's tasks share (the retry
policy for chain trouble, the chain client of a task, and sending a task from the API).

Broker from CELERY_BROKER_URL (Redis in production and tests); without one, a SQLite-backed broker in
DATA_DIR that needs no server.

    celery -A edgeledger.worker worker -B      # worker with the beat scheduler
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import requests
from celery import Celery

from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.config import Settings, get_settings

log = logging.getLogger(__name__)

#: Every chain-facing task retries RPC trouble with bounded exponential backoff; each flow resumes from
#: the database (and asks the contract before every send), so running it again is always safe.
RETRY_OPTIONS: dict[str, Any] = {
    "autoretry_for": (ChainError, requests.ConnectionError, requests.Timeout),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
}


class RetryableChainError(ChainError):
    """The chain could not be reached; the flow recorded where it stopped."""


def chain_for(settings: Settings) -> ChainClient:
    """The chain client a task uses (a fresh one per run: no nonce state survives between runs)."""
    return ChainClient.from_settings(settings)


@lru_cache(maxsize=4)
def _sender(broker_url: str) -> Celery:
    app = Celery("edgeledger-api", broker=broker_url)
    app.conf.update(broker_connection_retry=False, broker_connection_timeout=3)
    return app


def enqueue(settings: Settings, task: str, **kwargs: Any) -> bool:
    """Sends the task named ``task`` (``edgeledger.<domain>.<job>``) from the API; False (logged) when the
    broker is down: the beat schedule picks the work up anyway."""
    try:
        _sender(settings.resolved_broker_url).send_task(task, kwargs=kwargs, retry=False)
    except Exception as exc:  # kombu raises transport-specific errors
        log.warning("could not enqueue %s: %s", task, exc)
        return False
    return True


settings = get_settings()
celery_app = Celery(
    "edgeledger",
    broker=settings.resolved_broker_url,
    include=[
        "edgeledger.assets.tasks",
        "edgeledger.deliveries.tasks",
        "edgeledger.settlement.tasks",
        "edgeledger.compliance.tasks",
        "edgeledger.indexer.tasks",
    ],
)
celery_app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,  # a worker killed mid-task leaves the task for another worker
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    beat_schedule={
        "reconcile-registrations": {"task": "edgeledger.assets.reconcile_registrations", "schedule": 60.0},
        "close-due-batches": {"task": "edgeledger.deliveries.close_due_batches", "schedule": 60.0},
        "anchor-pending": {"task": "edgeledger.deliveries.anchor_pending", "schedule": 15.0},
        "confirm-anchors": {"task": "edgeledger.deliveries.confirm_anchors", "schedule": 15.0},
        "settle": {"task": "edgeledger.settlement.run", "schedule": 60.0},
        "compliance": {"task": "edgeledger.compliance.run", "schedule": 60.0},
        "index-chain": {"task": "edgeledger.indexer.follow", "schedule": 15.0},
    },
    beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
)
app = celery_app
