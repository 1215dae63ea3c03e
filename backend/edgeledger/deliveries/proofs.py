"""Inclusion proofs of delivered requests, and batch exports an auditor can check against the chain alone.

* :func:`record_proof` gives one record with everything needed to check it: its fields (never the client
  pseudonym or salt, only the commitment), its leaf values in ``@openzeppelin/merkle-tree`` JSON form,
  the leaf, the Merkle proof, the batch root, and where the batch was anchored (tx hash, block, contract,
  chain id). ``edgeledger verify delivery`` (:mod:`edgeledger.verify.delivery`) checks these documents.
* :func:`find_record` / :func:`find_record_by_line` look a record up by (source, request id) or by a raw log
  line, whose fields must equal the stored record's.
* :func:`stream_batch_export` writes a whole batch as one JSON document whose ``tree`` member is an
  OpenZeppelin ``StandardMerkleTree`` "standard-v1" dump, in chunks (a batch may hold a million records).
* :func:`authorize_record` / :func:`authorize_batch` say who may read what.

Formats and the auditor's steps: docs/proofs.md.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from edgeledger.auth.dependencies import Principal, ensure_source_in_scope
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainError, Deployment
from edgeledger.config import Settings
from edgeledger.deliveries import parsers
from edgeledger.deliveries.models import (
    ANCHORED_STATES,
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    MerchantHost,
)
from edgeledger.deliveries.records import DeliveryRecord, LogFormatError, Pseudonymiser, QuarantinedLine
from edgeledger.deliveries.service import KIND_CODES, DeliveryError, get_source, leaf_values_of
from edgeledger.deliveries.trees import TreeFile, open_batch_tree
from edgeledger.ledger.delivery_leaf import LEAF_TYPES, leaf_hash, leaf_values_to_json
from edgeledger.ledger.hashing import ZERO32, hex32
from edgeledger.ledger.merkle import STANDARD_FORMAT

PROOF_FORMAT = "edgeledger-proof/v1"
PROOFS_FORMAT = "edgeledger-proofs/v1"
EXPORT_FORMAT = "edgeledger-batch-export/v1"
#: Name of the leaf encoding (docs/delivery-leaf.md); the types are ``leaf.LEAF_TYPES``.
LEAF_ENCODING_NAME = "edgeledger-delivery-leaf/v1"
#: Most request ids one proofs document may ask for (each is one indexed lookup and one proof).
MAX_PROOFS_PER_REQUEST = 1_000
#: The standard 33-column CloudFront ``#Fields`` header (what CloudFront writes today), used when a line
#: is looked up without a header of its own.
CLOUDFRONT_DEFAULT_HEADER = (
    "#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) "
    "cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header cs-protocol "
    "cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type "
    "cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte "
    "x-edge-detailed-result-type sc-content-type sc-content-len sc-range-start sc-range-end"
)
#: States in which a batch has its root and tree (closed or later).
ROOTED_STATES = frozenset(
    {
        BatchState.closed,
        BatchState.awaiting_signature,
        BatchState.anchoring,
        BatchState.anchored,
        BatchState.final,
    }
)
#: Log line fields compared with the stored record, as (name in errors, record attribute).
LINE_FIELDS: tuple[tuple[str, str], ...] = (
    ("timestamp", "timestamp_ms"),
    ("bytes", "bytes_delivered"),
    ("status", "status"),
    ("host", "host"),
    ("uri", "uri"),
    ("edge_location", "edge_location"),
)
_EXPORT_CHUNK = 2_000  # tree nodes or values per streamed piece and per database fetch


# ----------------------------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------------------------


class ProofRecord(BaseModel):
    """A delivered request as stored: the client appears only as its commitment."""

    request_id: str
    timestamp_ms: int
    timestamp: datetime
    edge_location: str
    country: str
    region: str
    host: str
    uri: str
    asset_id: int
    merchant_id: str
    bytes_delivered: int
    status: int
    cache_result: int
    client_commitment: str


class ProofBatch(BaseModel):
    batch_id: str
    source_id: str
    source: str
    period_start: int
    period_end: int
    kind: str
    kind_code: int
    correction_seq: int
    state: str
    leaf_count: int


class RecordProof(BaseModel):
    """One record with its Merkle proof against its batch root (docs/proofs.md)."""

    format: str = PROOF_FORMAT
    record: ProofRecord
    leaf_encoding: str = LEAF_ENCODING_NAME
    leaf_types: list[str] = Field(default_factory=lambda: list(LEAF_TYPES))
    leaf_values: list[str]
    leaf: str
    proof: list[str]
    root: str
    batch: ProofBatch
    anchored: bool
    tx_hash: str | None
    block_number: int | None
    contract: str | None
    chain_id: int | None


class LineLookup(BaseModel):
    source: str = Field(min_length=1, max_length=100, description="Source name or 0x source id")
    line: str = Field(min_length=1, max_length=parsers.MAX_LINE_CHARS, description="One raw log line")
    header: str | None = Field(
        None,
        max_length=64_000,
        description="CloudFront only: the file's '#Fields:' header line (default: the standard 33 columns)",
    )


# ----------------------------------------------------------------------------------------------
# Chain coordinates (from the deployment file: no RPC round trip per proof)
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _deployment_of(path: Path, mtime_ns: int) -> Deployment:
    return Deployment.load(path)


def ledger_location(settings: Settings) -> tuple[str | None, int | None]:
    """(DeliveryLedger address, chain id) from the deployment file; (None, None) when not deployed."""
    path = settings.resolved_deployment_file
    try:
        deployment = _deployment_of(path, path.stat().st_mtime_ns)
        return deployment.address_of("DeliveryLedger"), deployment.chain_id
    except (OSError, ChainError, ValueError, KeyError):
        return None, None


# ----------------------------------------------------------------------------------------------
# Authorisation
# ----------------------------------------------------------------------------------------------


def _forbidden(message: str) -> DeliveryError:
    return DeliveryError(message, code="forbidden", status=403)


def _merchant_hosts(session: Session, principal: Principal) -> set[str]:
    rows = session.scalars(
        select(MerchantHost.host).where(MerchantHost.merchant_user_id == principal.user_id)
    )
    return {host.lower() for host in rows}


def authorize_source(principal: Principal, source: DeliverySource) -> None:
    """Admins and auditors (within their scope) read every source; an operator only its own; nobody
    else whole batches."""
    if principal.role in (Role.admin, Role.auditor):
        ensure_source_in_scope(principal.scope, source.source_id)
        return
    if principal.role == Role.operator and source.operator_user_id == principal.user_id:
        return
    raise _forbidden(f"you may not read the records of source {source.name!r}")


def authorize_records(
    session: Session, principal: Principal, source: DeliverySource, records: Sequence[DeliveryRecordRow]
) -> None:
    """Like :func:`authorize_source`, and a merchant may read the records of its own hosts."""
    if principal.role == Role.merchant:
        hosts = _merchant_hosts(session, principal)
        foreign = sorted((r for r in records if r.host.lower() not in hosts), key=lambda r: r.request_id)
        if foreign:  # as if it did not exist: a merchant cannot probe other merchants' request ids
            raise _record_not_found(source, foreign[0].request_id)
        return
    authorize_source(principal, source)


# ----------------------------------------------------------------------------------------------
# Lookups
# ----------------------------------------------------------------------------------------------


def _record_not_found(source: DeliverySource, request_id: str) -> DeliveryError:
    return DeliveryError(
        f"source {source.name!r} has no record with request id {request_id!r}",
        code="record_not_found",
        status=404,
        source=source.name,
        request_id=request_id,
    )


def find_record(session: Session, source: DeliverySource, request_id: str) -> DeliveryRecordRow:
    """The stored record of (source, request id as logged); 404 ``record_not_found`` otherwise."""
    record = session.scalar(
        select(DeliveryRecordRow).where(
            DeliveryRecordRow.source_pk == source.id, DeliveryRecordRow.request_id == request_id
        )
    )
    if record is None:
        raise _record_not_found(source, request_id)
    return record


def _record_lookup(source_column: Any) -> Any:
    """(source, record, batch) of one request id, the source found by ``source_column``: built once, as
    building a statement costs more CPU than running it."""
    return (
        select(DeliverySource, DeliveryRecordRow, DeliveryBatch)
        .join(DeliveryRecordRow, DeliveryRecordRow.source_pk == DeliverySource.id)
        .join(DeliveryBatch, DeliveryBatch.id == DeliveryRecordRow.batch_pk)
        .where(source_column == bindparam("ref"), DeliveryRecordRow.request_id == bindparam("request_id"))
    )


_RECORD_BY_SOURCE_NAME = _record_lookup(DeliverySource.name)
_RECORD_BY_SOURCE_ID = _record_lookup(DeliverySource.source_id)


def find_record_with_batch(
    session: Session, principal: Principal, ref: str, request_id: str
) -> tuple[DeliverySource, DeliveryRecordRow, DeliveryBatch]:
    """Source, record and batch of (source name or id, request id) in one round trip, authorised as
    :func:`authorize_source` and :func:`authorize_records` would: a caller who may not read the source
    learns nothing about its request ids (403 before 404), and a merchant only its own hosts' records."""
    by_id = ref.startswith("0x")
    statement = _RECORD_BY_SOURCE_ID if by_id else _RECORD_BY_SOURCE_NAME
    params = {"ref": ref.lower() if by_id else ref, "request_id": request_id}
    row = session.execute(statement, params).one_or_none()
    if row is None:  # the slow path only for answers that are errors: which one, in the usual order
        source = get_source(session, ref)
        if principal.role != Role.merchant:
            authorize_source(principal, source)
        raise _record_not_found(source, request_id)
    source, record, batch = row
    if principal.role != Role.merchant:
        authorize_source(principal, source)
    authorize_records(session, principal, source, [record])
    return source, record, batch


