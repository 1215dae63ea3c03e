"""Compliance operations as plain functions taking a session (docs/compliance.md).

Every read of raw log data, every export and every deletion becomes a :class:`ComplianceEvent` in the
same transaction as the thing it records where there is one (erasure, retention), or committed before
the data leaves the server (reads, exports): no data goes out unlogged. Events carry who (``actor``),
what (``action`` and ``subject``), when and the legal basis (the caller's ``X-Legal-Basis`` header or the
role's default below; exports and erasures must state it). Raw client IPs are never stored, logged or
put into an event: an erasure request's IP only selects the records through the pseudonym keys.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, cast, delete, false, func, literal, or_, select, update
from sqlalchemy.orm import Session

from edgeledger.auth.dependencies import Principal, ensure_source_in_scope
from edgeledger.auth.models import Role
from edgeledger.auth.service import AuditScope
from edgeledger.compliance.models import (
    Action,
    ComplianceEvent,
    EventRead,
    PolicyRead,
    PolicySet,
    RawExportRequest,
    ResidencyPolicy,
)
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.deliveries.models import (
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    IngestFile,
    PseudonymKey,
    QuarantinedLineRow,
)
from edgeledger.deliveries.parsers import edge_location_country
from edgeledger.deliveries.service import (
    destroy_pseudonym_key,
    get_source,
    limiting_scope,
    pseudonymiser_for,
    scope_source_pks,
)
from edgeledger.errors import EdgeLedgerError
from edgeledger.ledger.compliance_leaf import canonical_json, event_leaf
from edgeledger.ledger.hashing import hex32, keccak256

LEGAL_BASIS_HEADER = "X-Legal-Basis"
MAX_RAW_EXPORT_RECORDS = 100_000

#: Used when a reader does not state a legal basis (``X-Legal-Basis``). Exports and erasures must.
DEFAULT_LEGAL_BASIS: dict[str, str] = {
    Role.admin: "GDPR Art. 6(1)(f): operating and securing the service",
    Role.auditor: "GDPR Art. 6(1)(c): statutory audit of delivery and settlement records",
    Role.operator: "GDPR Art. 6(1)(b): delivery contract with the source's operator",
    Role.merchant: "GDPR Art. 6(1)(b): delivery and licensing contract with the merchant",
    Role.creator: "GDPR Art. 6(1)(b): licensing contract with the rights holder",
}
RETENTION_BASIS = "GDPR Art. 5(1)(e): storage limitation (retention policy)"

# EU member states and the rest of the EEA: one data zone, "EU".
EU_EEA = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO".split()
)
ANY_ZONE = "*"


class ComplianceError(EdgeLedgerError):
    code = "compliance_error"


# --- events ----------------------------------------------------------------------------------------


def actor_of(principal: Principal) -> str:
    return f"user:{principal.user_id}:{principal.role}"


def legal_basis_for(principal: Principal, stated: str | None) -> str:
    basis = (stated or "").strip()
    if basis:
        if len(basis) > 300:
            raise ComplianceError("the legal basis is at most 300 characters", code="legal_basis_invalid")
        return basis
    return DEFAULT_LEGAL_BASIS[principal.role]


def _event_values(
    *,
    actor: str,
    action: Action,
    subject: str,
    legal_basis: str,
    detail: dict[str, Any] | None,
    now_ms: int | None,
) -> dict[str, Any]:
    """The columns of one new event: a random id, the time, and the leaf committing to both."""
    event_id = os.urandom(32)
    occurred = int(time.time() * 1000) if now_ms is None else now_ms
    detail = detail or {}
    return {
        "event_id": hex32(event_id),
        "occurred_at_ms": occurred,
        "actor": actor,
        "action": action.value,
        "subject": subject[:300],
        "legal_basis": legal_basis,
        "detail_json": canonical_json(detail),
        "leaf": event_leaf(event_id, occurred, actor, action.value, subject[:300], legal_basis, detail),
    }


def record_event(
    session: Session,
    *,
    actor: str,
    action: Action,
    subject: str,
    legal_basis: str,
    detail: dict[str, Any] | None = None,
    now_ms: int | None = None,
) -> ComplianceEvent:
    """Adds one event to the session (the caller commits it with what it records)."""
    values = _event_values(
        actor=actor, action=action, subject=subject, legal_basis=legal_basis, detail=detail, now_ms=now_ms
    )
    event = ComplianceEvent(**values)
    session.add(event)
    return event


def record_access(
    session: Session,
    principal: Principal,
    action: Action,
    subject: str,
    stated_basis: str | None,
    detail: dict[str, Any] | None = None,
) -> ComplianceEvent:
    """Records and commits one read or export by ``principal`` before the data is returned."""
    event = record_event(
        session,
        actor=actor_of(principal),
        action=action,
        subject=subject,
        legal_basis=legal_basis_for(principal, stated_basis),
        detail=detail,
    )
    session.commit()
    return event


_INSERT_EVENT = ComplianceEvent.__table__.insert()


def record_read(
    session: Session,
    principal: Principal,
    action: Action,
    subject: str,
    stated_basis: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """:func:`record_access` for the busy read paths (proof lookups): the same event, inserted with one
    plain INSERT in the session's transaction and committed before the data is returned, without
    building an ORM object (the ORM's unit of work was a third of a proof lookup's CPU)."""
    values = _event_values(
        actor=actor_of(principal),
        action=action,
        subject=subject,
        legal_basis=legal_basis_for(principal, stated_basis),
        detail=detail,
        now_ms=None,
    )
    session.execute(_INSERT_EVENT, values)
    session.commit()


def event_read(session: Session, event: ComplianceEvent) -> EventRead:
    batch = session.get(DeliveryBatch, event.batch_pk) if event.batch_pk is not None else None
    return EventRead(
        event_id=event.event_id,
        occurred_at_ms=event.occurred_at_ms,
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        legal_basis=event.legal_basis,
        detail=json.loads(event.detail_json),
        leaf=hex32(event.leaf),
        batch_id=batch.batch_id if batch else None,
        batch_state=batch.state if batch else None,
    )


def get_event(session: Session, event_id: str, principal: Principal | None = None) -> ComplianceEvent:
    """One event; for a scoped auditor (``principal``) only an event of its scope, else 403
    ``out_of_scope``."""
    event = session.scalar(select(ComplianceEvent).where(ComplianceEvent.event_id == event_id.lower()))
    if event is None:
        raise ComplianceError(f"no compliance event {event_id}", code="event_not_found", status=404)
    scope = limiting_scope(principal) if principal is not None else None
    if scope is not None:
        visible = select(ComplianceEvent.id).where(
            ComplianceEvent.id == event.id, scope_clause(session, scope)
        )
        if session.scalar(visible) is None:
            raise ComplianceError(
                f"compliance event {event_id} is outside your audit scope", code="out_of_scope", status=403
            )
    return event


def scope_clause(session: Session, scope: AuditScope) -> ColumnElement[bool]:
    """The events a scoped auditor reads: those whose subject is one of its sources (``source:``,
    ``record:<source>/``, ``batch:`` and ``ingest:`` of its sources' batches and uploads, audit packages
    of a source) or of its merchants (audit packages of a merchant). Platform-wide events (residency
    policy, erasures, retention, scope changes) are for admins and global auditors only."""
    sources = session.execute(
        select(DeliverySource.name, DeliverySource.source_id).where(
            DeliverySource.source_id.in_(sorted(scope.sources))
        )
    ).all()
    subjects = [f"audit-package/merchant:{m}" for m in sorted(scope.merchants)]
    records: list[ColumnElement[bool]] = []
    for name, source_id in sources:
        subjects += [f"source:{name}", f"audit-package/source:{name}", f"audit-package/source:{source_id}"]
        prefix = f"record:{name}/"
        records.append(func.substr(ComplianceEvent.subject, 1, len(prefix)) == prefix)
    pks = scope_source_pks(scope)
    batches = select(literal("batch:", String) + DeliveryBatch.batch_id).where(
        DeliveryBatch.source_pk.in_(pks)
    )
    ingests = select(literal("ingest:", String) + cast(IngestFile.id, String) + "/quarantine").where(
        IngestFile.source_pk.in_(pks)
    )
    if not sources and not subjects:
        return false()
    return or_(
        ComplianceEvent.subject.in_(subjects),
        ComplianceEvent.subject.in_(batches),
        ComplianceEvent.subject.in_(ingests),
        *records,
    )


def list_events(
    session: Session,
    *,
    action: str | None,
    subject: str | None,
    limit: int,
    offset: int,
    scope: AuditScope | None = None,
) -> tuple[int, list[ComplianceEvent]]:
    """Newest first; ``scope``: only the events a scoped auditor reads (:func:`scope_clause`)."""
    query = select(ComplianceEvent)
    if scope is not None:
        query = query.where(scope_clause(session, scope))
    if action is not None:
        query = query.where(ComplianceEvent.action == action)
    if subject is not None:
        query = query.where(ComplianceEvent.subject == subject)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(ComplianceEvent.id.desc()).limit(limit).offset(offset))
    return total, list(rows)


# --- data zones and residency ------------------------------------------------------------------------


def zone_of(country: str) -> str:
    """The data zone of an ISO country code: "EU" for the EU/EEA, else the code itself ("" unknown)."""
    code = country.strip().upper()
    return "EU" if code in EU_EEA or code == "EU" else code


def record_zone(record: DeliveryRecordRow) -> str:
    """A record's jurisdiction: the zone of its edge location's country (the edge location is in the
    anchored leaf, so the zone is as verifiable as the record)."""
    return zone_of(edge_location_country(record.edge_location))


def _zones(csv: str) -> list[str]:
    return [z for z in csv.split(",") if z]


#: Built-in policy (rows of the policy table override it per zone): EU/EEA raw logs are stored and
#: exported only within the EU/EEA; everything else anywhere.
DEFAULT_POLICIES: dict[str, tuple[str, str]] = {"EU": ("EU", "EU"), ANY_ZONE: (ANY_ZONE, ANY_ZONE)}


def policy_for(session: Session, zone: str) -> ResidencyPolicy:
    """The policy of ``zone``: its table row, else its built-in default, else the "*" row or default."""
    for key in (zone, ANY_ZONE):
        row = session.get(ResidencyPolicy, key)
        if row is not None:
            return row
        if key in DEFAULT_POLICIES:
            storage, export = DEFAULT_POLICIES[key]
            return ResidencyPolicy(zone=key, storage_zones=storage, export_zones=export, updated_by="default")
    raise AssertionError("unreachable: '*' has a default")


def _allows(zones: list[str], zone: str) -> bool:
    return ANY_ZONE in zones or zone in zones


def export_refusals(session: Session, zones: Iterable[str], destination_zone: str) -> list[str]:
    """The data zones whose policy forbids an export to ``destination_zone``."""
    return sorted(
        z for z in set(zones) if not _allows(_zones(policy_for(session, z).export_zones), destination_zone)
    )


def storage_refusal(session: Session, settings: Settings) -> Callable[[str], bool]:
    """A per-ingest predicate: may raw logs of data zone ``zone`` NOT be stored in this deployment's
    zone? The policies are read once; each zone's answer is cached."""
    here = zone_of(settings.data_storage_zone)
    answers: dict[str, bool] = {}

    def refused(zone: str) -> bool:
        answer = answers.get(zone)
        if answer is None:
            answer = answers[zone] = not _allows(_zones(policy_for(session, zone).storage_zones), here)
        return answer

    return refused


