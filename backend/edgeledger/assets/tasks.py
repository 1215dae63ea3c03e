"""Scheduled jobs of the assets domain."""

from __future__ import annotations

from celery import shared_task

from edgeledger.assets import flows
from edgeledger.config import get_settings
from edgeledger.db import get_sessionmaker


@shared_task(name="edgeledger.assets.reconcile_registrations")
def reconcile_registrations(grace_seconds: float = 60.0) -> dict[str, int]:
    """Finishes or releases registrations left open by crashes and outages (every minute with beat)."""
    from edgeledger.chain.client import ChainClient
    from edgeledger.ipfs import IpfsClient

    settings = get_settings()
    with get_sessionmaker()() as session:
        return flows.reconcile_registrations(
            session,
            ChainClient.from_settings(settings),
            IpfsClient.from_settings(settings),
            settings,
            grace_seconds=grace_seconds,
        )
