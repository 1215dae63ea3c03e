"""``GET /chain/status``: where the indexer stands (admins and auditors)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from edgeledger.auth.dependencies import Principal, require_roles
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import get_session
from edgeledger.deps import get_app_settings, get_chain
from edgeledger.indexer import flows
from edgeledger.indexer.models import IndexerStatus
from edgeledger.ratelimit import rate_limit

router = APIRouter(prefix="/chain", tags=["chain"], dependencies=[Depends(rate_limit("audit"))])


@router.get("/status", response_model=IndexerStatus)
def chain_status(
    session: Annotated[Session, Depends(get_session)],
    chain: Annotated[ChainClient, Depends(get_chain)],
    settings: Annotated[Settings, Depends(get_app_settings)],
    _: Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor))],
) -> IndexerStatus:
    """Indexer cursor, chain head, lag, confirmation depth, events held, reorgs seen."""
    return flows.status(session, chain, settings)