def edge_zone(edge_location: str) -> str:
    return zone_of(edge_location_country(edge_location))


def storage_refused(session: Session, settings: Settings, zone: str) -> bool:
    return not _allows(_zones(policy_for(session, zone).storage_zones), zone_of(settings.data_storage_zone))


def ensure_storage_allowed(
    session: Session, settings: Settings, principal: Principal, source_ref: str
) -> None:
    """Refuses (403 ``residency_violation``, logged) an upload of a source whose jurisdiction's raw logs
    may not be stored in this deployment's zone (DATA_STORAGE_ZONE)."""
    source = get_source(session, source_ref)
    zone = zone_of(source.jurisdiction)
    if not storage_refused(session, settings, zone):
        return
    record_access(
        session,
        principal,
        Action.upload_refused,
        f"source:{source.name}",
        None,
        {"source_zone": zone, "storage_zone": zone_of(settings.data_storage_zone)},
    )
    raise ComplianceError(
        f"raw logs of zone {zone} may not be stored in zone {zone_of(settings.data_storage_zone)}",
        code="residency_violation",
        status=403,
    )


def policies(session: Session) -> list[PolicyRead]:
    """The effective policy of every zone that has one (table rows over built-in defaults)."""
    zones = set(DEFAULT_POLICIES) | set(session.scalars(select(ResidencyPolicy.zone)))
    return [policy_read(policy_for(session, zone)) for zone in sorted(zones)]


