"""HTTP API of the compliance domain (/compliance): the event log and its proofs, erasure, raw-data
exports under the residency policy, the policy table and a manual run of the compliance job.

Who: admins everything; auditors read events and proofs and may export raw data (within their scope);
nobody else. Every route is rate-limited per caller ("audit" bucket).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from edgeledger.auth.dependencies import Principal, require_roles
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.compliance import flows, service
from edgeledger.compliance.models import (
    Action,
    ErasureRead,
    ErasureRequest,
    EventPage,
    EventProof,
    EventRead,
    PolicyRead,
    PolicySet,
    RawExportRequest,
)
from edgeledger.config import Settings
from edgeledger.db import get_session
from edgeledger.deliveries.service import limiting_scope
from edgeledger.deps import get_app_settings, get_chain
from edgeledger.ratelimit import rate_limit

router = APIRouter(prefix="/compliance", tags=["compliance"], dependencies=[Depends(rate_limit("audit"))])

SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ChainDep = Annotated[ChainClient, Depends(get_chain)]
AdminDep = Annotated[Principal, Depends(require_roles(Role.admin))]
AuditDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor))]


@router.get("/events", response_model=EventPage)
def list_events(
    session: SessionDep,
    principal: AuditDep,
    action: Annotated[Action | None, Query()] = None,
    subject: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> EventPage:
    """The compliance log, newest first: who read, exported or deleted what, when, on which legal basis,
    and the batch that anchors each event. A scoped auditor sees the events of its sources and merchants
    only (docs/compliance.md), an auditor without scope none."""
    total, rows = service.list_events(
        session,
        action=action.value if action else None,
        subject=subject,
        limit=limit,
        offset=offset,
        scope=limiting_scope(principal),
    )
    return EventPage(total=total, items=[service.event_read(session, e) for e in rows])


@router.get("/events/{event_id}", response_model=EventRead)
def get_event(event_id: str, session: SessionDep, principal: AuditDep) -> EventRead:
    return service.event_read(session, service.get_event(session, event_id, principal))


@router.get("/events/{event_id}/proof", response_model=EventProof)
def get_event_proof(
    event_id: str, session: SessionDep, settings: SettingsDep, principal: AuditDep
) -> EventProof:
    """The event with its Merkle proof; check it with DeliveryLedger.verifyLeaf(batch_id, leaf, proof)
    after recomputing the leaf from the event's fields (docs/compliance.md)."""
    return flows.event_proof(session, settings, service.get_event(session, event_id, principal))


@router.post("/erasures", response_model=ErasureRead, status_code=201)
def erase(
    body: ErasureRequest, session: SessionDep, settings: SettingsDep, principal: AdminDep
) -> ErasureRead:
    """Right to erasure: the client's records lose pseudonym, salt and URI; roots and proofs stay valid;
    the erasure is logged and anchored. The IP is used to compute pseudonyms and is never stored."""
    done = service.erase_subject(
        session, settings, principal, body.client_ip, body.legal_basis, body.reference
    )
    return ErasureRead(
        event_id=done.event.event_id,
        records_erased=done.records_erased,
        keys_checked=done.keys_checked,
        keys_destroyed=done.keys_destroyed,
    )


@router.post("/exports")
def export_raw(body: RawExportRequest, session: SessionDep, principal: AuditDep) -> dict:  # type: ignore[type-arg]
    """Raw records of one source and period for a recipient in ``destination``; 403
    ``residency_violation`` (logged) when a record's zone may not go there."""
    document, _ = service.raw_export(session, principal, body)
    return document


@router.get("/policies", response_model=list[PolicyRead])
def list_policies(session: SessionDep, _: AuditDep) -> list[PolicyRead]:
    """Where each data zone's raw logs may be stored and exported ("*": the default row / any zone)."""
    return service.policies(session)


@router.put("/policies/{zone}", response_model=PolicyRead)
def put_policy(zone: str, body: PolicySet, session: SessionDep, principal: AdminDep) -> PolicyRead:
    return service.policy_read(service.set_policy(session, principal, zone, body))


@router.post("/run")
def run(
    session: SessionDep, settings: SettingsDep, chain: ChainDep, _: AdminDep, force: bool = False
) -> dict:  # type: ignore[type-arg]
    """One pass of the compliance job now: retention purge, batch and anchor waiting events
    (``force``: do not wait COMPLIANCE_BATCH_SECONDS)."""
    return flows.run_once(session, chain, settings, int(time.time()), force=force).as_dict()
