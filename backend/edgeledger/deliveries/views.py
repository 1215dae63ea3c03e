"""Deliveries API: sources, log ingestion, batches and anchoring, fraud review, receipts, proofs."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.auth.dependencies import Principal, require_roles
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.compliance.models import Action
from edgeledger.compliance.service import (
    LEGAL_BASIS_HEADER,
    actor_of,
    ensure_storage_allowed,
    record_access,
    record_read,
)
from edgeledger.config import Settings
from edgeledger.db import get_session, utcnow
from edgeledger.deliveries import (
    anchoring,
    batches,
    hosts,
    ingest,
    proofs,
    receipts,
    service,
    signals,
    sources,
    uploads,
)
from edgeledger.deliveries.models import DeliveryRecordRow, DeliverySource, SourceStatus
from edgeledger.deps import get_app_settings, get_chain
from edgeledger.worker import enqueue

router = APIRouter(prefix="/deliveries", tags=["deliveries"])

LegalBasisHeader = Annotated[
    str | None,
    Header(alias=LEGAL_BASIS_HEADER, description="Legal basis of a read of raw data; default: your role's"),
]

#: fraud flags per page of ``GET /deliveries/flags`` (default, most)
FLAGS_PAGE_DEFAULT, FLAGS_PAGE_MAX = 1_000, 10_000

SessionDep = Annotated[Session, Depends(get_session)]
ChainDep = Annotated[ChainClient, Depends(get_chain)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
AdminDep = Annotated[Principal, Depends(require_roles(Role.admin))]
ReaderDep = Annotated[
    Principal, Depends(require_roles(Role.admin, Role.auditor, Role.operator, Role.merchant))
]

# --- sources and ingestion -------------------------------------------------------------------------

IngestorDep = Annotated[Principal, Depends(require_roles(Role.operator))]
IngestReaderDep = Annotated[Principal, Depends(require_roles(Role.auditor, Role.operator))]
HostReaderDep = Annotated[Principal, Depends(require_roles(Role.auditor, Role.merchant))]


_QUEUED = {202: {"model": ingest.IngestFileRead, "description": "Stored and queued (INGEST_MODE=queue)"}}


def _status(response: Response, found: ingest.IngestFile) -> ingest.IngestFile:
    """201 with the report inline; 202 when queued (GET /deliveries/ingests/{id} follows it)."""
    if found.state == "queued":
        response.status_code = 202
    return found


@router.post("/sources/{ref}/logs", status_code=201, response_model=ingest.IngestFileRead, responses=_QUEUED)
def upload_log(
    ref: str,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    principal: IngestorDep,
    name: str | None = None,
    log_format: str | None = None,
) -> ingest.IngestFile:
    """Ingest one log file (gzip or plain): multipart field ``file``, or the raw body with ``?name=``.

    Admins, or the operator of the source. The body is parsed while it arrives (docs/ingestion.md).
    403 ``residency_violation`` when the source's raw logs may not be stored in this deployment's zone.
    """
    ensure_storage_allowed(session, settings, principal, ref)
    return _status(
        response,
        uploads.ingest_request(session, settings, principal, ref, request, name=name, log_format=log_format),
    )


@router.post(
    "/sources/{ref}/stream", status_code=201, response_model=ingest.IngestFileRead, responses=_QUEUED
)
def stream_log(
    ref: str,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    principal: IngestorDep,
    name: str | None = None,
    log_format: str | None = None,
) -> ingest.IngestFile:
    """An edge node streams its log lines (chunked transfer); ingested as they arrive. The format is
    ``log_format``, else the source's declared one, else the edge-node JSON format ``edgeledger``."""
    ensure_storage_allowed(session, settings, principal, ref)
    found = uploads.ingest_request(
        session,
        settings,
        principal,
        ref,
        request,
        name=name,
        log_format=log_format,
        multipart_allowed=False,
        undeclared_format="edgeledger",
    )
    return _status(response, found)