def parse_line(source: DeliverySource, line: str, header: str | None = None) -> DeliveryRecord:
    """One raw log line of ``source``'s provider format as a record; 422 with the quarantine reason."""
    log_format = source.provider if source.provider in parsers.FORMATS else None
    if log_format is None:
        raise DeliveryError(
            f"source {source.name!r} logs in the {source.provider!r} format, which has no line parser",
            code="unsupported_format",
            provider=source.provider,
        )
    text = line.rstrip("\r\n")
    if "\n" in text or "\r" in text:
        raise DeliveryError("send exactly one log line", code="line_invalid", reason="multiple_lines")
    lines = [text + "\n"]
    if log_format == parsers.CLOUDFRONT:
        head = (header or CLOUDFRONT_DEFAULT_HEADER).strip().splitlines()
        if not any(h.startswith("#Fields:") for h in head):
            head = ["#Fields: " + " ".join(head)]  # just the column names
        lines = [h.rstrip("\r") + "\n" for h in head] + lines
    # The client IP of the line is irrelevant here (the proof shows the stored commitment): a one-off
    # random key pseudonymises it so it is never linkable to anything stored.
    pseudonymiser = Pseudonymiser(secrets.token_bytes(32), "proof-lookup")
    try:
        items = list(
            parsers.parse_log(lines, pseudonymiser=pseudonymiser, file_name="line", log_format=log_format)
        )
    except LogFormatError as exc:
        raise DeliveryError(
            f"not a {log_format} log line: {exc.reason}", code="line_invalid", reason="format"
        ) from None
    for item in items:
        if isinstance(item, QuarantinedLine):
            raise DeliveryError(
                f"the line is not a valid {log_format} record: {item.reason} ({item.detail})",
                code="line_invalid",
                reason=item.reason,
                detail=item.detail,
            )
    records = [item for item in items if isinstance(item, DeliveryRecord)]
    if len(records) != 1:
        raise DeliveryError("the line holds no log record", code="line_invalid", reason="no_record")
    return records[0]


