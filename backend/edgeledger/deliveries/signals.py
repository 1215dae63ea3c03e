"""Fraud signals computed when a batch closes, and their admin review (docs/anchoring.md).

Each signal is an SQL aggregate over the batch's records. A hit becomes one :class:`FraudFlag` per
(signal, subject) with :class:`FraudFlagRecord` rows for the records it covers; covered records get
``excluded = True`` so settlement skips them until an admin reviews the flag. Records always stay in the
tree: they were delivered as logged, and the anchored root commits to exactly what was logged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, exists, func, insert, literal, select, update
from sqlalchemy.orm import Session

from edgeledger.assets.models import Asset
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.deliveries import service
from edgeledger.deliveries.models import (
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    FlagState,
    FraudFlag,
    FraudFlagRecord,
    IngestFile,
    MerchantHost,
    MerchantSource,
    PseudonymKey,
    QuarantinedLineRow,
)
from edgeledger.ledger.ids import merchant_id_for

Record = DeliveryRecordRow
DUPLICATE_REASON = "duplicate_request_id"
#: Characters that separate fields in the supported log formats (CloudFront TSV, NDJSON, CSV-ish).
_TOKEN_SPLIT = re.compile(r"[\s,\"'{}\[\]:;]+")
_CHUNK = 500


class Signal:
    requests_per_client = "requests_per_client"
    bytes_per_client = "bytes_per_client"
    client_dominance = "client_dominance"
    self_request = "self_request"
    bytes_above_asset_size = "bytes_above_asset_size"
    impossible_speed = "impossible_speed"
    duplicate_request_id = "duplicate_request_id"


class FlagRead(BaseModel):
    id: int
    batch_id: str
    signal: str
    subject: str
    record_count: int
    details: dict[str, Any]
    state: str
    reviewed_by: int | None
    reviewed_at: datetime | None
    review_reason: str | None
    created_at: datetime
    #: an open flag holds its batch's pay: no settlement of a merchant whose records it covers counts the
    #: batch until every such flag is decided (settlement/period_inputs.py ``under_review``). False for an
    #: open flag on a batch no settlement bills anyway: abandoned, or from a source none of the merchants
    #: whose records it covers authorises (:func:`_holding`)
    holds_pay: bool = False
    #: when an open flag should be decided by (created_at + FRAUD_REVIEW_DUE_SECONDS); null once decided
    due_at: datetime | None = None
    #: open and past ``due_at``: the batch's pay has waited longer than the review is meant to take
    overdue: bool = False


class FlagReview(BaseModel):
    decision: Literal["confirmed", "dismissed"]
    reason: str = Field(min_length=1, max_length=2000)


def flag_batch(session: Session, settings: Settings, batch: DeliveryBatch) -> list[FraudFlag]:
    """Runs every signal over ``batch`` inside the caller's transaction; returns the flags it raised.
    Idempotent: a (signal, subject) already flagged on the batch is not flagged again."""
    existing = {
        (s, subj)
        for s, subj in session.execute(
            select(FraudFlag.signal, FraudFlag.subject).where(FraudFlag.batch_pk == batch.id)
        )
    }
    raised: list[FraudFlag] = []
    for signal, subject, condition, details in _hits(session, settings, batch):
        if (signal, subject) in existing:
            continue
        raised.append(_raise_flag(session, batch, signal, subject, condition, details))
    return raised


def _hits(
    session: Session, settings: Settings, batch: DeliveryBatch
) -> Iterable[tuple[str, str, ColumnElement[bool], dict[str, Any]]]:
    yield from _per_client(session, settings, batch)
    yield from _dominance(session, settings, batch)
    yield from _self_requests(session, settings, batch)
    yield from _above_asset_size(session, batch)
    yield from _impossible_speed(session, settings, batch)
    yield from _duplicate_request_ids(session, batch)


def _in_batch(batch: DeliveryBatch) -> ColumnElement[bool]:
    return Record.batch_pk == batch.id


def _per_client(
    session: Session, settings: Settings, batch: DeliveryBatch
) -> Iterable[tuple[str, str, ColumnElement[bool], dict[str, Any]]]:
    requests = func.count(Record.id)
    total = func.sum(Record.bytes_delivered)
    rows = session.execute(
        select(Record.client_pseudonym, requests, total)
        .where(_in_batch(batch), Record.client_pseudonym.is_not(None))
        .group_by(Record.client_pseudonym)
        .having(
            (requests > settings.fraud_max_requests_per_client)
            | (total > settings.fraud_max_bytes_per_client)
        )
    ).all()
    for pseudonym, count, nbytes in rows:
        condition = _in_batch(batch) & (Record.client_pseudonym == pseudonym)
        if count > settings.fraud_max_requests_per_client:
            details = {"requests": int(count), "limit": settings.fraud_max_requests_per_client}
            yield Signal.requests_per_client, pseudonym.hex(), condition, details
        if nbytes > settings.fraud_max_bytes_per_client:
            details = {"bytes": int(nbytes), "limit": settings.fraud_max_bytes_per_client}
            yield Signal.bytes_per_client, pseudonym.hex(), condition, details


def _dominance(
    session: Session, settings: Settings, batch: DeliveryBatch
) -> Iterable[tuple[str, str, ColumnElement[bool], dict[str, Any]]]:
    total = session.scalar(select(func.count(Record.id)).where(_in_batch(batch))) or 0
    if total < settings.fraud_dominance_min_requests:
        return
    requests = func.count(Record.id)
    # count / total >= bps / 10000, in integers.
    rows = session.execute(
        select(Record.client_pseudonym, requests)
        .where(_in_batch(batch), Record.client_pseudonym.is_not(None))
        .group_by(Record.client_pseudonym)
        .having(requests * 10_000 >= settings.fraud_dominance_share_bps * total)
    ).all()
    for pseudonym, count in rows:
        details = {
            "requests": int(count),
            "batch_requests": int(total),
            "share_bps": int(count) * 10_000 // int(total),
            "threshold_bps": settings.fraud_dominance_share_bps,
        }
        condition = _in_batch(batch) & (Record.client_pseudonym == pseudonym)
        yield Signal.client_dominance, pseudonym.hex(), condition, details


def _self_requests(
    session: Session, settings: Settings, batch: DeliveryBatch
) -> Iterable[tuple[str, str, ColumnElement[bool], dict[str, Any]]]:
    source = session.get(DeliverySource, batch.source_pk)
    node_ips: list[str] = json.loads(source.node_ips_json) if source else []
    if not node_ips:
        return
    key_ids = session.scalars(select(Record.pseudonym_key_id).where(_in_batch(batch)).distinct()).all()
    for key_id in key_ids:
        row = session.get(PseudonymKey, key_id)
        if row is None or row.key_wrapped is None:
            continue  # no key (or destroyed): pseudonyms of that day cannot be recomputed
        pseudonymiser = service.pseudonymiser_for(session, settings, key_id)  # exists: never commits
        for ip in node_ips:
            pseudonym = pseudonymiser.pseudonym(ip)
            condition = (
                _in_batch(batch)
                & (Record.pseudonym_key_id == key_id)
                & (Record.client_pseudonym == pseudonym)
            )
            count = session.scalar(select(func.count(Record.id)).where(condition)) or 0
            if count:
                # The IP itself is infrastructure (the node's own address), fine to name in the details.
                yield Signal.self_request, pseudonym.hex(), condition, {"node_ip": ip, "key_id": key_id}


def _above_asset_size(
    session: Session, batch: DeliveryBatch
) -> Iterable[tuple[str, str, ColumnElement[bool], dict[str, Any]]]:
    too_big = (
        select(Asset.id)
        .where(Asset.id == Record.asset_id, Record.bytes_delivered > Asset.size_bytes)
        .correlate(Record)
    )
    rows = session.execute(
        select(Record.asset_id, func.count(Record.id), func.max(Record.bytes_delivered))
        .where(_in_batch(batch), Record.asset_id != 0, exists(too_big))
        .group_by(Record.asset_id)
    ).all()
    for asset_id, count, largest in rows:
        size = session.scalar(select(Asset.size_bytes).where(Asset.id == asset_id))
        condition = _in_batch(batch) & (Record.asset_id == asset_id) & (Record.bytes_delivered > (size or 0))
        details = {"asset_size": size, "records": int(count), "largest": int(largest)}
        yield Signal.bytes_above_asset_size, f"asset:{asset_id}", condition, details


def _impossible_speed(
    session: Session, settings: Settings, batch: DeliveryBatch
) -> Iterable[tuple[str, str, ColumnElement[bool], dict[str, Any]]]:
    limit = settings.fraud_max_client_bytes_per_second * 60
    minute = Record.timestamp_ms // 60_000  # integer division on both backends
    total = func.sum(Record.bytes_delivered)
    rows = session.execute(
        select(Record.client_pseudonym, minute, total)
        .where(_in_batch(batch), Record.client_pseudonym.is_not(None))
        .group_by(Record.client_pseudonym, minute)
        .having(total > limit)
    ).all()
    for pseudonym, bucket, nbytes in rows:
        start = int(bucket) * 60_000
        condition = (
            _in_batch(batch)
            & (Record.client_pseudonym == pseudonym)
            & (Record.timestamp_ms >= start)
            & (Record.timestamp_ms < start + 60_000)
        )
        details = {"minute_start_ms": start, "bytes": int(nbytes), "limit_per_minute": limit}
        yield Signal.impossible_speed, f"{pseudonym.hex()}@{start}", condition, details


def _duplicate_request_ids(
    session: Session, batch: DeliveryBatch
) -> Iterable[tuple[str, str, ColumnElement[bool], dict[str, Any]]]:
    """Request ids of this batch that ingestion also saw again (quarantined as duplicates) in files of
    the same source: a replayed log line. Matches the quarantined line's request_id column; for lines
    stored without it, any field of the (masked) raw text that equals a request id of the batch."""
    quarantined = session.execute(
        select(QuarantinedLineRow.request_id, QuarantinedLineRow.raw)
        .join(IngestFile, IngestFile.id == QuarantinedLineRow.ingest_file_pk)
        .where(IngestFile.source_pk == batch.source_pk, QuarantinedLineRow.reason == DUPLICATE_REASON)
    ).all()
    candidates: dict[str, int] = {}
    for request_id, raw in quarantined:
        tokens = {request_id} if request_id else {t for t in _TOKEN_SPLIT.split(raw) if t}
        for token in tokens:
            candidates[token] = candidates.get(token, 0) + 1
    names = sorted(candidates)
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        found = session.scalars(
            select(Record.request_id).where(_in_batch(batch), Record.request_id.in_(chunk))
        )
        for request_id in found:
            condition = _in_batch(batch) & (Record.request_id == request_id)
            details = {"quarantined_duplicates": candidates[request_id]}
            yield Signal.duplicate_request_id, request_id, condition, details


def _raise_flag(
    session: Session,
    batch: DeliveryBatch,
    signal: str,
    subject: str,
    condition: ColumnElement[bool],
    details: dict[str, Any],
) -> FraudFlag:
    flag = FraudFlag(
        batch_pk=batch.id,
        signal=signal,
        subject=subject[:200],
        record_count=0,
        details_json=json.dumps(details, sort_keys=True),
        state=FlagState.open,
    )
    session.add(flag)
    session.flush()
    # Set-based: the covered records go straight from the query into the link table.
    session.execute(
        insert(FraudFlagRecord).from_select(
            ["flag_pk", "record_pk"], select(literal(flag.id), Record.id).where(condition)
        )
    )
    covered = select(FraudFlagRecord.record_pk).where(FraudFlagRecord.flag_pk == flag.id)
    flag.record_count = session.scalar(select(func.count()).select_from(covered.subquery())) or 0
    session.execute(
        update(Record)
        .where(Record.id.in_(covered))
        .values(excluded=True)
        .execution_options(synchronize_session=False)
    )
    return flag


# ----------------------------------------------------------------------------------------------
# Review
# ----------------------------------------------------------------------------------------------


def get_flag(session: Session, flag_id: int) -> FraudFlag:
    flag = session.get(FraudFlag, flag_id)
    if flag is None:
        raise service.DeliveryError(f"no fraud flag {flag_id}", code="flag_not_found", status=404)
    return flag


def review_flag(session: Session, flag: FraudFlag, review: FlagReview, reviewer_id: int) -> FraudFlag:
    """Records the admin's decision. Dismissed: the flag's records count again unless another open or
    confirmed flag still covers them. The batch's receipts are recomputed when it is anchored.

    The batch's row is written first (its ``updated_at``), as anchoring writes it before reading the
    records (anchoring.py ``_mark_anchored``): on PostgreSQL the write locks the row, on SQLite it takes
    the database's write lock (a ``FOR UPDATE`` read would do neither there). A review and the anchoring
    that computes the batch's receipts are so ordered, and whichever commits second sees the other's
    writes. Without it, a review reading the batch as not yet anchored while
    anchoring read the records before the review's exclusions committed left receipts that disagree
    with the records for good. Two reviews of one flag are ordered the same way (the second is refused)."""
    from edgeledger.deliveries.receipts import compute_receipts

    session.execute(
        update(DeliveryBatch).where(DeliveryBatch.id == flag.batch_pk).values(updated_at=utcnow())
    )
    state = session.scalar(select(DeliveryBatch.state).where(DeliveryBatch.id == flag.batch_pk))
    session.refresh(flag)  # as committed once the lock is ours
    if flag.state != FlagState.open:
        raise service.DeliveryError(
            f"flag {flag.id} was already reviewed ({flag.state})", code="flag_already_reviewed", status=409
        )
    flag.state = review.decision
    flag.reviewed_by = reviewer_id
    flag.reviewed_at = utcnow()
    flag.review_reason = review.reason
    session.flush()
    _recompute_exclusion(session, flag)
    batch = session.get(DeliveryBatch, flag.batch_pk)
    assert batch is not None
    if state in (BatchState.anchored, BatchState.final):
        compute_receipts(session, batch)
    session.commit()
    return flag


def _recompute_exclusion(session: Session, flag: FraudFlag) -> None:
    """excluded = some open or confirmed flag covers the record, for the records of ``flag``."""
    mine = select(FraudFlagRecord.record_pk).where(FraudFlagRecord.flag_pk == flag.id)
    other = FraudFlagRecord.__table__.alias("other_links")
    still_flagged = exists(
        select(other.c.record_pk)
        .join(FraudFlag, FraudFlag.id == other.c.flag_pk)
        .where(other.c.record_pk == Record.id, FraudFlag.state.in_([FlagState.open, FlagState.confirmed]))
    )
    session.execute(
        update(Record)
        .where(Record.id.in_(mine))
        .values(excluded=still_flagged)
        .execution_options(synchronize_session=False)
    )


def _holding(session: Session, flags: Sequence[FraudFlag], batches: Mapping[int, DeliveryBatch]) -> set[int]:
    """The ids among ``flags`` that keep pay waiting: open, on a batch not abandoned (an abandoned batch
    is billed to no one), over records of some merchant that authorises the batch's source (a merchant's
    settlement counts only batches of the sources it authorises, so for every other merchant the batch
    was never going to be billed). Two queries per source of their batches rather than two per flag: a
    listing can hold thousands of flags of a few sources."""
    by_source: dict[int, list[int]] = {}
    for flag in flags:
        batch = batches.get(flag.batch_pk)
        if flag.state == FlagState.open and batch is not None and batch.state != BatchState.abandoned:
            by_source.setdefault(batch.source_pk, []).append(flag.id)
    holding: set[int] = set()
    for source_pk, flag_ids in by_source.items():
        hosts = session.scalars(
            select(MerchantHost.host)
            .join(MerchantSource, MerchantSource.merchant_user_id == MerchantHost.merchant_user_id)
            .where(MerchantSource.source_pk == source_pk)
        ).all()
        if not hosts:
            continue
        ids = [merchant_id_for(h) for h in hosts]
        for start in range(0, len(flag_ids), _FLAG_CHUNK):
            holding.update(
                session.scalars(
                    select(FraudFlagRecord.flag_pk)
                    .join(Record, Record.id == FraudFlagRecord.record_pk)
                    .where(
                        FraudFlagRecord.flag_pk.in_(flag_ids[start : start + _FLAG_CHUNK]),
                        Record.merchant_id.in_(ids),
                    )
                    .distinct()
                )
            )
    return holding


#: flag ids per ``IN (...)`` of :func:`_holding`
_FLAG_CHUNK = 500


def flag_reads(
    session: Session, flags: Sequence[FraudFlag], due_seconds: int, now: datetime | None = None
) -> list[FlagRead]:
    """The API's view of each of ``flags`` (their batches and ``holds_pay`` read in bulk); an open one
    says when its review is due and whether it is overdue (``due_seconds``: FRAUD_REVIEW_DUE_SECONDS)."""
    pks = sorted({f.batch_pk for f in flags})
    batches: dict[int, DeliveryBatch] = {}
    for start in range(0, len(pks), _FLAG_CHUNK):
        chunk = pks[start : start + _FLAG_CHUNK]
        batches.update(
            (b.id, b) for b in session.scalars(select(DeliveryBatch).where(DeliveryBatch.id.in_(chunk)))
        )
    holding = _holding(session, flags, batches)
    at = now or utcnow()
    return [_flag_read(f, batches.get(f.batch_pk), f.id in holding, due_seconds, at) for f in flags]


def flag_read(session: Session, flag: FraudFlag, due_seconds: int) -> FlagRead:
    """:func:`flag_reads` of one flag."""
    return flag_reads(session, [flag], due_seconds)[0]


def _flag_read(
    flag: FraudFlag, batch: DeliveryBatch | None, holds: bool, due_seconds: int, now: datetime
) -> FlagRead:
    is_open = flag.state == FlagState.open
    due_at = flag.created_at + timedelta(seconds=due_seconds) if is_open else None
    return FlagRead(
        id=flag.id,
        batch_id=batch.batch_id if batch else "",
        signal=flag.signal,
        subject=flag.subject,
        record_count=flag.record_count,
        details=json.loads(flag.details_json),
        state=flag.state,
        reviewed_by=flag.reviewed_by,
        reviewed_at=flag.reviewed_at,
        review_reason=flag.review_reason,
        created_at=flag.created_at,
        holds_pay=holds,
        due_at=due_at,
        overdue=due_at is not None and now >= due_at,
    )


def list_flags(
    session: Session,
    *,
    batch: DeliveryBatch | None = None,
    state: str | None = None,
    within: Select[tuple[int]] | None = None,
    opened_by: datetime | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[FraudFlag]:
    """``within``: only flags on batches of these sources (keys, a subquery: an audit scope);
    ``opened_by``: only open flags raised at or before then (now less the due time: the overdue ones);
    ``limit`` and ``offset``: one page, oldest first."""
    query = select(FraudFlag)
    if within is not None:
        query = query.where(
            FraudFlag.batch_pk.in_(select(DeliveryBatch.id).where(DeliveryBatch.source_pk.in_(within)))
        )
    if batch is not None:
        query = query.where(FraudFlag.batch_pk == batch.id)
    if state is not None:
        query = query.where(FraudFlag.state == state)
    if opened_by is not None:
        query = query.where(FraudFlag.state == FlagState.open, FraudFlag.created_at <= opened_by)
    query = query.order_by(FraudFlag.created_at, FraudFlag.id).offset(offset)
    return list(session.scalars(query if limit is None else query.limit(limit)))
