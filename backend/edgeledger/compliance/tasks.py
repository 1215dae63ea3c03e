"""Celery task of the compliance domain: retention purge and anchoring of the event log (every 60 s;
batches are cut every COMPLIANCE_BATCH_SECONDS). Chain trouble retries with backoff; events wait in the
database meanwhile and are anchored exactly once (the deliveries pipeline's guarantee)."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from edgeledger.compliance import flows
from edgeledger.config import get_settings
from edgeledger.db import get_sessionmaker
from edgeledger.worker import RETRY_OPTIONS, RetryableChainError, chain_for


@shared_task(name="edgeledger.compliance.run", **RETRY_OPTIONS)
def run() -> dict[str, Any]:
    settings = get_settings()
    with get_sessionmaker()() as session:
        report = flows.run_once(session, chain_for(settings), settings, int(time.time()))
    if report.retryable:
        raise RetryableChainError("chain unavailable while anchoring compliance events; retrying")
    return report.as_dict()