def policy_read(policy: ResidencyPolicy) -> PolicyRead:
    return PolicyRead(
        zone=policy.zone,
        storage_zones=_zones(policy.storage_zones),
        export_zones=_zones(policy.export_zones),
        updated_by=policy.updated_by,
        updated_at=policy.updated_at,  # None for a built-in default
    )


def _zone_list(values: Sequence[str]) -> str:
    zones = []
    for value in values:
        zone = ANY_ZONE if value.strip() == ANY_ZONE else zone_of(value)
        if zone != ANY_ZONE and not (len(zone) == 2 and zone.isascii() and zone.isalpha()):
            raise ComplianceError(
                f"{value!r} is not a zone (EU, an ISO country code or *)", code="zone_invalid"
            )
        zones.append(zone)
    return ",".join(sorted(set(zones)))


def set_policy(session: Session, principal: Principal, zone: str, body: PolicySet) -> ResidencyPolicy:
    key = ANY_ZONE if zone == ANY_ZONE else _zone_list([zone])
    storage, export = _zone_list(body.storage_zones), _zone_list(body.export_zones)
    policy = session.get(ResidencyPolicy, key) or ResidencyPolicy(zone=key)
    policy.storage_zones, policy.export_zones, policy.updated_by = storage, export, actor_of(principal)
    session.add(policy)
    record_event(
        session,
        actor=actor_of(principal),
        action=Action.policy_change,
        subject=f"residency:{key}",
        legal_basis=DEFAULT_LEGAL_BASIS[Role.admin],
        detail={"storage_zones": storage, "export_zones": export},
    )
    session.commit()
    return policy


