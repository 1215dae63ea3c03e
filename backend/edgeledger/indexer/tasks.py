"""Celery task of the indexer: catch up with the chain every 15 s (one indexer at a time; reorgs are
rolled back inside the step). RPC trouble retries with backoff; the cursor is in the database."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from edgeledger.chain.client import ChainError
from edgeledger.config import get_settings
from edgeledger.db import get_sessionmaker
from edgeledger.indexer import flows
from edgeledger.ipfs import IpfsClient
from edgeledger.worker import RETRY_OPTIONS, RetryableChainError, chain_for


@shared_task(name="edgeledger.indexer.follow", **RETRY_OPTIONS)
def follow() -> dict[str, Any]:
    settings = get_settings()
    ipfs = IpfsClient(settings.ipfs_api, timeout=10)
    with get_sessionmaker()() as session:
        try:
            report = flows.run_once(session, chain_for(settings), settings, ipfs)
        except ChainError as exc:
            raise RetryableChainError(f"chain unavailable while indexing: {exc}") from exc
    return {"to_block": report.to_block, "events": report.events, "reorg_depth": report.reorg_depth}
