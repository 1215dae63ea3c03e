"""Audit packages (docs/audit-package.md): one deterministic tar.gz with an index.

Layout::

    package.json                         index: format, chain, contracts, scope, every file with its
                                         kind, sha256 and what it claims (batch id, root, totals...)
    batches/<batch id>.json              signed manifest, hash, signature, signer, tx, block
    proofs/<batch id>.json               edgeledger-proofs/v1 of the requested lines of that batch (source
                                         scope), or of the records behind each receipt a settlement
                                         split at a licence boundary (merchant scope, up to PROOF_CAP)
    settlements/<id>/inputs.json         published inputs (receipts, assets' terms, rate cards, FX, decisions)
    settlements/<id>/statement.json      the merchant's statement as the API renders it
    reconciliation/cases.json            reconciliation cases and their decisions (who, when, why)
    compliance/<event id>.json           proofs of the erasure and retention events of the compliance log

A source's batches are included as one unbroken segment of its manifest chain (every batch anchored
between the first and the last one selected), so the verifier can check every prev-hash link. Nothing in a
package holds a client IP, pseudonym or salt: leaf values carry only the client commitment.

A merchant's package proves how each settlement divided a receipt split at a licence boundary: the
records behind it (the batch's non-excluded records of the asset, the merchant's hosts, the key's region
and country, as ``period_inputs.split_at_licence`` selects them) are proven in their batch's proofs file,
whole receipts at a time, up to ``receipt_parts.PROOF_CAP`` stated records per package, chosen from the
published inputs alone so the verifier knows which must be there; the index names the merchant's
hosts (``merchant_hosts``) so the verifier counts their records only (verify/receipt_parts.py). Receipts
beyond the cap stay unproven, and the verifier says so.

:func:`export_package` is the one entry point of an export: it builds the archive and records the
compliance log's ``export`` event.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eth_utils import is_address
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.auth.dependencies import Principal, ensure_merchant_in_scope, ensure_source_in_scope
from edgeledger.auth.models import Role, User
from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.compliance import flows as compliance_flows
from edgeledger.compliance.models import Action, ComplianceEvent
from edgeledger.compliance.service import record_access
from edgeledger.config import Settings
from edgeledger.deliveries import proofs
from edgeledger.deliveries.models import (
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    MerchantHost,
)
from edgeledger.deliveries.service import get_source, limiting_scope
from edgeledger.errors import EdgeLedgerError
from edgeledger.settlement import flows as settlement_flows
from edgeledger.settlement import service as settlement_service
from edgeledger.settlement import statements
from edgeledger.settlement.models import Settlement, SettlementAccount
from edgeledger.settlement.payouts import PayoutInputs, Statement
from edgeledger.settlement.period_inputs import merchant_raw_ids, receipt_records
from edgeledger.settlement.schemas import CaseRead
from edgeledger.verify.package import FORMAT, claims_of
from edgeledger.verify.receipt_parts import receipts_to_prove

ANCHORED = (BatchState.anchored, BatchState.final)
MAX_LINES = 1_000
PACKAGED_COMPLIANCE_ACTIONS = (Action.erase, Action.retention_purge)


class AuditError(EdgeLedgerError):
    code = "audit_error"


@dataclass
class Scope:
    """What a package covers: a period and exactly one merchant (user id, or its address) or source;
    for a source, the lines to prove, by request id or as raw log lines."""

    period_start: int
    period_end: int
    merchant_user_id: int | None = None
    source: str | None = None
    request_ids: list[str] = field(default_factory=list)
    merchant_address: str | None = None
    log_lines: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        # Counts only: a log line holds a client IP, which never reaches a package or the compliance log.
        return {
            "period_start": self.period_start,
            "period_end": self.period_end,
            "merchant_user_id": self.merchant_user_id,
            "source": self.source,
            "request_ids": len(self.request_ids),
            "log_lines": len(self.log_lines),
        }


@dataclass
class _Builder:
    files: dict[str, bytes] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, path: str, kind: str, document: Any) -> None:
        self.files[path] = json.dumps(document, indent=1, sort_keys=True).encode()
        self.kinds[path] = kind
        self.claims[path] = claims_of(kind, document)


def merchant_by_address(session: Session, address: str) -> int:
    """The merchant user whose escrow (settlement account) or own address is ``address``; 404 otherwise."""
    if not is_address(address):
        raise AuditError(f"{address!r} is not an address", code="scope_invalid")
    wanted = address.lower()
    user_id = session.scalar(
        select(SettlementAccount.merchant_user_id).where(func.lower(SettlementAccount.address) == wanted)
    )
    if user_id is None:
        user_id = session.scalar(
            select(User.id).where(func.lower(User.address) == wanted, User.role == Role.merchant)
        )
    if user_id is None:
        raise AuditError(f"no merchant has the address {address}", code="merchant_not_found", status=404)
    return int(user_id)


def _check_scope(principal: Principal, scope: Scope, session: Session) -> DeliverySource | None:
    if scope.period_end <= scope.period_start:
        raise AuditError("period_end must be after period_start", code="period_invalid")
    merchants = (scope.merchant_user_id is not None) + (scope.merchant_address is not None)
    if merchants > 1 or merchants + (scope.source is not None) != 1:
        raise AuditError("name exactly one of a merchant or a source", code="scope_invalid")
    if len(scope.request_ids) + len(scope.log_lines) > MAX_LINES:
        raise AuditError(f"at most {MAX_LINES} lines per package", code="scope_invalid")
    if (scope.request_ids or scope.log_lines) and scope.source is None:
        raise AuditError("proofs of lines need the source they were logged by", code="scope_invalid")
    if scope.merchant_address is not None:
        scope.merchant_user_id = merchant_by_address(session, scope.merchant_address)
    if scope.merchant_user_id is not None:
        ensure_merchant_in_scope(principal.scope, scope.merchant_user_id)
        return None
    assert scope.source is not None
    source = get_source(session, scope.source)
    ensure_source_in_scope(principal.scope, source.source_id)
    return source


def _chain_segment(session: Session, batches: list[DeliveryBatch]) -> list[DeliveryBatch]:
    """The selected batches plus every batch of the same source anchored between them."""
    by_source: dict[int, list[DeliveryBatch]] = {}
    for batch in batches:
        by_source.setdefault(batch.source_pk, []).append(batch)
    segment: dict[int, DeliveryBatch] = {}
    for source_pk, chosen in by_source.items():
        low = min(b.block_number or 0 for b in chosen)
        high = max(b.block_number or 0 for b in chosen)
        for batch in session.scalars(
            select(DeliveryBatch).where(
                DeliveryBatch.source_pk == source_pk,
                DeliveryBatch.state.in_(ANCHORED),
                DeliveryBatch.block_number >= low,
                DeliveryBatch.block_number <= high,
            )
        ):
            segment[batch.id] = batch
    return sorted(segment.values(), key=lambda b: (b.block_number or 0, b.id))


def _merchant_settlements(session: Session, scope: Scope) -> list[Settlement]:
    return list(
        session.scalars(
            select(Settlement)
            .where(
                Settlement.merchant_user_id == scope.merchant_user_id,
                Settlement.period_start >= scope.period_start,
                Settlement.period_start < scope.period_end,
                Settlement.inputs_gz.is_not(None),  # posted or not, and empty ones that priced receipts
            )
            .order_by(Settlement.period_start, Settlement.attempt)
        )
    )


def _split_receipt_records(
    session: Session, merchant_user_id: int, documents: list[dict[str, Any]]
) -> list[DeliveryRecordRow]:
    """The records behind the receipts the settlements' inputs split at a licence boundary (keys with a
    fifth part) that the package proves: those :func:`~edgeledger.verify.receipt_parts.receipts_to_prove`
    chooses from the inputs alone (whole receipts in key order, up to ``PROOF_CAP`` stated records), as
    the verifier chooses them again; each selected as ``period_inputs.split_at_licence`` selects it."""
    inputs: list[PayoutInputs] = []
    for document in documents:
        if document.get("kind") != "release" and document.get("inputs") is not None:
            # as the verifier reads them (verify/settlement.py recompute): from their JSON
            inputs.append(PayoutInputs.model_validate_json(json.dumps(document["inputs"])))
    groups = receipts_to_prove(inputs)
    if not groups:
        return []
    raw_ids = merchant_raw_ids(session, merchant_user_id)
    record = DeliveryRecordRow
    chosen: dict[int, DeliveryRecordRow] = {}
    for batch_id, asset_id, region, country in sorted(groups):
        rows = session.scalars(
            select(record)
            .join(DeliveryBatch, record.batch_pk == DeliveryBatch.id)
            .where(
                DeliveryBatch.batch_id == batch_id,  # lower-case hex, as keys carry it
                record.asset_id == asset_id,
                record.region == region,
                record.country == country,
                *receipt_records(raw_ids),
            )
            .order_by(record.id)
        )
        chosen.update((row.id, row) for row in rows)
    return list(chosen.values())


def build_package(
    session: Session, settings: Settings, chain: ChainClient, principal: Principal, scope: Scope
) -> tuple[bytes, dict[str, Any]]:
    """The archive and its index. Raises 403 ``out_of_scope`` / 422 ``scope_invalid`` before reading."""
    source = _check_scope(principal, scope, session)
    out = _Builder()
    try:
        chain_id: int | None = chain.chain_id
        contracts = {
            n: chain.deployment.address_of(n)
            for n in ("ContentRegistry", "DeliveryLedger", "SettlementVault")
        }
    except ChainError:
        chain_id, contracts = None, {}

    selected: list[DeliveryBatch] = []
    #: the records to prove, by batch (one proofs file each)
    to_prove: dict[int, dict[int, DeliveryRecordRow]] = {}
    merchant_hosts: list[str] | None = None
    if source is not None:
        selected = list(
            session.scalars(
                select(DeliveryBatch).where(
                    DeliveryBatch.source_pk == source.id,
                    DeliveryBatch.state.in_(ANCHORED),
                    DeliveryBatch.period_start >= scope.period_start,
                    DeliveryBatch.period_start < scope.period_end,
                )
            )
        )
    else:
        assert scope.merchant_user_id is not None
        documents: list[dict[str, Any]] = []
        for settlement in _merchant_settlements(session, scope):
            document = settlement_flows.inputs_document(
                settlement, chain_id, contracts.get("SettlementVault"), contracts.get("ContentRegistry")
            )
            documents.append(document)
            out.add(f"settlements/{settlement.id}/inputs.json", "settlement_inputs", document)
            if settlement.statement_json is not None:
                statement = Statement.model_validate_json(settlement.statement_json)
                context = settlement_service.statement_context(session, settlement, statement)
                out.add(
                    f"settlements/{settlement.id}/statement.json",
                    "statement",
                    statements.merchant_statement_json(statement, context),
                )
            batch_ids = json.loads(settlement.batch_ids_json)
            selected += list(
                session.scalars(select(DeliveryBatch).where(DeliveryBatch.batch_id.in_(batch_ids)))
            )
        for record in _split_receipt_records(session, scope.merchant_user_id, documents):
            to_prove.setdefault(record.batch_pk, {})[record.id] = record
        merchant_hosts = sorted(
            session.scalars(
                select(MerchantHost.host).where(MerchantHost.merchant_user_id == scope.merchant_user_id)
            )
        )
        cases = settlement_service.cases_of(session, merchant_user_id=scope.merchant_user_id)
        in_period = [c for c in cases if scope.period_start <= c.period_start < scope.period_end]
        out.add(
            "reconciliation/cases.json", "cases", [CaseRead.of(c).model_dump(mode="json") for c in in_period]
        )

    for batch in _chain_segment(session, selected):
        batch_source = session.get(DeliverySource, batch.source_pk)
        assert batch_source is not None
        header = proofs.export_batch_header(session, batch, batch_source)
        out.add(
            f"batches/{batch.batch_id}.json",
            "batch",
            {
                "format": "edgeledger-batch/v1",
                "chain_id": chain_id,
                "contract": contracts.get("DeliveryLedger"),
                "batch": header,
            },
        )

    if source is not None and (scope.request_ids or scope.log_lines):
        records = [proofs.find_record(session, source, rid) for rid in scope.request_ids]
        records += [proofs.find_record_by_line(session, source, line) for line in scope.log_lines]
        for record in records:
            to_prove.setdefault(record.batch_pk, {})[record.id] = record
    # One proofs file per batch, whatever asked for its records.
    for batch_pk, batch_records in to_prove.items():
        batch = session.get(DeliveryBatch, batch_pk)
        assert batch is not None
        document = proofs.proofs_document(session, settings, batch, list(batch_records.values()))
        out.add(f"proofs/{batch.batch_id}.json", "proofs", document)

    # Erasures and retention purges are platform-wide events (docs/api.md, "Auditor scopes"): only
    # admins and global auditors read them, so a scoped auditor's package leaves them out.
    events = session.scalars(
        select(ComplianceEvent)
        .where(ComplianceEvent.action.in_([a.value for a in PACKAGED_COMPLIANCE_ACTIONS]))
        .where(ComplianceEvent.batch_pk.is_not(None))
        .order_by(ComplianceEvent.id)
    )
    for event in events if limiting_scope(principal) is None else ():
        batch = session.get(DeliveryBatch, event.batch_pk)
        if batch is not None and batch.state in ANCHORED:
            proof = compliance_flows.event_proof(session, settings, event)
            out.add(f"compliance/{event.event_id}.json", "compliance_event", proof.model_dump(mode="json"))

    index = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "chain_id": chain_id,
        "contracts": contracts,
        "scope": scope.as_dict(),
        **({"merchant_hosts": merchant_hosts} if merchant_hosts is not None else {}),
        "items": [
            {
                "path": path,
                "kind": out.kinds[path],
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "claims": out.claims[path],
            }
            for path, data in sorted(out.files.items())
        ],
    }
    out.files["package.json"] = json.dumps(index, indent=1, sort_keys=True).encode()
    return _tar_gz(out.files), index


def export_package(
    session: Session,
    settings: Settings,
    chain: ChainClient,
    principal: Principal,
    scope: Scope,
    legal_basis: str,
) -> tuple[bytes, dict[str, Any]]:
    """Every export goes through here: the archive, and a summary (the compliance event that records
    the export, the scope, the items) after the ``export`` event is committed to the compliance log."""
    archive, index = build_package(session, settings, chain, principal, scope)
    subject = (
        f"merchant:{scope.merchant_user_id}"
        if scope.merchant_user_id is not None
        else f"source:{scope.source}"
    )
    detail = {**scope.as_dict(), "items": len(index["items"])}
    event = record_access(session, principal, Action.export, f"audit-package/{subject}", legal_basis, detail)
    summary = {
        "event_id": event.event_id,
        "subject": subject,
        "scope": scope.as_dict(),
        "items": len(index["items"]),
        "bytes": len(archive),
        "sha256": hashlib.sha256(archive).hexdigest(),
    }
    return archive, summary


def _tar_gz(files: dict[str, bytes]) -> bytes:
    """Deterministic archive: sorted names, zero times and owners."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files, key=lambda p: (p != "package.json", p)):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(files[path]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[path]))
    return buffer.getvalue()
