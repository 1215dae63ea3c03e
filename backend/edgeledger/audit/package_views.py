"""``POST /audit/packages``: an audit package as a download (auditors within their scope, admins).

Every package is recorded in the compliance log as an ``export`` with the stated legal basis before it
is returned; the route is rate-limited per caller.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from edgeledger.audit.packages import Scope, export_package
from edgeledger.auth.dependencies import Principal, require_roles
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import get_session
from edgeledger.deps import get_app_settings, get_chain
from edgeledger.ratelimit import rate_limit

router = APIRouter(prefix="/audit", tags=["audit"], dependencies=[Depends(rate_limit("audit"))])


class PackageRequest(BaseModel):
    period_start: int = Field(ge=0, description="Unix seconds, inclusive")
    period_end: int = Field(gt=0, description="Unix seconds, exclusive")
    merchant_user_id: int | None = Field(None, description="A merchant's settlements and their batches")
    merchant: str | None = Field(None, description="The same by the merchant's (escrow) address")
    source: str | None = Field(None, description="A source's batches (name or id)")
    request_ids: list[str] = Field(default_factory=list, description="Lines of the source to prove")
    log_lines: list[str] = Field(
        default_factory=list, description="Lines of the source to prove, as raw log lines (never stored)"
    )
    legal_basis: str = Field(min_length=3, max_length=300)


@router.post("/packages", response_class=Response)
def create_package(
    body: PackageRequest,
    session: Annotated[Session, Depends(get_session)],
    settings: Annotated[Settings, Depends(get_app_settings)],
    chain: Annotated[ChainClient, Depends(get_chain)],
    principal: Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor))],
) -> Response:
    """A tar.gz with batch manifests and signatures, roots and transactions, proofs of the requested
    lines, statements, inputs (rate cards, FX, decisions), reconciliation cases and the compliance log's
    erasure proofs; check it with ``edgeledger-verify-package ARCHIVE --rpc-url URL``."""
    scope = Scope(
        period_start=body.period_start,
        period_end=body.period_end,
        merchant_user_id=body.merchant_user_id,
        source=body.source,
        request_ids=list(dict.fromkeys(body.request_ids)),
        merchant_address=body.merchant,
        log_lines=body.log_lines,
    )
    archive, summary = export_package(session, settings, chain, principal, scope, body.legal_basis)
    event_id = summary["event_id"]
    return Response(
        archive,
        media_type="application/gzip",
        headers={
            "Content-Disposition": f'attachment; filename="edgeledger-audit-{event_id[2:14]}.tar.gz"',
            "X-Compliance-Event": event_id,
            "X-Package-Sha256": summary["sha256"],
        },
    )