# --- raw-data export ---------------------------------------------------------------------------------


def raw_export(
    session: Session, principal: Principal, body: RawExportRequest
) -> tuple[dict[str, Any], ComplianceEvent]:
    """The raw records of one source and time range (no pseudonyms, salts or IPs), if every record's
    zone may go to ``destination``; otherwise 403 ``residency_violation``, and the refusal is logged."""
    source = get_source(session, body.source)
    ensure_source_in_scope(principal.scope, source.source_id)
    if body.period_end <= body.period_start:
        raise ComplianceError("period_end must be after period_start", code="period_invalid")
    records = list(
        session.scalars(
            select(DeliveryRecordRow)
            .where(
                DeliveryRecordRow.source_pk == source.id,
                DeliveryRecordRow.timestamp_ms >= body.period_start * 1000,
                DeliveryRecordRow.timestamp_ms < body.period_end * 1000,
            )
            .order_by(DeliveryRecordRow.timestamp_ms, DeliveryRecordRow.id)
            .limit(MAX_RAW_EXPORT_RECORDS + 1)
        )
    )
    if len(records) > MAX_RAW_EXPORT_RECORDS:
        raise ComplianceError(
            f"more than {MAX_RAW_EXPORT_RECORDS} records; export a shorter period",
            code="export_too_large",
            status=413,
        )
    zones = [record_zone(r) for r in records]
    destination = zone_of(body.destination)
    detail = {
        "source": source.source_id,
        "period_start": body.period_start,
        "period_end": body.period_end,
        "destination": destination,
        "records": len(records),
        "zones": sorted(set(zones)),
    }
    subject = f"source:{source.name}"
    refused = export_refusals(session, zones, destination)
    if refused:
        record_access(
            session,
            principal,
            Action.export_refused,
            subject,
            body.legal_basis,
            {**detail, "refused": refused},
        )
        raise ComplianceError(
            f"raw data of zone(s) {', '.join(refused)} may not be exported to {destination}",
            code="residency_violation",
            status=403,
            refused_zones=refused,
        )
    event = record_access(session, principal, Action.export, subject, body.legal_basis, detail)
    document = {
        "format": "edgeledger-raw-export/v1",
        "source": source.name,
        "source_id": source.source_id,
        "event_id": event.event_id,
        "legal_basis": event.legal_basis,
        "destination": destination,
        "records": [_raw_record(r, zone) for r, zone in zip(records, zones, strict=True)],
    }
    return document, event


def _raw_record(record: DeliveryRecordRow, zone: str) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "timestamp_ms": record.timestamp_ms,
        "edge_location": record.edge_location,
        "zone": zone,
        "country": record.country,
        "host": record.host,
        "uri": record.uri,
        "asset_id": record.asset_id,
        "bytes_delivered": record.bytes_delivered,
        "status": record.status,
        "cache_result": record.cache_result,
        "client_commitment": hex32(record.client_commitment),
        "redacted": record.redacted_at is not None,
    }


# --- erasure and retention ---------------------------------------------------------------------------


