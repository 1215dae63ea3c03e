"""Celery tasks of the settlement domain (docs/settlement.md, "Settling a period").

Beat schedule (edgeledger.worker): ``run`` every 60 s opens the periods whose late window has passed,
computes, posts and follows every open settlement. RPC trouble raises :class:`RetryableChainError` so
Celery retries with bounded backoff; every step resumes from the database and the vault, so running it
twice, or on two workers at once, posts nothing twice.
"""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from edgeledger.config import get_settings
from edgeledger.db import get_sessionmaker
from edgeledger.settlement import flows
from edgeledger.worker import RETRY_OPTIONS, RetryableChainError, chain_for


@shared_task(name="edgeledger.settlement.run", **RETRY_OPTIONS)
def run() -> dict[str, Any]:
    """One pass of the settlement state machine over every merchant and open settlement."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        report = flows.run_once(session, chain_for(settings), settings, now=int(time.time()))
    if report.retryable:
        raise RetryableChainError("chain unavailable while settling; the run resumes where it stopped")
    return report.as_dict()