def find_record_by_line(
    session: Session,
    source: DeliverySource,
    line: str,
    header: str | None = None,
    authorize: Callable[[DeliveryRecordRow], None] | None = None,
) -> DeliveryRecordRow:
    """The stored record a raw line describes: same request id, and the line's timestamp, bytes, status,
    host, uri and edge location equal the stored ones (409 ``line_mismatch`` naming the others).
    ``authorize`` runs on the stored record before anything of it is compared or shown, so a caller never
    learns the stored values of a record it may not read."""
    parsed = parse_line(source, line, header)
    record = find_record(session, source, parsed.request_id)
    if authorize is not None:
        authorize(record)
    differing = {
        name: {"line": getattr(parsed, attr), "stored": getattr(record, attr)}
        for name, attr in LINE_FIELDS
        if getattr(parsed, attr) != getattr(record, attr)
    }
    if differing:
        raise DeliveryError(
            f"the line differs from stored record {parsed.request_id!r} in: {', '.join(differing)}",
            code="line_mismatch",
            status=409,
            request_id=parsed.request_id,
            fields=sorted(differing),
            differences=differing,
        )
    return record


# ----------------------------------------------------------------------------------------------
# Proofs
# ----------------------------------------------------------------------------------------------


def _require_rooted(batch: DeliveryBatch) -> None:
    if batch.state not in ROOTED_STATES or batch.root is None:
        raise DeliveryError(
            f"batch {batch.batch_id} is {batch.state}: proofs exist once it is closed",
            code="batch_empty" if batch.state == BatchState.empty else "batch_not_closed",
            status=409,
            batch_id=batch.batch_id,
            state=batch.state,
        )