@router.get("/ingests", response_model=uploads.IngestFilePage)
def list_ingests(
    session: SessionDep,
    principal: IngestReaderDep,
    source: str | None = None,
    state: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> uploads.IngestFilePage:
    """Ingest reports, newest first (operators: their own sources only)."""
    return uploads.list_ingests(session, principal, source=source, state=state, limit=limit, offset=offset)


@router.get("/ingests/{ingest_id}", response_model=ingest.IngestFileRead)
def get_ingest(ingest_id: int, session: SessionDep, principal: IngestReaderDep) -> ingest.IngestFile:
    """One ingest report: counts, state, error; while a queued ingest runs, ``state`` is ``queued`` or
    ``processing`` with the lines and ``bytes_read`` (of ``size_bytes``) so far."""
    return uploads.get_ingest(session, principal, ingest_id)


@router.get("/ingests/{ingest_id}/quarantine", response_model=uploads.QuarantinePage)
def list_quarantined_lines(
    ingest_id: int,
    session: SessionDep,
    principal: IngestReaderDep,
    legal_basis: LegalBasisHeader = None,
    limit: int = 100,
    offset: int = 0,
) -> uploads.QuarantinePage:
    """Quarantined lines of one ingest (line number, reason, detail, IP-masked raw text). The read is
    recorded in the compliance log."""
    page = uploads.list_quarantine(session, principal, ingest_id, limit=limit, offset=offset)
    record_access(session, principal, Action.read_raw, f"ingest:{ingest_id}/quarantine", legal_basis)
    return page


@router.post("/merchant-hosts", status_code=201, response_model=hosts.MerchantHostRead)
def add_merchant_host(
    body: hosts.MerchantHostCreate, session: SessionDep, _: AdminDep
) -> hosts.MerchantHostRead:
    """Map a request host to a merchant account (records carry keccak256(host) as merchantId)."""
    return hosts.add_merchant_host(session, body)


@router.get("/merchant-hosts", response_model=list[hosts.MerchantHostRead])
def list_merchant_hosts(session: SessionDep, principal: HostReaderDep) -> list[hosts.MerchantHostRead]:
    """Host -> merchant mappings (a merchant sees its own)."""
    return hosts.list_merchant_hosts(session, principal)


MerchantOrAdminDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.merchant))]


@router.post("/merchant-sources", status_code=201, response_model=hosts.MerchantSourceRead)
def authorise_merchant_source(
    body: hosts.MerchantSourceCreate, session: SessionDep, principal: MerchantOrAdminDep
) -> hosts.MerchantSourceRead:
    """Authorise a source to bill a merchant (the merchant itself, or an admin on its behalf). Only
    authorised sources' records for the merchant's hosts are charged; other sources' records for them
    are not billed and are listed in the merchant's statements."""
    return hosts.authorise_source(session, principal, body)


@router.get("/merchant-sources", response_model=list[hosts.MerchantSourceRead])
def list_merchant_sources(session: SessionDep, principal: HostReaderDep) -> list[hosts.MerchantSourceRead]:
    """The sources each merchant authorises (a merchant sees its own)."""
    return hosts.list_merchant_sources(session, principal)


@router.delete("/merchant-sources/{ref}", status_code=204)
def revoke_merchant_source(
    ref: str, session: SessionDep, principal: MerchantOrAdminDep, merchant_user_id: int | None = None
) -> Response:
    """Stop a source billing the merchant, from the next settlement computed."""
    hosts.revoke_source(session, principal, ref, merchant_user_id)
    return Response(status_code=204)


# --- batches and anchoring -------------------------------------------------------------------------

SourceOperatorDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.operator))]
ReviewerDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor))]
ReceiptReaderDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor, Role.merchant))]


def _ensure_source_operator(principal: Principal, source: DeliverySource) -> None:
    if not principal.is_admin and principal.user_id != source.operator_user_id:
        raise service.DeliveryError(
            f"only the operator of {source.name} or an admin may do this", code="forbidden", status=403
        )


@router.post("/sources", status_code=201, response_model=sources.SourceRead)
def create_source(
    body: sources.SourceCreate, session: SessionDep, chain: ChainDep, settings: SettingsDep, _: AdminDep
) -> sources.SourceRead:
    """Registers an edge node or CDN provider account in DeliveryLedger (journal row first; re-posting a
    source stuck in "registering" resumes it)."""
    return sources.source_read(sources.register_source(session, chain, settings, body))


@router.get("/sources", response_model=list[sources.SourceRead])
def list_sources(session: SessionDep, principal: ReaderDep) -> list[sources.SourceRead]:
    """Every source (a scoped auditor: the sources of its scope)."""
    query = select(DeliverySource).order_by(DeliverySource.id)
    if (scope := service.limiting_scope(principal)) is not None:
        query = query.where(DeliverySource.id.in_(service.scope_source_pks(scope)))
    return [sources.source_read(row) for row in session.scalars(query)]


@router.get("/sources/{ref}", response_model=sources.SourceRead)
def get_source(ref: str, session: SessionDep, principal: ReaderDep) -> sources.SourceRead:
    source = service.get_source(session, ref)
    service.ensure_source_visible(principal, source)
    return sources.source_read(source)