def _redact(query_filter: Any, now: datetime) -> Any:
    return (
        update(DeliveryRecordRow)
        .where(query_filter)
        .values(client_pseudonym=None, salt=None, uri="", redacted_at=now)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class Erasure:
    event: ComplianceEvent
    records_erased: int
    keys_checked: int
    keys_destroyed: int


def erase_subject(
    session: Session,
    settings: Settings,
    principal: Principal,
    client_ip: str,
    legal_basis: str,
    reference: str,
) -> Erasure:
    """Right to erasure for the client ``client_ip``: under every pseudonym key still held, its records
    lose pseudonym, salt and URI (their commitments, leaves, roots and every proof stay valid) and one
    ``erase`` event is recorded in the same transaction. The IP is used only to compute pseudonyms."""
    keys = list(session.scalars(select(PseudonymKey).order_by(PseudonymKey.key_id)))
    now = utcnow()
    erased_leaves: list[bytes] = []
    for key in keys:
        if key.key_wrapped is None:
            continue
        # the current pseudonym and, for an IPv4 client, the one of its IPv4-mapped spelling
        pseudonyms = pseudonymiser_for(session, settings, key.key_id).pseudonyms(client_ip.strip())
        match = (DeliveryRecordRow.pseudonym_key_id == key.key_id) & (
            DeliveryRecordRow.client_pseudonym.in_(sorted(pseudonyms))
        )
        erased_leaves.extend(session.scalars(select(DeliveryRecordRow.leaf).where(match)))
        session.execute(_redact(match, now))
    destroyed = sum(1 for k in keys if k.key_wrapped is None)
    event = record_event(
        session,
        actor=actor_of(principal),
        action=Action.erase,
        subject="data-subject:pseudonymous",
        legal_basis=legal_basis.strip(),
        detail={
            "reference": reference,
            "records": len(erased_leaves),
            # Which records, without saying whose: the digest of their sorted leaves.
            "leaves_digest": hex32(keccak256(b"".join(sorted(erased_leaves)))),
            "keys_checked": len(keys) - destroyed,
        },
    )
    session.commit()
    return Erasure(event, len(erased_leaves), len(keys) - destroyed, destroyed)


@dataclass(frozen=True)
class Retention:
    records_redacted: int
    quarantined_lines_deleted: int
    keys_destroyed: int
    event: ComplianceEvent | None


FINAL_BATCH_STATES = (BatchState.anchored, BatchState.final)


def purge_expired(session: Session, settings: Settings, now: datetime | None = None) -> Retention:
    """Retention: raw fields of records older than RAW_RETENTION_DAYS in anchored batches are redacted,
    old quarantined lines deleted and the pseudonym keys of those days destroyed; one event records it."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=settings.raw_retention_days)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    anchored = select(DeliveryBatch.id).where(DeliveryBatch.state.in_(FINAL_BATCH_STATES))
    expired = (
        (DeliveryRecordRow.timestamp_ms < cutoff_ms)
        & DeliveryRecordRow.redacted_at.is_(None)
        & DeliveryRecordRow.batch_pk.in_(anchored)
    )
    redacted = session.execute(_redact(expired, now)).rowcount or 0
    old_files = select(IngestFile.id).where(IngestFile.created_at < cutoff)
    lines = (
        session.execute(
            delete(QuarantinedLineRow)
            .where(QuarantinedLineRow.ingest_file_pk.in_(old_files))
            .execution_options(synchronize_session=False)
        ).rowcount
        or 0
    )
    old_keys = [
        k.key_id
        for k in session.scalars(select(PseudonymKey).where(PseudonymKey.key_wrapped.is_not(None)))
        if k.key_id < cutoff.strftime("%Y-%m-%d") and not _key_has_unanchored(session, k.key_id)
    ]
    for key_id in old_keys:
        destroy_pseudonym_key(session, key_id)
    event = None
    if redacted or lines or old_keys:
        event = record_event(
            session,
            actor="system:retention",
            action=Action.retention_purge,
            subject=f"before:{cutoff.date().isoformat()}",
            legal_basis=RETENTION_BASIS,
            detail={"records": redacted, "quarantined_lines": lines, "keys": sorted(old_keys)},
        )
    session.commit()
    return Retention(redacted, lines, len(old_keys), event)


def _key_has_unanchored(session: Session, key_id: str) -> bool:
    """A key whose records still wait in open batches is kept (erasure must still find them)."""
    pending = select(DeliveryBatch.id).where(DeliveryBatch.state.not_in(FINAL_BATCH_STATES))
    found = session.scalar(
        select(DeliveryRecordRow.id)
        .where(DeliveryRecordRow.pseudonym_key_id == key_id, DeliveryRecordRow.batch_pk.in_(pending))
        .limit(1)
    )
    return found is not None


def source_zone(source: DeliverySource) -> str:
    return zone_of(source.jurisdiction)
