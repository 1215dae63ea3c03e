"""Scheduled jobs of the assets domain."""

from __future__ import annotations

from celery import shared_task

from edgeledger.assets import catalogues, flows
from edgeledger.config import get_settings
from edgeledger.db import get_sessionmaker


@shared_task(name="edgeledger.assets.reconcile_registrations")
def reconcile_registrations(grace_seconds: float = 60.0) -> dict[str, int]:
    """Finishes or releases registrations and catalogues left open by crashes and outages (every minute
    with beat). Counts: the registrations', then the catalogues' prefixed ``catalogues_``."""
    from edgeledger.chain.client import ChainClient
    from edgeledger.ipfs import IpfsClient

    settings = get_settings()
    chain, ipfs = ChainClient.from_settings(settings), IpfsClient.from_settings(settings)
    with get_sessionmaker()() as session:
        counts = flows.reconcile_registrations(session, chain, ipfs, settings, grace_seconds=grace_seconds)
        more = catalogues.reconcile_catalogues(session, chain, ipfs, settings, grace_seconds=grace_seconds)
    return {**counts, **{f"catalogues_{name}": n for name, n in more.items()}}