def source_of(session: Session, batch: DeliveryBatch) -> DeliverySource:
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None  # foreign key
    return source


def batch_summary(batch: DeliveryBatch, source: DeliverySource) -> ProofBatch:
    return ProofBatch(
        batch_id=batch.batch_id,
        source_id=source.source_id,
        source=source.name,
        period_start=batch.period_start,
        period_end=batch.period_end,
        kind=batch.kind,
        kind_code=KIND_CODES[batch.kind],
        correction_seq=batch.correction_seq,
        state=batch.state,
        leaf_count=batch.leaf_count,
    )


def _proof_record(record: DeliveryRecordRow) -> ProofRecord:
    return ProofRecord(
        request_id=record.request_id,
        timestamp_ms=record.timestamp_ms,
        timestamp=datetime.fromtimestamp(record.timestamp_ms / 1000, UTC),
        edge_location=record.edge_location,
        country=record.country,
        region=record.region,
        host=record.host,
        uri=record.uri,
        asset_id=record.asset_id,
        merchant_id=hex32(record.merchant_id),
        bytes_delivered=record.bytes_delivered,
        status=record.status,
        cache_result=record.cache_result,
        client_commitment=hex32(record.client_commitment),
    )


def _proof_in_tree(
    tree: TreeFile,
    settings: Settings,
    record: DeliveryRecordRow,
    batch: DeliveryBatch,
    source: DeliverySource,
) -> RecordProof:
    values = leaf_values_of(source.source_id, record)
    leaf = leaf_hash(values)
    position = tree.position_of(leaf)
    if position is None:  # the stored record changed after the batch closed: no honest proof exists
        raise DeliveryError(
            f"record {record.request_id!r} is not in the tree of batch {batch.batch_id}",
            code="record_not_in_tree",
            status=409,
            request_id=record.request_id,
            batch_id=batch.batch_id,
        )
    contract, chain_id = ledger_location(settings)
    anchored = batch.state in ANCHORED_STATES
    return RecordProof(
        record=_proof_record(record),
        leaf_values=leaf_values_to_json(values),
        leaf=hex32(leaf),
        proof=[hex32(node) for node in tree.proof(position)],
        root=hex32(tree.root),
        batch=batch_summary(batch, source),
        anchored=anchored,
        tx_hash=batch.tx_hash if anchored else None,
        block_number=batch.block_number if anchored else None,
        contract=contract,
        chain_id=chain_id,
    )


def _open_tree(session: Session, settings: Settings, batch: DeliveryBatch) -> TreeFile:
    try:
        return open_batch_tree(session, settings, batch)
    except ValueError as exc:  # the records no longer give the anchored root: say so, never guess
        raise DeliveryError(
            str(exc), code="batch_tree_invalid", status=409, batch_id=batch.batch_id
        ) from None


