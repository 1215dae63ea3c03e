"""Sources on chain, batch closing, manifest signing, exactly-once anchoring and confirmations.

See docs/anchoring.md for the state machine and the exactly-once argument. In short:

* a source row is a journal: written ("registering") and committed before ``registerSource`` is sent,
  so a retry first asks the chain whether the registration landed;
* a batch closes in one transaction holding its row lock (ingestion checks state "open" under the same
  lock), which fixes its totals and root and runs the fraud signals;
* per source, closed batches are signed and anchored strictly in order; the manifest, its hash and the
  signature are committed (state "anchoring") before the transaction is sent, and every attempt first
  asks the chain ``isAnchored(batchId)``, so a batch is anchored at most once whatever dies when;
* ``confirm_anchors`` makes anchored batches final after N confirmations, and sends a batch whose
  transaction a reorg dropped back to "anchoring" (same batch id: still exactly one anchor).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_address, keccak, to_checksum_address
from hexbytes import HexBytes
from pydantic import BaseModel, Field
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session
from web3.exceptions import TransactionNotFound

from edgeledger.auth.models import User
from edgeledger.chain.client import ChainClient, ChainError, ContractRevert
from edgeledger.config import Settings
from edgeledger.db import exclusive_work, utcnow
from edgeledger.deliveries import receipts, signals, trees
from edgeledger.deliveries.models import (
    BatchExtraLeaf,
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    SourceKind,
    SourceStatus,
)
from edgeledger.deliveries.service import KIND_CODES, DeliveryError, bytes32, hex32, source_id_for
from edgeledger.territories import UnknownTerritoryError, decode_territories, encode_territories

log = logging.getLogger(__name__)

LEDGER = "DeliveryLedger"
ZERO32 = "0x" + "00" * 32
PROVIDERS = ("cloudfront", "cloudflare", "fastly", "edgeledger")
CHAIN_KIND = {SourceKind.edge_node: 0, SourceKind.cdn_provider: 1}
CHAIN_STATUS = {0: SourceStatus.active, 1: SourceStatus.suspended}
#: Correction batches close this long after they opened at most (or sooner with a shorter late window).
CORRECTION_MAX_OPEN_SECONDS = 3600
#: Batches waiting in a source's anchoring queue, in queue order.
QUEUE_STATES = (BatchState.closed, BatchState.awaiting_signature, BatchState.anchoring)
ANCHORED_STATES = (BatchState.anchored, BatchState.final)
#: Reverts after which the stored manifest or signature is useless: the batch goes back to "closed"
#: and is prepared (and signed) again on the next run.
RESIGN_ERRORS = frozenset({"WrongSigner", "PrevManifestMismatch", "ECDSAInvalidSignature"})

DOMAIN_NAME = "EdgeLedger DeliveryLedger"
DOMAIN_VERSION = "1"
MANIFEST_FIELDS: tuple[tuple[str, str], ...] = (
    ("sourceId", "bytes32"),
    ("batchId", "bytes32"),
    ("periodStart", "uint64"),
    ("periodEnd", "uint64"),
    ("root", "bytes32"),
    ("leafCount", "uint64"),
    ("totalBytes", "uint128"),
    ("totalRequests", "uint64"),
    ("prevManifestHash", "bytes32"),
    ("kind", "uint8"),
    ("corrects", "bytes32"),
)
EIP712_DOMAIN_FIELDS = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
)


# ----------------------------------------------------------------------------------------------
# API schemas
# ----------------------------------------------------------------------------------------------


class SourceCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    kind: SourceKind
    provider: Literal["cloudfront", "cloudflare", "fastly", "edgeledger"]
    operator: str | None = Field(None, description="Payout address; CDN providers default to the platform")
    signer: str | None = Field(None, description="Edge nodes: the node's manifest key (required)")
    regions: list[str] = Field(min_length=1, description="ISO 3166-1 alpha-2 codes served, or *")
    jurisdiction: str = Field(min_length=2, max_length=2)
    node_ips: list[str] = Field(default_factory=list)
    operator_user_id: int | None = None


class SourceRead(BaseModel):
    id: int
    source_id: str
    name: str
    kind: str
    provider: str
    operator: str
    signer: str
    regions: list[str]
    jurisdiction: str
    node_ips: list[str]
    operator_user_id: int | None
    status: str
    tx_hash: str | None
    block_number: int | None


class SignerRotation(BaseModel):
    signer: str


class BatchRead(BaseModel):
    id: int
    batch_id: str
    source: str
    source_id: str
    kind: str
    correction_seq: int
    corrects: str | None
    period_start: int
    period_end: int
    state: str
    leaf_count: int
    total_requests: int
    total_bytes: int
    root: str | None
    manifest_hash: str | None
    prev_manifest_hash: str | None
    signer: str | None
    tx_hash: str | None
    block_number: int | None
    confirmations: int | None
    attempts: int
    error_code: str | None
    error_message: str | None
    closed_at: datetime | None
    anchored_at: datetime | None
    finalized_at: datetime | None


class CloseRequest(BaseModel):
    force: bool = Field(
        False, description="Close every open batch now, ignoring the late window (demos and tests only)"
    )
    anchor_now: bool = Field(False, description="Also anchor and confirm in this request (no worker)")


class SignatureSubmit(BaseModel):
    signature: str = Field(description="65-byte r||s||v signature over the manifest's EIP-712 digest")


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


def _address(value: str, what: str) -> str:
    if not is_address(value):
        raise DeliveryError(f"{what} {value!r} is not an address", code="invalid_address", field=what)
    address = to_checksum_address(value)
    if int(address, 16) == 0:
        raise DeliveryError(f"{what} must not be the zero address", code="invalid_address", field=what)
    return address


def regions_bitmap(codes: list[str]) -> int:
    try:
        bitmap = encode_territories(codes)
    except UnknownTerritoryError as exc:
        raise DeliveryError(str(exc), code="unknown_region", codes=exc.codes) from None
    if bitmap == 0:
        raise DeliveryError("name at least one region", code="unknown_region", codes=codes)
    return bitmap


def _node_ips(values: list[str]) -> list[str]:
    try:
        return [str(ipaddress.ip_address(v.strip())) for v in values]
    except ValueError as exc:
        raise DeliveryError(str(exc), code="invalid_node_ip") from None


def ingest_signer_address(settings: Settings) -> str:
    key = settings.resolved_ingest_signer_key
    if key is None:
        raise DeliveryError(
            "no ingest key configured (INGEST_SIGNER_PRIVATE_KEY or SIGNER_PRIVATE_KEY)",
            code="ingest_key_missing",
            status=503,
        )
    return Account.from_key(key.get_secret_value()).address


def source_read(source: DeliverySource) -> SourceRead:
    return SourceRead(
        id=source.id,
        source_id=source.source_id,
        name=source.name,
        kind=source.kind,
        provider=source.provider,
        operator=source.operator,
        signer=source.signer,
        regions=decode_territories(int(source.regions_bitmap, 16)),
        jurisdiction=source.jurisdiction,
        node_ips=json.loads(source.node_ips_json),
        operator_user_id=source.operator_user_id,
        status=source.status,
        tx_hash=source.tx_hash,
        block_number=source.block_number,
    )


def register_source(
    session: Session, chain: ChainClient, settings: Settings, params: SourceCreate
) -> DeliverySource:
    """Journal the source, register it on chain, mark it active. Re-posting a source stuck in
    "registering" with the same name resumes it (see :func:`finish_registration`)."""
    if params.operator_user_id is not None and session.get(User, params.operator_user_id) is None:
        raise DeliveryError(
            f"no user {params.operator_user_id}", code="unknown_user", user_id=params.operator_user_id
        )
    existing = session.scalar(select(DeliverySource).where(DeliverySource.name == params.name))
    if existing is not None:
        if existing.status != SourceStatus.registering:
            raise DeliveryError(
                f"source {params.name!r} already exists",
                code="source_exists",
                status=409,
                source=existing.name,
            )
        return finish_registration(session, chain, existing)
    source = _new_source_row(settings, params)
    session.add(source)
    session.commit()  # the journal entry: a crash from here on is resumed by finish_registration
    return finish_registration(session, chain, source)


def _new_source_row(settings: Settings, params: SourceCreate) -> DeliverySource:
    jurisdiction = params.jurisdiction.upper()
    if not (jurisdiction.isascii() and jurisdiction.isalpha()):
        raise DeliveryError("jurisdiction must be an ISO 3166-1 alpha-2 code", code="invalid_jurisdiction")
    if params.kind == SourceKind.edge_node:
        if params.signer is None or params.operator is None:
            raise DeliveryError("edge nodes need an operator and a signer address", code="signer_required")
        signer = _address(params.signer, "signer")
        operator = _address(params.operator, "operator")
    else:
        # CDN provider manifests are signed with the platform's ingest key.
        signer = _address(params.signer, "signer") if params.signer else ingest_signer_address(settings)
        operator = _address(params.operator, "operator") if params.operator else signer
    return DeliverySource(
        source_id=source_id_for(params.name),
        name=params.name,
        kind=params.kind,
        provider=params.provider,
        operator=operator,
        signer=signer,
        regions_bitmap=hex(regions_bitmap(params.regions)),
        jurisdiction=jurisdiction,
        node_ips_json=json.dumps(_node_ips(params.node_ips)),
        operator_user_id=params.operator_user_id,
        status=SourceStatus.registering,
    )


def chain_source(chain: ChainClient, source_id: str) -> dict[str, Any] | None:
    """``getSource`` as a dict, or None when the chain does not know the source."""
    try:
        raw = chain.call(chain.contract(LEDGER).functions.getSource(bytes32(source_id)))
    except ContractRevert as exc:
        if exc.error == "UnknownSource":
            return None
        raise
    signer, index, batch_count, kind, status, last, operator, jurisdiction, regions = raw
    return {
        "signer": to_checksum_address(signer),
        "index": index,
        "batch_count": batch_count,
        "kind": kind,
        "status": CHAIN_STATUS[status],
        "last_manifest_hash": hex32(bytes(last)),
        "operator": to_checksum_address(operator),
        "jurisdiction": bytes(jurisdiction).decode("ascii"),
        "regions": regions,
    }


def finish_registration(session: Session, chain: ChainClient, source: DeliverySource) -> DeliverySource:
    """Completes a "registering" source: if the chain already has it (an earlier attempt landed), just
    mark it active; otherwise send ``registerSource`` and wait for it."""
    on_chain = chain_source(chain, source.source_id)
    if on_chain is None:
        fn = chain.contract(LEDGER).functions.registerSource(
            bytes32(source.source_id),
            CHAIN_KIND[SourceKind(source.kind)],
            source.operator,
            source.signer,
            int(source.regions_bitmap, 16),
            source.jurisdiction.encode("ascii"),
        )
        result = chain.transact(fn)
        source.tx_hash, source.block_number = result.tx_hash, result.block_number
    else:
        source.signer = on_chain["signer"]
        source.status = on_chain["status"]
    if source.status == SourceStatus.registering:
        source.status = SourceStatus.active
    session.commit()
    return source


def set_source_status(
    session: Session, chain: ChainClient, source: DeliverySource, target: SourceStatus
) -> DeliverySource:
    """Suspend or reactivate: on chain first, then the database (which mirrors the chain)."""
    if source.status == SourceStatus.registering:
        raise DeliveryError("the source is still registering", code="source_registering", status=409)
    on_chain = chain_source(chain, source.source_id)
    current = on_chain["status"] if on_chain else source.status
    if current != target:
        ledger = chain.contract(LEDGER).functions
        fn = ledger.suspendSource if target == SourceStatus.suspended else ledger.reactivateSource
        try:
            chain.transact(fn(bytes32(source.source_id)))
        except ContractRevert as exc:
            raise DeliveryError(
                exc.message, code="invalid_source_status", status=409, error=exc.error
            ) from exc
    source.status = target
    session.commit()
    return source


def sync_source(session: Session, chain: ChainClient, source: DeliverySource) -> DeliverySource:
    """Re-reads signer, operator and status from the chain (after a rotation done with the node's wallet)."""
    on_chain = chain_source(chain, source.source_id)
    if on_chain is None:
        if source.status == SourceStatus.registering:
            return source
        raise DeliveryError("the chain does not know this source", code="source_not_on_chain", status=409)
    source.signer = on_chain["signer"]
    source.operator = on_chain["operator"]
    source.status = on_chain["status"]
    session.commit()
    return source


def rotate_provider_signer(
    session: Session, chain: ChainClient, source: DeliverySource, signer: str
) -> DeliverySource:
    """CDN providers only: the platform (NODE_ADMIN_ROLE) moves the source to a new ingest key."""
    if source.kind != SourceKind.cdn_provider:
        raise DeliveryError(
            "edge-node signers are rotated by the node's operator with rotateSigner from its own wallet, "
            "then POST /deliveries/sources/{ref}/sync",
            code="rotation_not_allowed",
            status=409,
        )
    new = _address(signer, "signer")
    try:
        chain.transact(chain.contract(LEDGER).functions.rotateSigner(bytes32(source.source_id), new))
    except ContractRevert as exc:
        raise DeliveryError(exc.message, code="rotation_rejected", status=409, error=exc.error) from exc
    return sync_source(session, chain, source)


# ----------------------------------------------------------------------------------------------
# Closing
# ----------------------------------------------------------------------------------------------


def _unix(now: datetime | int | None) -> int:
    if now is None:
        return int(datetime.now(UTC).timestamp())
    return int(now.timestamp()) if isinstance(now, datetime) else int(now)


def due_batch_ids(session: Session, settings: Settings, now: int, *, force: bool = False) -> list[int]:
    """Open batches to close: regular ones whose period ended a late window ago, corrections open for
    min(late window, 1 h); with ``force`` every open batch."""
    query = select(DeliveryBatch.id).where(DeliveryBatch.state == BatchState.open)
    if not force:
        late = settings.delivery_late_window_seconds
        correction_cutoff = datetime.fromtimestamp(now - min(late, CORRECTION_MAX_OPEN_SECONDS), UTC)
        regular_due = (DeliveryBatch.kind == BatchKind.regular) & (DeliveryBatch.period_end + late <= now)
        correction_due = (DeliveryBatch.kind == BatchKind.correction) & (
            DeliveryBatch.created_at <= correction_cutoff
        )
        query = query.where(regular_due | correction_due)
    return list(session.scalars(query.order_by(DeliveryBatch.period_start, DeliveryBatch.id)))


def close_due_batches(
    session: Session, settings: Settings, now: datetime | int | None = None, *, force: bool = False
) -> list[DeliveryBatch]:
    """Closes every due batch (see :func:`due_batch_ids`). ``force=True`` ignores the late window:
    records of those periods that arrive later go to correction batches. For demos and tests."""
    closed = []
    for batch_pk in due_batch_ids(session, settings, _unix(now), force=force):
        batch = close_batch(session, settings, batch_pk)
        if batch is not None:
            closed.append(batch)
    return closed


def close_batch(session: Session, settings: Settings, batch_pk: int) -> DeliveryBatch | None:
    """Closes one batch in one transaction under its row lock: totals, tree, root, fraud signals.
    None when someone else closed it first."""
    # Write before reading: on SQLite FOR UPDATE is a no-op and reads run outside a transaction, so the
    # UPDATE is what takes the database's write lock; an ingest chunk then cannot commit records into
    # this batch between the count below and the close (they would be missing from the tree). On
    # PostgreSQL it takes the row lock FOR UPDATE would.
    session.execute(
        update(DeliveryBatch)
        .where(DeliveryBatch.id == batch_pk, DeliveryBatch.state == BatchState.open)
        .values(updated_at=utcnow())
    )
    batch = session.scalar(select(DeliveryBatch).where(DeliveryBatch.id == batch_pk).with_for_update())
    if batch is None or batch.state != BatchState.open:
        session.rollback()
        return None
    count, total_bytes = session.execute(
        select(
            func.count(DeliveryRecordRow.id), func.coalesce(func.sum(DeliveryRecordRow.bytes_delivered), 0)
        ).where(DeliveryRecordRow.batch_pk == batch.id)
    ).one()
    extra = session.scalar(select(func.count(BatchExtraLeaf.id)).where(BatchExtraLeaf.batch_pk == batch.id))
    batch.total_requests = int(count)
    batch.leaf_count = int(count) + int(extra or 0)
    batch.total_bytes = int(total_bytes)
    batch.closed_at = utcnow()
    if batch.leaf_count == 0:
        batch.state = BatchState.empty  # nothing to anchor (the contract refuses empty batches)
    else:
        tree = trees.build_batch_tree(session, settings, batch)
        batch.root = hex32(tree.root)
        batch.state = BatchState.closed
        signals.flag_batch(session, settings, batch)
    session.commit()
    log.info("closed batch %s (%s, %d leaves)", batch.batch_id, batch.state, batch.leaf_count)
    return batch


# ----------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """DeliveryLedger.Manifest; bytes32 fields as 0x-hex."""

    source_id: str
    batch_id: str
    period_start: int
    period_end: int
    root: str
    leaf_count: int
    total_bytes: int
    total_requests: int
    prev_manifest_hash: str
    kind: int
    corrects: str

    def message(self) -> dict[str, Any]:
        """The EIP-712 message (field names as in Solidity)."""
        return dict(zip([name for name, _ in MANIFEST_FIELDS], self.values(), strict=True))

    def values(self) -> tuple[Any, ...]:
        return (
            self.source_id,
            self.batch_id,
            self.period_start,
            self.period_end,
            self.root,
            self.leaf_count,
            self.total_bytes,
            self.total_requests,
            self.prev_manifest_hash,
            self.kind,
            self.corrects,
        )

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple for ``anchor``/``manifestDigest`` (bytes32 as bytes)."""
        return tuple(
            bytes32(v) if t == "bytes32" else v
            for v, (_, t) in zip(self.values(), MANIFEST_FIELDS, strict=True)
        )

    def struct_hash(self) -> str:
        """``hashStruct(Manifest)``: the manifest hash the chain links on."""
        return hex32(bytes(self._signable(1, "0x" + "11" * 20).body))

    def typed_data(self, chain_id: int, contract: str) -> dict[str, Any]:
        return {
            "types": {
                "EIP712Domain": [{"name": n, "type": t} for n, t in EIP712_DOMAIN_FIELDS],
                "Manifest": [{"name": n, "type": t} for n, t in MANIFEST_FIELDS],
            },
            "primaryType": "Manifest",
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": to_checksum_address(contract),
            },
            "message": self.message(),
        }

    def _signable(self, chain_id: int, contract: str) -> SignableMessage:
        return encode_typed_data(full_message=self.typed_data(chain_id, contract))

    def digest(self, chain_id: int, contract: str) -> str:
        """The EIP-712 digest the signer signs (``manifestDigest`` on chain)."""
        signable = self._signable(chain_id, contract)
        return hex32(keccak(b"\x19" + signable.version + signable.header + signable.body))

    def sign(self, private_key: str, chain_id: int, contract: str) -> str:
        signed = Account.sign_typed_data(private_key, full_message=self.typed_data(chain_id, contract))
        return "0x" + bytes(signed.signature).hex()

    def recover(self, signature: str, chain_id: int, contract: str) -> str:
        return Account.recover_message(self._signable(chain_id, contract), signature=HexBytes(signature))


def manifest_of(session: Session, batch: DeliveryBatch, prev_manifest_hash: str) -> Manifest:
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None and batch.root is not None
    corrects = ZERO32
    if batch.kind == BatchKind.correction and batch.corrects_pk is not None:
        corrected = session.get(DeliveryBatch, batch.corrects_pk)
        assert corrected is not None
        corrects = corrected.batch_id
    return Manifest(
        source_id=source.source_id,
        batch_id=batch.batch_id,
        period_start=batch.period_start,
        period_end=batch.period_end,
        root=batch.root,
        leaf_count=batch.leaf_count,
        total_bytes=batch.total_bytes,
        total_requests=batch.total_requests,
        prev_manifest_hash=prev_manifest_hash,
        kind=KIND_CODES[batch.kind],
        corrects=corrects,
    )


def stored_manifest(session: Session, batch: DeliveryBatch) -> Manifest:
    """The manifest prepared for a batch (409 ``manifest_not_ready`` before it was prepared)."""
    if batch.prev_manifest_hash is None or batch.root is None:
        raise DeliveryError(
            f"batch {batch.batch_id} has no manifest yet (state {batch.state})",
            code="manifest_not_ready",
            status=409,
            state=batch.state,
        )
    return manifest_of(session, batch, batch.prev_manifest_hash)


def ledger_domain(chain: ChainClient) -> tuple[int, str]:
    """(chain id, DeliveryLedger address): the EIP-712 domain's variable part."""
    return chain.chain_id, chain.deployment.address_of(LEDGER)


def submit_signature(
    session: Session, chain: ChainClient, batch: DeliveryBatch, signature: str
) -> DeliveryBatch:
    """Stores an edge node's own signature for a batch waiting for it, after checking that it recovers
    to the source's current signer on chain."""
    if batch.state != BatchState.awaiting_signature:
        raise DeliveryError(
            f"batch {batch.batch_id} is not waiting for a signature (state {batch.state})",
            code="not_awaiting_signature",
            status=409,
        )
    try:
        raw = HexBytes(signature)
    except ValueError:
        raise DeliveryError("the signature is not hex", code="invalid_signature") from None
    if len(raw) != 65:
        raise DeliveryError("the signature must be 65 bytes (r, s, v)", code="invalid_signature")
    manifest = stored_manifest(session, batch)
    chain_id, contract = ledger_domain(chain)
    try:
        recovered = manifest.recover(raw.to_0x_hex(), chain_id, contract)
    except Exception as exc:  # eth_keys raises several types for malformed r/s/v
        raise DeliveryError(f"the signature does not recover: {exc}", code="invalid_signature") from None
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    on_chain = chain_source(chain, source.source_id)
    expected = on_chain["signer"] if on_chain else source.signer
    if recovered != expected:
        raise DeliveryError(
            f"the signature recovers to {recovered}, the source's signer is {expected}",
            code="wrong_signer",
            recovered=recovered,
            expected=expected,
        )
    batch.signature = raw.to_0x_hex()
    batch.signer = recovered
    batch.manifest_hash = manifest.struct_hash()
    batch.state = BatchState.anchoring
    batch.error_code = batch.error_message = None
    session.commit()
    return batch


def _node_key(settings: Settings, source: DeliverySource) -> str | None:
    """The private key the platform holds for a source's signer, if any."""
    if source.kind == SourceKind.cdn_provider:
        key = settings.resolved_ingest_signer_key
        return key.get_secret_value() if key else None
    if settings.node_keys_file is None or not Path(settings.node_keys_file).is_file():
        return None
    keys = json.loads(Path(settings.node_keys_file).read_text())
    value = keys.get(source.name)
    return str(value) if value else None


# ----------------------------------------------------------------------------------------------
# Anchoring
# ----------------------------------------------------------------------------------------------


@dataclass
class AnchorReport:
    anchored: list[str] = field(default_factory=list)  # batch ids
    awaiting_signature: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # batch id -> error code
    busy_sources: list[str] = field(default_factory=list)  # another worker holds them
    retryable: bool = False  # an RPC failure: worth retrying with backoff

    def as_dict(self) -> dict[str, Any]:
        return {
            "anchored": self.anchored,
            "awaiting_signature": self.awaiting_signature,
            "errors": self.errors,
            "busy_sources": self.busy_sources,
            "retryable": self.retryable,
        }


class _StopQueue(Exception):
    """The source's queue cannot advance past this batch in this run."""


def is_retryable(exc: BaseException) -> bool:
    """Transport trouble (RPC down, timeouts) rather than a decision of the contract."""
    return isinstance(exc, ChainError) and not isinstance(exc, ContractRevert)


def sources_with_pending(session: Session) -> list[int]:
    query = select(DeliveryBatch.source_pk).where(DeliveryBatch.state.in_(list(QUEUE_STATES))).distinct()
    return sorted(session.scalars(query))


def anchor_pending(
    session: Session, chain: ChainClient, settings: Settings, source_pk: int | None = None
) -> AnchorReport:
    """Anchors the queues of every source with pending batches (or of one source)."""
    report = AnchorReport()
    for pk in [source_pk] if source_pk is not None else sources_with_pending(session):
        anchor_source(session, chain, settings, pk, report)
    return report


@contextmanager
def _source_lock(session: Session, settings: Settings, source_pk: int) -> Iterator[bool]:
    """Serialises anchoring per source across workers; yields False when another worker holds it."""
    lock_dir = Path(settings.data_dir) / "locks"
    with exclusive_work(session, lock_dir, "anchor-source", source_pk) as locked:
        yield locked


def source_queue(session: Session, source_pk: int) -> list[DeliveryBatch]:
    """Pending batches of a source in anchoring order: period, regular before corrections, sequence."""
    regular_first = case((DeliveryBatch.kind == BatchKind.regular, 0), else_=1)
    query = (
        select(DeliveryBatch)
        .where(DeliveryBatch.source_pk == source_pk, DeliveryBatch.state.in_(list(QUEUE_STATES)))
        .order_by(DeliveryBatch.period_start, regular_first, DeliveryBatch.correction_seq)
    )
    return list(session.scalars(query))


def anchor_source(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    source_pk: int,
    report: AnchorReport | None = None,
) -> AnchorReport:
    report = report if report is not None else AnchorReport()
    source = session.get(DeliverySource, source_pk)
    if source is None:
        return report
    with _source_lock(session, settings, source_pk) as locked:
        if not locked:
            report.busy_sources.append(source.name)
            return report
        for batch in source_queue(session, source_pk):
            try:
                _advance(session, chain, settings, source, batch, report)
            except _StopQueue:
                break
            except ChainError as exc:
                _record_error(session, batch, exc, report)
                break
    return report


def _record_error(session: Session, batch: DeliveryBatch, exc: ChainError, report: AnchorReport) -> None:
    session.rollback()
    code = exc.error if isinstance(exc, ContractRevert) else exc.code
    batch.error_code = code[:64]
    batch.error_message = exc.message
    session.commit()
    report.errors[batch.batch_id] = code
    report.retryable = report.retryable or is_retryable(exc)
    log.warning("anchoring batch %s stopped: %s: %s", batch.batch_id, code, exc.message)


def _advance(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    source: DeliverySource,
    batch: DeliveryBatch,
    report: AnchorReport,
) -> None:
    if batch.state in (BatchState.closed, BatchState.awaiting_signature):
        # Prepared again on every run: the platform may hold the node's key by now (NODE_KEYS_FILE).
        _prepare(session, chain, settings, source, batch, report)
    if batch.state == BatchState.awaiting_signature:
        report.awaiting_signature.append(batch.batch_id)
        raise _StopQueue
    _submit(session, chain, settings, source, batch, report)


def _fail(session: Session, batch: DeliveryBatch, code: str, message: str, report: AnchorReport) -> NoReturn:
    batch.error_code, batch.error_message = code, message
    session.commit()
    report.errors[batch.batch_id] = code
    raise _StopQueue


def _db_chain_head(session: Session, source: DeliverySource) -> str | None:
    """Manifest hash of the source's last anchored batch as the database sees it: the one anchored
    manifest that no anchored manifest links back to. None when that is ambiguous."""
    rows = session.execute(
        select(DeliveryBatch.manifest_hash, DeliveryBatch.prev_manifest_hash).where(
            DeliveryBatch.source_pk == source.id, DeliveryBatch.state.in_(list(ANCHORED_STATES))
        )
    ).all()
    heads = {m for m, _ in rows} - {p for _, p in rows}
    if not rows:
        return ZERO32
    return heads.pop() if len(heads) == 1 else None


def _prepare(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    source: DeliverySource,
    batch: DeliveryBatch,
    report: AnchorReport,
) -> None:
    """closed -> anchoring (signed by a key the platform holds) or awaiting_signature (edge node signs)."""
    on_chain = chain_source(chain, source.source_id)
    if on_chain is None:
        _fail(
            session, batch, "source_not_on_chain", f"source {source.name} is not registered on chain", report
        )
        return
    chain_head = on_chain["last_manifest_hash"]
    db_head = _db_chain_head(session, source)
    if db_head != chain_head:
        # Signing on top of a head we cannot account for would fork the off-chain view of the chain.
        _fail(
            session,
            batch,
            "prev_manifest_mismatch",
            f"chain head {chain_head} differs from the database's last anchored manifest {db_head}",
            report,
        )
    manifest = manifest_of(session, batch, chain_head)
    batch.prev_manifest_hash = chain_head
    batch.manifest_hash = manifest.struct_hash()
    key = _node_key(settings, source)
    signer = on_chain["signer"]
    if key is not None and Account.from_key(key).address != signer:
        if source.kind == SourceKind.cdn_provider:
            _fail(
                session, batch, "ingest_key_not_signer", f"the ingest key does not sign for {signer}", report
            )
        key = None  # the node rotated to a key the platform does not hold: the node signs itself
    if key is None:
        batch.state = BatchState.awaiting_signature
        batch.signature = batch.signer = None
        session.commit()
        return
    chain_id, contract = ledger_domain(chain)
    batch.signature = manifest.sign(key, chain_id, contract)
    batch.signer = signer
    batch.state = BatchState.anchoring
    session.commit()  # manifest and signature are durable before anything is sent


def _submit(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    source: DeliverySource,
    batch: DeliveryBatch,
    report: AnchorReport,
) -> None:
    """anchoring -> anchored, sending the anchor transaction only if the chain does not have it yet."""
    ledger = chain.contract(LEDGER)
    batch.attempts += 1
    session.commit()
    if chain.call(ledger.functions.isAnchored(bytes32(batch.batch_id))):
        _record_existing_anchor(session, chain, settings, batch, report)
        return
    if batch.tx_hash is not None and _still_pending(chain, batch.tx_hash):
        tx_hash = batch.tx_hash  # sent before and still in the mempool: wait for it, do not resend
    else:
        manifest = stored_manifest(session, batch)
        assert batch.signature is not None
        fn = ledger.functions.anchor(manifest.as_tuple(), HexBytes(batch.signature))
        try:
            tx_hash = chain.send(fn)
        except ContractRevert as exc:
            _handle_revert(session, chain, settings, batch, exc, report)
            return
        batch.tx_hash = tx_hash
        session.commit()
    replay = ledger.functions.anchor(
        stored_manifest(session, batch).as_tuple(), HexBytes(batch.signature or "0x")
    )
    try:
        result = chain.wait_for_receipt(tx_hash, replay=replay, sender=chain.signer_address)
    except ContractRevert as exc:
        _handle_revert(session, chain, settings, batch, exc, report)
        return
    _mark_anchored(session, settings, batch, result.tx_hash, result.block_number, report)


def _still_pending(chain: ChainClient, tx_hash: str) -> bool:
    with chain.rpc("eth_getTransactionByHash"):
        try:
            chain.w3.eth.get_transaction(HexBytes(tx_hash))
        except TransactionNotFound:  # dropped (or never broadcast)
            return False
    return True


def _handle_revert(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    batch: DeliveryBatch,
    exc: ContractRevert,
    report: AnchorReport,
) -> None:
    # Whatever the revert says, if the batch is anchored now, someone's transaction carried it.
    if chain.call(chain.contract(LEDGER).functions.isAnchored(bytes32(batch.batch_id))):
        _record_existing_anchor(session, chain, settings, batch, report)
        return
    session.rollback()
    if exc.error in RESIGN_ERRORS:
        batch.state = BatchState.closed
        batch.signature = batch.signer = batch.tx_hash = None
    batch.error_code = exc.error[:64]
    batch.error_message = exc.message
    session.commit()
    report.errors[batch.batch_id] = exc.error
    raise _StopQueue


def find_anchor_log(chain: ChainClient, batch_id: str) -> dict[str, Any] | None:
    """The BatchAnchored event of ``batch_id`` (topic filter on the indexed batch id)."""
    ledger = chain.contract(LEDGER)
    event = ledger.events.BatchAnchored()
    topic0 = keccak(
        text="BatchAnchored(bytes32,bytes32,bytes32,uint64,uint64,uint64,uint128,uint64,bytes32,bytes32,uint8,bytes32)"
    )
    start = chain.deployment.contracts[LEDGER].block
    with chain.rpc("eth_getLogs"):
        logs = chain.w3.eth.get_logs(
            {
                "address": ledger.address,
                "fromBlock": start,
                "toBlock": "latest",
                "topics": ["0x" + topic0.hex(), None, batch_id],
            }
        )
    if not logs:
        return None
    entry = event.process_log(logs[-1])
    return {
        "tx_hash": entry["transactionHash"].to_0x_hex(),
        "block_number": entry["blockNumber"],
        "manifest_hash": hex32(bytes(entry["args"]["manifestHash"])),
    }


def _record_existing_anchor(
    session: Session, chain: ChainClient, settings: Settings, batch: DeliveryBatch, report: AnchorReport
) -> None:
    found = find_anchor_log(chain, batch.batch_id)
    if found is None:
        # isAnchored said yes but the node cannot serve the log yet; try again next run.
        _fail(session, batch, "anchor_log_missing", "anchored on chain, event not found yet", report)
        return
    if batch.manifest_hash is not None and found["manifest_hash"] != batch.manifest_hash:
        _fail(
            session,
            batch,
            "foreign_anchor",
            f"batch id anchored with manifest {found['manifest_hash']}, ours is {batch.manifest_hash}",
            report,
        )
    _mark_anchored(session, settings, batch, found["tx_hash"], found["block_number"], report)


def _mark_anchored(
    session: Session, settings: Settings, batch: DeliveryBatch, tx_hash: str, block: int, report: AnchorReport
) -> None:
    batch.tx_hash, batch.block_number = tx_hash, block
    batch.state = BatchState.anchored
    batch.anchored_at = utcnow()
    batch.error_code = batch.error_message = None
    receipts.compute_receipts(session, batch)
    session.commit()
    report.anchored.append(batch.batch_id)
    log.info("anchored batch %s in block %d (tx %s)", batch.batch_id, block, tx_hash)


# ----------------------------------------------------------------------------------------------
# Confirmations
# ----------------------------------------------------------------------------------------------


def confirm_anchors(session: Session, chain: ChainClient, settings: Settings) -> dict[str, list[str]]:
    """anchored -> final after CHAIN_CONFIRMATIONS; a batch whose transaction a reorg dropped goes back
    to "anchoring" (the next anchor run re-checks isAnchored and resends if needed)."""
    outcome: dict[str, list[str]] = {"final": [], "reanchor": [], "moved": []}
    batches = session.scalars(select(DeliveryBatch).where(DeliveryBatch.state == BatchState.anchored)).all()
    for batch in batches:
        assert batch.tx_hash is not None and batch.block_number is not None
        receipt = chain.receipt_if_mined(batch.tx_hash)
        if receipt is None or receipt["status"] != 1:
            # tx_hash stays: if the reorg put the transaction back in the mempool, the next anchor run
            # waits for it instead of sending another one (and resends only if it is gone).
            batch.state = BatchState.anchoring
            batch.block_number = batch.anchored_at = None
            session.commit()
            outcome["reanchor"].append(batch.batch_id)
            continue
        if receipt["blockNumber"] != batch.block_number:  # re-included in another block by a reorg
            batch.block_number = receipt["blockNumber"]
            outcome["moved"].append(batch.batch_id)
        if chain.confirmations_of(batch.block_number) >= settings.chain_confirmations:
            batch.state = BatchState.final
            batch.finalized_at = utcnow()
            outcome["final"].append(batch.batch_id)
        session.commit()
    return outcome


# ----------------------------------------------------------------------------------------------
# Reads
# ----------------------------------------------------------------------------------------------


def batch_read(session: Session, batch: DeliveryBatch, head: int | None) -> BatchRead:
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    corrects = None
    if batch.corrects_pk is not None:
        corrected = session.get(DeliveryBatch, batch.corrects_pk)
        corrects = corrected.batch_id if corrected else None
    confirmations = None
    if head is not None and batch.block_number is not None:
        confirmations = max(0, head - batch.block_number + 1)
    return BatchRead(
        id=batch.id,
        batch_id=batch.batch_id,
        source=source.name,
        source_id=source.source_id,
        kind=batch.kind,
        correction_seq=batch.correction_seq,
        corrects=corrects,
        period_start=batch.period_start,
        period_end=batch.period_end,
        state=batch.state,
        leaf_count=batch.leaf_count,
        total_requests=batch.total_requests,
        total_bytes=batch.total_bytes,
        root=batch.root,
        manifest_hash=batch.manifest_hash,
        prev_manifest_hash=batch.prev_manifest_hash,
        signer=batch.signer,
        tx_hash=batch.tx_hash,
        block_number=batch.block_number,
        confirmations=confirmations,
        attempts=batch.attempts,
        error_code=batch.error_code,
        error_message=batch.error_message,
        closed_at=batch.closed_at,
        anchored_at=batch.anchored_at,
        finalized_at=batch.finalized_at,
    )


def chain_head_or_none(chain: ChainClient) -> int | None:
    """The chain's block number for confirmation counts; None while the RPC is down (reads still work)."""
    try:
        return chain.block_number()
    except ChainError:
        return None


def list_batches(
    session: Session,
    *,
    source: str | None = None,
    state: str | None = None,
    period_start: int | None = None,
    limit: int = 500,
) -> list[DeliveryBatch]:
    query = select(DeliveryBatch)
    if source is not None:
        column = DeliverySource.source_id if source.startswith("0x") else DeliverySource.name
        pk = session.scalar(select(DeliverySource.id).where(column == source))
        query = query.where(DeliveryBatch.source_pk == (pk if pk is not None else -1))
    if state is not None:
        query = query.where(DeliveryBatch.state == state)
    if period_start is not None:
        query = query.where(DeliveryBatch.period_start == period_start)
    query = query.order_by(DeliveryBatch.period_start.desc(), DeliveryBatch.id.desc()).limit(limit)
    return list(session.scalars(query))


# ----------------------------------------------------------------------------------------------
# One pass in-process (CLI `edgeledger anchor`)
# ----------------------------------------------------------------------------------------------


def run_once(
    settings: Settings, *, force_close: bool = False, wait: bool = False, timeout: float = 300.0
) -> dict[str, Any]:
    """Close, anchor and confirm once in this process; with ``wait``, keep confirming until every
    anchored batch is final (or ``timeout`` seconds passed). For operators without a worker, and demos."""
    from edgeledger.db import make_engine
    from edgeledger.main import make_chain_client

    engine = make_engine(settings.resolved_database_url)
    chain = make_chain_client(settings)
    try:
        with Session(engine, expire_on_commit=False) as session:
            closed = close_due_batches(session, settings, force=force_close)
            report = anchor_pending(session, chain, settings)
            final = confirm_anchors(session, chain, settings)["final"]
            deadline = time.monotonic() + timeout
            while wait and _count_in_state(session, BatchState.anchored) and time.monotonic() < deadline:
                time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
                final += confirm_anchors(session, chain, settings)["final"]
            return {
                "closed": [b.batch_id for b in closed],
                "anchoring": report.as_dict(),
                "final": final,
                "still_anchored": _count_in_state(session, BatchState.anchored),
            }
    finally:
        engine.dispose()


def _count_in_state(session: Session, state: str) -> int:
    return session.scalar(select(func.count(DeliveryBatch.id)).where(DeliveryBatch.state == state)) or 0
