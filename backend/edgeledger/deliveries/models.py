"""Deliveries: tables and API schemas.

Lifecycle of the data (docs/deliveries.md):

* a :class:`DeliverySource` is an edge node or a CDN provider account, registered on chain in
  ``DeliveryLedger`` (``source_id`` is its bytes32 id there);
* every log file or stream pushed for a source is an :class:`IngestFile`; each of its lines becomes a
  :class:`DeliveryRecordRow` (deduplicated by source + request id) or a :class:`QuarantinedLineRow`;
* a record joins the :class:`DeliveryBatch` of its (source, period): the regular batch while it is open,
  else the open correction batch that references it;
* after the late window a batch closes (tree built, totals fixed), is signed and anchored by a worker,
  and becomes final after N confirmations; fraud signals (:class:`FraudFlag`) are computed at close and
  exclude the records they cover from settlement until an admin reviews them;
* anchored, non-excluded records roll up into :class:`DeliveryReceipt` rows per (batch, asset, merchant,
  region), which settlement sums per period.

Hashes and ids that go on chain are stored as 0x-hex strings where people read them (source, batch,
root, tx) and as raw 32-byte values where there are millions of them (leaves, commitments).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from edgeledger.db import Base, UTCDateTime, utcnow


class SourceKind(StrEnum):
    """Mirrors DeliveryLedger.SourceKind (edge_node = 0, cdn_provider = 1)."""

    edge_node = "edge_node"
    cdn_provider = "cdn_provider"


class SourceStatus(StrEnum):
    registering = "registering"  # row written, registration transaction not yet confirmed
    active = "active"
    suspended = "suspended"


class BatchKind(StrEnum):
    regular = "regular"  # DeliveryLedger.KIND_REGULAR
    correction = "correction"  # DeliveryLedger.KIND_CORRECTION


class BatchState(StrEnum):
    open = "open"  # accepting records
    closed = "closed"  # totals and root fixed, waiting to be anchored
    awaiting_signature = "awaiting_signature"  # edge node must sign its manifest itself
    anchoring = "anchoring"  # anchor transaction sent (tx_hash set) or about to be
    anchored = "anchored"  # in a block (tx_hash, block_number)
    final = "final"  # CHAIN_CONFIRMATIONS blocks on top
    empty = "empty"  # closed without records: nothing to anchor
    abandoned = "abandoned"  # an admin gave up on anchoring it (abandoned_by/at/reason): never billed


#: The batch states whose root is on chain: what proofs call anchored, receipts count and settlement pays.
ANCHORED_STATES: frozenset[str] = frozenset({BatchState.anchored, BatchState.final})


class IngestState(StrEnum):
    queued = "queued"  # stored (IngestBlobChunk rows) and enqueued; an ingest worker will run it
    processing = "processing"  # running: the counters are those of the chunks stored so far
    done = "done"
    rejected = "rejected"  # not a log at all (nothing stored)
    failed = "failed"  # broke off part-way (records read before the break are kept, see error)


class FlagState(StrEnum):
    open = "open"  # records excluded from settlement until reviewed
    confirmed = "confirmed"  # fraud: records stay excluded
    dismissed = "dismissed"  # false alarm: records count again


class DeliverySource(Base):
    __tablename__ = "delivery_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[str] = mapped_column(String(66), unique=True)  # bytes32 on chain, 0x-hex
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    provider: Mapped[str] = mapped_column(String(20))  # cloudfront | cloudflare | fastly | edgeledger
    operator: Mapped[str] = mapped_column(String(42))  # payout address
    signer: Mapped[str] = mapped_column(String(42))  # signs manifests
    regions_bitmap: Mapped[str] = mapped_column(String(66))  # territory bitmap, hex of the uint256
    jurisdiction: Mapped[str] = mapped_column(String(2))
    # The node's own public IPs (JSON list; infrastructure addresses, not personal data): a request from
    # one of them is a self-request (fraud signal).
    node_ips_json: Mapped[str] = mapped_column(Text, default="[]")
    # The log format the source writes, declared (parsers.FORMATS; NULL: detected per file, and only when
    # exactly one format fits), and what its lines may not say: the merchant host and the edge location
    # (nginx and Fastly CLF lines name neither), the Akamai structured columns (JSON list of data set
    # field ids, in order). docs/log-formats.md, "Declared or detected".
    log_format: Mapped[str | None] = mapped_column(String(32))
    site_host: Mapped[str | None] = mapped_column(String(255))
    site_edge_location: Mapped[str | None] = mapped_column(String(16))
    log_fields_json: Mapped[str | None] = mapped_column(Text)
    operator_user_id: Mapped[int | None] = mapped_column(ForeignKey("auth_users.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default=SourceStatus.registering)
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PseudonymKey(Base):
    """A client-pseudonymisation key (one per UTC day of ingestion), stored wrapped (AES-GCM) with the
    master secret. Destroying a key (``key_wrapped`` = NULL) makes its pseudonyms unlinkable for good."""

    __tablename__ = "pseudonym_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IngestFile(Base):
    __tablename__ = "ingest_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_pk: Mapped[int] = mapped_column(ForeignKey("delivery_sources.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    log_format: Mapped[str | None] = mapped_column(String(20))
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the bytes as received
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(20), default=IngestState.processing)
    pseudonym_key_id: Mapped[str] = mapped_column(String(32))
    lines: Mapped[int] = mapped_column(BigInteger, default=0)
    records_new: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)  # already ingested (same source + id)
    duplicates_in_file: Mapped[int] = mapped_column(BigInteger, default=0)  # repeated inside this file
    late_records: Mapped[int] = mapped_column(BigInteger, default=0)  # went to a correction batch
    quarantined: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(BigInteger, default=0)  # headers, blank lines
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Queued ingestion (deliveries.ingest_queue): bytes of the upload read so far, the worker run that
    # holds the row (every chunk commit checks it) and when that run last committed, runs started.
    # Server-side defaults only: an insert that does not name them (older code, older revisions' rows)
    # stays valid.
    bytes_read: Mapped[int] = mapped_column(BigInteger, server_default="0")
    claim: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")


class IngestBlobChunk(Base):
    """A queued upload as received, in pieces of up to 1 MiB, until its ingest is final (then deleted)."""

    __tablename__ = "ingest_blob_chunks"

    ingest_file_pk: Mapped[int] = mapped_column(
        ForeignKey("ingest_files.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class BatchTreePiece(Base):
    """A closed batch's tree file (:mod:`trees`) in pieces of up to 1 MiB, written in the close's
    transaction: every host's proofs read the same tree, each keeping a local copy as a cache."""

    __tablename__ = "batch_tree_pieces"

    batch_pk: Mapped[int] = mapped_column(
        ForeignKey("delivery_batches.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class QuarantinedLineRow(Base):
    __tablename__ = "quarantined_lines"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    ingest_file_pk: Mapped[int] = mapped_column(ForeignKey("ingest_files.id", ondelete="CASCADE"), index=True)
    line_number: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[str] = mapped_column(Text)  # IP literals masked, truncated
    # The logged request id when the line has one (duplicates): the duplicate-request fraud signal
    # matches batch records on it.
    request_id: Mapped[str | None] = mapped_column(String(128))


class DeliveryBatch(Base):
    __tablename__ = "delivery_batches"
    __table_args__ = (
        UniqueConstraint("source_pk", "period_start", "kind", "correction_seq", name="uq_batch_slot"),
        Index("ix_delivery_batches_state_period", "state", "period_end"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(66), unique=True)  # bytes32 on chain (see batch_id_for)
    source_pk: Mapped[int] = mapped_column(ForeignKey("delivery_sources.id"), index=True)
    period_start: Mapped[int] = mapped_column(BigInteger)  # unix seconds, inclusive
    period_end: Mapped[int] = mapped_column(BigInteger)  # unix seconds, exclusive
    kind: Mapped[str] = mapped_column(String(20), default=BatchKind.regular)
    correction_seq: Mapped[int] = mapped_column(Integer, default=0)  # 0 regular, 1.. corrections
    corrects_pk: Mapped[int | None] = mapped_column(ForeignKey("delivery_batches.id"))
    state: Mapped[str] = mapped_column(String(24), default=BatchState.open)
    root: Mapped[str | None] = mapped_column(String(66))
    leaf_count: Mapped[int] = mapped_column(BigInteger, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    total_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest_hash: Mapped[str | None] = mapped_column(String(66))
    prev_manifest_hash: Mapped[str | None] = mapped_column(String(66))
    signature: Mapped[str | None] = mapped_column(String(132))
    signer: Mapped[str | None] = mapped_column(String(42))
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    # the signer's nonce of the anchor's transaction, the one ``tx_hash`` replaced (or a reorg took out)
    # while it may still wait, and when ``tx_hash`` was sent: an anchor unmined for
    # TX_REPLACE_AFTER_SECONDS is sent again at that nonce with higher fees (chain/stuck_tx.py)
    tx_nonce: Mapped[int | None] = mapped_column(BigInteger)
    tx_prev_hash: Mapped[str | None] = mapped_column(String(66))
    tx_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    anchored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # an admin's decision that the batch will never anchor (deliveries/batches.py abandon_batch)
    abandoned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    abandoned_by: Mapped[str | None] = mapped_column(String(120))
    abandon_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeliveryRecordRow(Base):
    """One delivered request. ``leaf`` is its Merkle leaf (docs/delivery-leaf.md), fixed at ingest.

    Erasure and retention (edgeledger.compliance) set ``client_pseudonym`` and ``salt`` to NULL, blank
    ``uri`` and stamp ``redacted_at``: the commitment and the leaf values stay, so the roots, this
    record's proof and every other proof stay valid while nobody can link the record to a client.
    """

    __tablename__ = "delivery_records"
    __table_args__ = (
        UniqueConstraint("source_pk", "request_id", name="uq_record_source_request"),
        Index("ix_delivery_records_batch", "batch_pk"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source_pk: Mapped[int] = mapped_column(ForeignKey("delivery_sources.id"))
    batch_pk: Mapped[int] = mapped_column(ForeignKey("delivery_batches.id"))
    ingest_file_pk: Mapped[int] = mapped_column(ForeignKey("ingest_files.id"), index=True)
    line_number: Mapped[int] = mapped_column(BigInteger)
    request_id: Mapped[str] = mapped_column(String(128))  # as logged
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    edge_location: Mapped[str] = mapped_column(String(16))
    country: Mapped[str] = mapped_column(String(2))  # "" unknown
    region: Mapped[str] = mapped_column(String(8))  # pricing region of the country (regions.py)
    host: Mapped[str] = mapped_column(String(255))
    uri: Mapped[str] = mapped_column(Text)
    asset_id: Mapped[int] = mapped_column(BigInteger, default=0)  # 0 = not a registered asset
    merchant_id: Mapped[bytes] = mapped_column(LargeBinary(32))  # keccak256(host)
    bytes_delivered: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[int] = mapped_column(Integer)
    cache_result: Mapped[int] = mapped_column(SmallInteger)
    pseudonym_key_id: Mapped[str] = mapped_column(String(32))
    client_pseudonym: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    salt: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    client_commitment: Mapped[bytes] = mapped_column(LargeBinary(32))
    leaf: Mapped[bytes] = mapped_column(LargeBinary(32))
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)  # by an open or confirmed fraud flag
    redacted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # erased or past retention


class BatchExtraLeaf(Base):
    """A leaf of a batch that is not a delivery record: the compliance log's events (edgeledger.compliance)
    are batched, signed and anchored through this pipeline as the batches of their own source."""

    __tablename__ = "batch_extra_leaves"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    batch_pk: Mapped[int] = mapped_column(ForeignKey("delivery_batches.id"), index=True)
    leaf: Mapped[bytes] = mapped_column(LargeBinary(32))


class FraudFlag(Base):
    """One fraud signal raised on a batch; covers the records in :class:`FraudFlagRecord`."""

    __tablename__ = "fraud_flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_pk: Mapped[int] = mapped_column(ForeignKey("delivery_batches.id"), index=True)
    signal: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(200))  # pseudonym hex, request id, asset id ...
    record_count: Mapped[int] = mapped_column(BigInteger)
    details_json: Mapped[str] = mapped_column(Text, default="{}")
    state: Mapped[str] = mapped_column(String(20), default=FlagState.open, index=True)
    reviewed_by: Mapped[int | None] = mapped_column(Integer)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    review_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FraudFlagRecord(Base):
    __tablename__ = "fraud_flag_records"

    flag_pk: Mapped[int] = mapped_column(ForeignKey("fraud_flags.id", ondelete="CASCADE"), primary_key=True)
    record_pk: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("delivery_records.id"), primary_key=True
    )


class MerchantHost(Base):
    """Which merchant a request host belongs to (records carry keccak256(host) as merchantId)."""

    __tablename__ = "merchant_hosts"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)  # lower case
    merchant_user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MerchantSource(Base):
    """A source a merchant authorises to bill it: only its records for the merchant's hosts are charged.
    Records any other source writes for those hosts (a request's Host is whatever the log says) are not
    billed and are listed in the merchant's statement (settlement/flows.py ``unbillable_records``)."""

    __tablename__ = "merchant_sources"

    merchant_user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id"), primary_key=True)
    source_pk: Mapped[int] = mapped_column(ForeignKey("delivery_sources.id"), primary_key=True)
    authorised_by: Mapped[str] = mapped_column(String(120))  # "user:<id>:<role>"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeliveryReceipt(Base):
    """Anchored, non-excluded deliveries of one batch for one (asset, merchant, region, country): the grain
    settlement prices at (the batch names the source, hence the operator paid)."""

    __tablename__ = "delivery_receipts"
    __table_args__ = (
        UniqueConstraint("batch_pk", "asset_id", "merchant_id", "region", "country", name="uq_receipt_key"),
        Index("ix_delivery_receipts_period", "period_start", "merchant_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_pk: Mapped[int] = mapped_column(ForeignKey("delivery_batches.id"))
    period_start: Mapped[int] = mapped_column(BigInteger)
    period_end: Mapped[int] = mapped_column(BigInteger)
    asset_id: Mapped[int] = mapped_column(BigInteger)
    merchant_id: Mapped[str] = mapped_column(String(66))
    host: Mapped[str] = mapped_column(String(255))
    region: Mapped[str] = mapped_column(String(8))
    country: Mapped[str] = mapped_column(String(2), default="")  # "" unknown
    requests: Mapped[int] = mapped_column(BigInteger)
    bytes_delivered: Mapped[int] = mapped_column(BigInteger)
    excluded_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    excluded_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