def record_proof(
    session: Session,
    settings: Settings,
    record: DeliveryRecordRow,
    batch: DeliveryBatch | None = None,
    source: DeliverySource | None = None,
) -> RecordProof:
    """The proof document of one stored record (409 ``batch_not_closed`` while its batch is open)."""
    batch = batch or session.get(DeliveryBatch, record.batch_pk)
    source = source or session.get(DeliverySource, record.source_pk)
    assert batch is not None and source is not None  # foreign keys
    _require_rooted(batch)
    with _open_tree(session, settings, batch) as tree:
        return _proof_in_tree(tree, settings, record, batch, source)


def proofs_document(
    session: Session, settings: Settings, batch: DeliveryBatch, records: Sequence[DeliveryRecordRow]
) -> dict[str, Any]:
    """``edgeledger-proofs/v1``: the batch (as in an export) and one :class:`RecordProof` per record."""
    _require_rooted(batch)
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    with _open_tree(session, settings, batch) as tree:
        proofs = [_proof_in_tree(tree, settings, r, batch, source).model_dump(mode="json") for r in records]
    contract, chain_id = ledger_location(settings)
    return {
        "format": PROOFS_FORMAT,
        "chain_id": chain_id,
        "contract": contract,
        "batch": export_batch_header(session, batch, source),
        "proofs": proofs,
    }


def records_of_batch(
    session: Session, batch: DeliveryBatch, request_ids: Sequence[str]
) -> list[DeliveryRecordRow]:
    """The batch's records with these request ids, in the order asked; 404 for any not in the batch."""
    wanted = list(dict.fromkeys(request_ids))
    if not wanted:
        raise DeliveryError("request_ids is empty", code="request_ids_invalid")
    if len(wanted) > MAX_PROOFS_PER_REQUEST:
        raise DeliveryError(
            f"at most {MAX_PROOFS_PER_REQUEST} request ids per request, got {len(wanted)}",
            code="request_ids_invalid",
        )
    rows = session.scalars(
        select(DeliveryRecordRow).where(
            DeliveryRecordRow.batch_pk == batch.id, DeliveryRecordRow.request_id.in_(wanted)
        )
    )
    by_id = {row.request_id: row for row in rows}
    missing = [rid for rid in wanted if rid not in by_id]
    if missing:
        raise DeliveryError(
            f"batch {batch.batch_id} has no record with request id {missing[0]!r}",
            code="record_not_found",
            status=404,
            batch_id=batch.batch_id,
            request_ids=missing[:20],
        )
    return [by_id[rid] for rid in wanted]


def merchant_records_of_batch(
    session: Session, principal: Principal, source: DeliverySource, batch: DeliveryBatch, wanted: list[str]
) -> list[DeliveryRecordRow]:
    """A merchant's records of ``batch`` with these request ids. An id that is not in the batch and one
    of another merchant's hosts get one and the same 404 (``record_not_found`` naming the source and the
    first such id in sorted order, decided on the merchant's own records alone), so a merchant cannot
    tell whether another merchant's request id exists."""
    try:
        records = records_of_batch(session, batch, wanted)
    except DeliveryError as exc:
        if exc.code != "record_not_found":
            raise  # request_ids_invalid: about the request alone
        query = select(DeliveryRecordRow).where(
            DeliveryRecordRow.batch_pk == batch.id,
            DeliveryRecordRow.request_id.in_(list(dict.fromkeys(wanted))),
        )
        records = list(session.scalars(query))
    mine = _merchant_hosts(session, principal)
    unseen = sorted(set(wanted) - {r.request_id for r in records if r.host.lower() in mine})
    if unseen:
        raise _record_not_found(source, unseen[0])
    authorize_records(session, principal, source, records)
    return records


# ----------------------------------------------------------------------------------------------
# Batch export
# ----------------------------------------------------------------------------------------------