@router.post("/sources/{ref}/suspend", response_model=sources.SourceRead)
def suspend_source(ref: str, session: SessionDep, chain: ChainDep, _: AdminDep) -> sources.SourceRead:
    source = service.get_source(session, ref)
    return sources.source_read(sources.set_source_status(session, chain, source, SourceStatus.suspended))


@router.post("/sources/{ref}/reactivate", response_model=sources.SourceRead)
def reactivate_source(ref: str, session: SessionDep, chain: ChainDep, _: AdminDep) -> sources.SourceRead:
    source = service.get_source(session, ref)
    return sources.source_read(sources.set_source_status(session, chain, source, SourceStatus.active))


@router.post("/sources/{ref}/sync", response_model=sources.SourceRead)
def sync_source(
    ref: str, session: SessionDep, chain: ChainDep, principal: SourceOperatorDep
) -> sources.SourceRead:
    """Re-reads signer, operator and status from the chain (after the node rotated its signer with its
    own wallet); finishes a registration left in "registering"."""
    source = service.get_source(session, ref)
    _ensure_source_operator(principal, source)
    if source.status == SourceStatus.registering:
        return sources.source_read(sources.finish_registration(session, chain, source))
    return sources.source_read(sources.sync_source(session, chain, source))


@router.put("/sources/{ref}/log-format", response_model=sources.SourceRead)
def declare_source_log_format(
    ref: str, body: sources.LogFormatDeclaration, session: SessionDep, principal: SourceOperatorDep
) -> sources.SourceRead:
    """What the source's logs are: the format (always used instead of detection; null: detected per file,
    only when exactly one format fits), the host and edge location its lines may not name, the Akamai
    structured field ids. Admins, or the source's operator. 422 ``bad_log_format``,
    ``log_declaration_incomplete`` (``missing`` names what the format needs), ``invalid_log_declaration``.
    """
    source = service.get_source(session, ref)
    _ensure_source_operator(principal, source)
    return sources.source_read(sources.declare_log_format(session, source, body))


@router.post("/sources/{ref}/signer", response_model=sources.SourceRead)
def rotate_source_signer(
    ref: str, body: sources.SignerRotation, session: SessionDep, chain: ChainDep, _: AdminDep
) -> sources.SourceRead:
    """CDN providers only: rotate the platform's signing key for the source on chain."""
    source = service.get_source(session, ref)
    return sources.source_read(sources.rotate_provider_signer(session, chain, source, body.signer))


@router.get("/batches", response_model=list[batches.BatchRead])
def list_batches(
    session: SessionDep,
    chain: ChainDep,
    principal: ReaderDep,
    source: str | None = None,
    state: str | None = None,
    period_start: int | None = None,
) -> list[batches.BatchRead]:
    """Batches, newest period first (a scoped auditor: those of its sources)."""
    scope = service.limiting_scope(principal)
    within = service.scope_source_pks(scope) if scope is not None else None
    rows = batches.list_batches(session, source=source, state=state, period_start=period_start, within=within)
    head = batches.chain_head_or_none(chain) if any(b.block_number for b in rows) else None
    return [batches.batch_read(session, b, head) for b in rows]


@router.post("/batches/close")
def close_batches(
    body: batches.CloseRequest, session: SessionDep, chain: ChainDep, settings: SettingsDep, _: AdminDep
) -> dict[str, Any]:
    """Closes due batches now (``force``: every open batch, ignoring the late window - demos and tests),
    then enqueues anchoring, or with ``anchor_now`` anchors and confirms in this request."""
    closed = batches.close_due_batches(session, settings, force=body.force)
    result: dict[str, Any] = {"closed": [batches.batch_read(session, b, None) for b in closed]}
    if body.anchor_now:
        result["anchoring"] = anchoring.anchor_pending(session, chain, settings).as_dict()
        result["confirmations"] = anchoring.confirm_anchors(session, chain, settings)
    else:
        result["anchor_enqueued"] = enqueue(settings, "edgeledger.deliveries.anchor_pending")
    return jsonable_encoder(result)


@router.get("/batches/{batch_id}", response_model=batches.BatchRead)
def get_batch(batch_id: str, session: SessionDep, chain: ChainDep, principal: ReaderDep) -> batches.BatchRead:
    """State, totals, root, manifest hash, transaction, block, confirmations and error of one batch."""
    batch = service.get_batch(session, batch_id)
    service.ensure_batch_visible(session, principal, batch)
    head = batches.chain_head_or_none(chain) if batch.block_number else None
    return batches.batch_read(session, batch, head)


