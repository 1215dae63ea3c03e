"""Deliveries API: sources, log ingestion, batches and anchoring, fraud review, receipts, proofs."""

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

router = APIRouter(prefix="/deliveries", tags=["deliveries"])

SessionDep = Annotated[Session, Depends(get_session)]
ChainDep = Annotated[ChainClient, Depends(get_chain)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
AdminDep = Annotated[Principal, Depends(require_roles(Role.admin))]
ReaderDep = Annotated[
    Principal, Depends(require_roles(Role.admin, Role.auditor, Role.operator, Role.merchant))
]

# --- sources and ingestion -------------------------------------------------------------------------

# --- batches and anchoring -------------------------------------------------------------------------

# --- fraud review and receipts ---------------------------------------------------------------------

# --- proofs and exports ----------------------------------------------------------------------------