def export_batch_header(session: Session, batch: DeliveryBatch, source: DeliverySource) -> dict[str, Any]:
    """The batch member of exports: the manifest as signed, its hash and signature, and where it landed."""
    corrects = ZERO32
    if batch.kind == BatchKind.correction and batch.corrects_pk is not None:
        corrected = session.get(DeliveryBatch, batch.corrects_pk)
        corrects = corrected.batch_id if corrected is not None else ZERO32
    anchored = batch.state in ANCHORED_STATES
    return {
        "manifest": {
            "sourceId": source.source_id,
            "batchId": batch.batch_id,
            "periodStart": batch.period_start,
            "periodEnd": batch.period_end,
            "root": batch.root,
            "leafCount": batch.leaf_count,
            "totalBytes": batch.total_bytes,
            "totalRequests": batch.total_requests,
            "prevManifestHash": batch.prev_manifest_hash or ZERO32,
            "kind": KIND_CODES[batch.kind],
            "corrects": corrects,
        },
        "manifest_hash": batch.manifest_hash,
        "signature": batch.signature,
        "signer": batch.signer,
        "source": source.name,
        "state": batch.state,
        "anchored": anchored,
        "tx_hash": batch.tx_hash if anchored else None,
        "block_number": batch.block_number if anchored else None,
    }


def prepare_export(session: Session, settings: Settings, batch: DeliveryBatch) -> dict[str, Any]:
    """Everything of an export except the tree, checked before streaming starts (errors still become
    proper 4xx responses): the batch must be closed and its tree file must match its root."""
    _require_rooted(batch)
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    _open_tree(session, settings, batch).close()  # rebuilds a missing or stale tree file now
    contract, chain_id = ledger_location(settings)
    return {
        "format": EXPORT_FORMAT,
        "chain_id": chain_id,
        "contract": contract,
        "batch": export_batch_header(session, batch, source),
    }


def stream_batch_export(
    engine: Engine, settings: Settings, batch_pk: int, head: dict[str, Any]
) -> Iterator[bytes]:
    """The export document in pieces: ``head``, then the OZ dump (tree nodes from the memory-mapped tree
    file, values from the database in leaf order), never holding more than a chunk of either.

    Uses its own session: the response body is produced after the request's session has been closed.
    """
    prefix = json.dumps(head, separators=(",", ":"))[:-1]
    yield (prefix + ',"tree":{"format":"' + STANDARD_FORMAT + '","leafEncoding":').encode()
    yield json.dumps(list(LEAF_TYPES), separators=(",", ":")).encode()
    with Session(engine) as session:
        batch = session.get(DeliveryBatch, batch_pk)
        source = session.get(DeliverySource, batch.source_pk) if batch is not None else None
        assert batch is not None and source is not None
        with _open_tree(session, settings, batch) as tree:
            yield b',"tree":['
            size = 2 * tree.leaf_count - 1
            for start in range(0, size, _EXPORT_CHUNK):
                nodes = (tree.node(i).hex() for i in range(start, min(size, start + _EXPORT_CHUNK)))
                yield (("," if start else "") + ",".join(f'"0x{node}"' for node in nodes)).encode()
            yield b'],"values":['
            yield from _export_values(session, tree, batch, source)
            yield b"]}}"


def _export_values(
    session: Session, tree: TreeFile, batch: DeliveryBatch, source: DeliverySource
) -> Iterator[bytes]:
    # Records in descending leaf order sit at consecutive tree positions from n-1 on (the tree file keeps
    # its leaves sorted the same way), so each tree index is known without a search; a position whose
    # node is not the record's leaf (a database collating bytes differently) falls back to the search.
    first_leaf = tree.leaf_count - 1
    query = (
        select(DeliveryRecordRow)
        .where(DeliveryRecordRow.batch_pk == batch.id)
        .order_by(DeliveryRecordRow.leaf.desc())
        .execution_options(yield_per=_EXPORT_CHUNK)
    )
    pieces: list[str] = []
    for k, record in enumerate(session.scalars(query)):
        position = first_leaf + k
        if tree.node(position) != record.leaf:
            found = tree.position_of(record.leaf)
            position = found if found is not None else position
        value = leaf_values_to_json(leaf_values_of(source.source_id, record))
        pieces.append(json.dumps({"value": value, "treeIndex": position}, separators=(",", ":")))
        if len(pieces) == _EXPORT_CHUNK:
            yield (("," if k >= _EXPORT_CHUNK else "") + ",".join(pieces)).encode()
            pieces = []
    if pieces:
        yield (("," if k >= len(pieces) else "") + ",".join(pieces)).encode()