@router.post("/batches/{batch_id}/abandon", response_model=batches.BatchRead)
def abandon_batch(
    batch_id: str, body: batches.AbandonRequest, session: SessionDep, principal: AdminDep
) -> batches.BatchRead:
    """Gives up on a batch that will never anchor (admin): its records become unbillable and are listed
    in the affected merchants' statements; no settlement waits for it any longer. Who, when and why are
    kept with the batch and in the compliance log. 409 ``batch_not_abandonable`` once anything of it is
    on chain or its anchor transaction is out."""
    batch = service.get_batch(session, batch_id)
    abandoned = batches.abandon_batch(session, batch.id, actor_of(principal), body.reason)
    return batches.batch_read(session, abandoned, None)


@router.get("/batches/{batch_id}/manifest")
def get_batch_manifest(
    batch_id: str, session: SessionDep, chain: ChainDep, principal: SourceOperatorDep
) -> dict[str, Any]:
    """The batch manifest's EIP-712 typed data, for the node's signer to sign (eth_signTypedData_v4)."""
    batch = service.get_batch(session, batch_id)
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    _ensure_source_operator(principal, source)
    manifest = batches.stored_manifest(session, batch)
    chain_id, contract = anchoring.ledger_domain(chain)
    return {
        "batch_id": batch.batch_id,
        "state": batch.state,
        "manifest_hash": manifest.struct_hash(),
        "digest": manifest.digest(chain_id, contract),
        "typed_data": manifest.typed_data(chain_id, contract),
    }


@router.post("/batches/{batch_id}/signature", response_model=batches.BatchRead)
def submit_batch_signature(
    batch_id: str,
    body: anchoring.SignatureSubmit,
    session: SessionDep,
    chain: ChainDep,
    settings: SettingsDep,
    principal: SourceOperatorDep,
) -> batches.BatchRead:
    """Stores the node's signature (it must recover to the source's signer) and enqueues anchoring."""
    batch = service.get_batch(session, batch_id)
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    _ensure_source_operator(principal, source)
    anchoring.submit_signature(session, chain, batch, body.signature)
    enqueue(settings, "edgeledger.deliveries.anchor_pending", source_pk=source.id)
    return batches.batch_read(session, batch, None)


# --- fraud review and receipts ---------------------------------------------------------------------


@router.get("/flags", response_model=list[signals.FlagRead])
def list_flags(
    session: SessionDep,
    settings: SettingsDep,
    principal: ReviewerDep,
    batch: str | None = None,
    state: str | None = None,
    overdue: bool = False,
    limit: Annotated[int, Query(ge=1, le=FLAGS_PAGE_MAX)] = FLAGS_PAGE_DEFAULT,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[signals.FlagRead]:
    """Fraud flags (a scoped auditor: those on batches of its sources), oldest first, ``limit`` per page
    from ``offset``. An open flag holds its batch's pay (``holds_pay``) and is due for review
    FRAUD_REVIEW_DUE_SECONDS after it was raised (``due_at``); ``overdue=true`` lists only the open flags
    past that: the reviewers' queue of pay that waits longest."""
    if overdue and state not in (None, signals.FlagState.open):
        raise service.DeliveryError(
            f"only open flags can be overdue, not {state!r} ones", code="flag_filter_invalid"
        )
    found = service.get_batch(session, batch) if batch is not None else None
    if found is not None:
        service.ensure_batch_visible(session, principal, found)
    scope = service.limiting_scope(principal)
    within = service.scope_source_pks(scope) if scope is not None else None
    due = settings.fraud_review_due_seconds
    now = utcnow()
    opened_by = now - timedelta(seconds=due) if overdue else None
    flags = signals.list_flags(
        session, batch=found, state=state, within=within, opened_by=opened_by, limit=limit, offset=offset
    )
    return signals.flag_reads(session, flags, due, now)


@router.get("/batches/{batch_id}/flags", response_model=list[signals.FlagRead])
def list_batch_flags(
    batch_id: str, session: SessionDep, settings: SettingsDep, principal: ReviewerDep
) -> list[signals.FlagRead]:
    batch = service.get_batch(session, batch_id)
    service.ensure_batch_visible(session, principal, batch)
    due = settings.fraud_review_due_seconds
    return signals.flag_reads(session, signals.list_flags(session, batch=batch), due)


@router.post("/flags/{flag_id}/review", response_model=signals.FlagRead)
def review_flag(
    flag_id: int, body: signals.FlagReview, session: SessionDep, settings: SettingsDep, principal: AdminDep
) -> signals.FlagRead:
    """Confirm (records stay excluded) or dismiss (records count again unless another open or confirmed
    flag covers them); the batch's receipts are recomputed when it is anchored."""
    flag = signals.review_flag(session, signals.get_flag(session, flag_id), body, principal.user_id)
    return signals.flag_read(session, flag, settings.fraud_review_due_seconds)


@router.get("/receipts", response_model=list[receipts.ReceiptRead])
def list_receipts(
    session: SessionDep,
    principal: ReceiptReaderDep,
    period_start: int | None = None,
    merchant: str | None = None,
    asset: int | None = None,
) -> list[receipts.ReceiptRead]:
    """Anchored deliveries per (asset, merchant, region, period) with the batches behind each row, and
    the part of each row that waits for a fraud review (``under_review*``: in batches an open flag over
    the merchant's records holds back from settlement until it is decided). Merchants see their own
    hosts only; a scoped auditor its merchants' hosts and its sources' batches."""
    merchant_ids: list[str] | None = None
    if merchant is not None:
        merchant_ids = [receipts.merchant_filter_id(merchant)]
    if principal.role == Role.merchant:
        own = receipts.merchant_ids_of_user(session, principal.user_id)
        merchant_ids = [m for m in (merchant_ids if merchant_ids is not None else own) if m in own]
    scope = service.limiting_scope(principal)
    return receipts.aggregate_receipts(
        session,
        period_start=period_start,
        merchant_ids=merchant_ids,
        asset_id=asset,
        visible=receipts.scope_clause(session, scope) if scope is not None else None,
    )


# --- proofs and exports ----------------------------------------------------------------------------


@router.get("/proofs", response_model=proofs.RecordProof)
def get_record_proof(
    source: str,
    request_id: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: ReaderDep,
    legal_basis: LegalBasisHeader = None,
) -> Response:
    """One delivered request with its Merkle proof, root, batch and anchoring transaction (the read is
    recorded in the compliance log)."""
    found, record, batch = proofs.find_record_with_batch(session, principal, source, request_id)
    proof = proofs.record_proof(session, settings, record, batch, found)
    record_read(session, principal, Action.read_raw, f"record:{found.name}/{request_id}", legal_basis)
    # Serialised once here: returning the model would make FastAPI validate it again against
    # response_model before serialising it (about a fifth of this endpoint's CPU).
    return Response(proof.model_dump_json(), media_type="application/json")


@router.post("/proofs/line", response_model=proofs.RecordProof)
def get_line_proof(
    body: proofs.LineLookup,
    session: SessionDep,
    settings: SettingsDep,
    principal: ReaderDep,
    legal_basis: LegalBasisHeader = None,
) -> proofs.RecordProof:
    """The proof of the record a raw log line describes (its fields must equal the stored record's);
    the read is recorded in the compliance log."""
    found = service.get_source(session, body.source)
    if principal.role != Role.merchant:
        proofs.authorize_source(principal, found)

    def authorize(record: DeliveryRecordRow) -> None:
        # Before the line is compared: a mismatch answer shows stored values, so only the reader's own,
        # and that read is logged like a proof.
        proofs.authorize_records(session, principal, found, [record])
        record_access(
            session, principal, Action.read_raw, f"record:{found.name}/{record.request_id}", legal_basis
        )

    record = proofs.find_record_by_line(session, found, body.line, body.header, authorize)
    return proofs.record_proof(session, settings, record)


@router.get("/batches/{batch_id}/export", response_model=None)
def export_batch(
    batch_id: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: ReaderDep,
    request_ids: str | None = None,
    legal_basis: LegalBasisHeader = None,
) -> Response:
    """The whole batch as an OpenZeppelin standard-v1 dump (streamed), or with ``request_ids=a,b,c`` the
    proofs of just those records (docs/proofs.md)."""
    batch = service.get_batch(session, batch_id)
    source = proofs.source_of(session, batch)
    if request_ids is not None:
        wanted = [rid.strip() for rid in request_ids.split(",") if rid.strip()]
        if principal.role == Role.merchant:
            records = proofs.merchant_records_of_batch(session, principal, source, batch, wanted)
        else:
            proofs.authorize_source(principal, source)
            records = proofs.records_of_batch(session, batch, wanted)
            proofs.authorize_records(session, principal, source, records)
        document = proofs.proofs_document(session, settings, batch, records)
        detail = {"request_ids": len(records)}
        record_access(session, principal, Action.export, f"batch:{batch.batch_id}", legal_basis, detail)
        return JSONResponse(document)
    proofs.authorize_source(principal, source)
    head = proofs.prepare_export(session, settings, batch)
    record_access(session, principal, Action.export, f"batch:{batch.batch_id}", legal_basis, {"whole": True})
    engine = session.get_bind()
    return StreamingResponse(
        proofs.stream_batch_export(engine, settings, batch.id, head),  # type: ignore[arg-type]
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{batch.batch_id}.json"'},
    )
