"""Delivery fixtures built directly (no ingestion or anchoring module): sources registered on the real
chain, records with real leaves, closed batches with tree files, and batches anchored with a manifest
signed here.

Typical use::

    chain = ChainClient.from_settings(settings)
    signer = Account.create()
    with Session(engine) as session:
        source = register_source(session, chain, "cdn-a", provider="cloudfront", signer=signer.address)
        batches = add_records(session, settings, source, parse_sample("cloudfront.log"))
        for batch in batches:
            close_batch(session, settings, batch)
            anchor_batch(session, chain, batch, signer)
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.deliveries import parsers, receipts, trees
from edgeledger.deliveries.models import (
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    IngestFile,
    IngestState,
    MerchantHost,
    MerchantSource,
    SourceKind,
    SourceStatus,
)
from edgeledger.deliveries.records import DeliveryRecord, Pseudonymiser
from edgeledger.deliveries.service import KIND_CODES, leaf_values_of, period_bounds
from edgeledger.ledger.delivery_leaf import leaf_hash
from edgeledger.ledger.hashing import bytes32, hex32, keccak256
from edgeledger.ledger.ids import batch_id_for, client_commitment, merchant_id_for, source_id_for
from edgeledger.ledger.manifest import MANIFEST_FIELDS as MANIFEST_TYPES

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "logs"
ZERO32 = b"\0" * 32


def fixture_pseudonymiser() -> Pseudonymiser:
    return Pseudonymiser(secrets.token_bytes(32), "test-key")


def parse_sample(name: str, log_format: str | None = None) -> list[DeliveryRecord]:
    """The records of one file of tests/backend/samples/logs (quarantined lines dropped)."""
    items = parsers.parse_log(SAMPLES / name, pseudonymiser=fixture_pseudonymiser(), log_format=log_format)
    return [item for item in items if isinstance(item, DeliveryRecord)]


def sample_lines(name: str) -> list[str]:
    """The physical lines of a sample file (without line ends)."""
    return (SAMPLES / name).read_text(encoding="utf-8").splitlines()


def register_source(
    session: Session,
    chain: ChainClient,
    name: str,
    *,
    provider: str,
    signer: str,
    kind: SourceKind = SourceKind.cdn_provider,
    operator_user_id: int | None = None,
    regions: int = 1,
    jurisdiction: str = "DE",
) -> DeliverySource:
    """An active source, registered on chain by the server signer (NODE_ADMIN_ROLE)."""
    source = DeliverySource(
        source_id=source_id_for(name),
        name=name,
        kind=kind,
        provider=provider,
        operator=chain.signer_address,
        signer=signer,
        regions_bitmap=hex(regions),
        jurisdiction=jurisdiction,
        operator_user_id=operator_user_id,
        status=SourceStatus.active,
    )
    ledger = chain.contract("DeliveryLedger")
    result = chain.transact(
        ledger.functions.registerSource(
            bytes32(source.source_id),
            0 if kind == SourceKind.edge_node else 1,
            chain.signer_address,
            signer,
            regions,
            jurisdiction.encode("ascii"),
        )
    )
    source.tx_hash, source.block_number = result.tx_hash, result.block_number
    session.add(source)
    session.commit()
    return source


def add_merchant_host(session: Session, host: str, merchant_user_id: int) -> None:
    session.add(MerchantHost(host=host.lower(), merchant_user_id=merchant_user_id))
    session.commit()


def authorise_source(session: Session, merchant_user_id: int, source: DeliverySource) -> None:
    """The merchant lets ``source`` bill it (only authorised sources' records are charged)."""
    session.add(MerchantSource(merchant_user_id=merchant_user_id, source_pk=source.id, authorised_by="test"))
    session.commit()


def _batch_for(
    session: Session, settings: Settings, source: DeliverySource, timestamp_ms: int, late: bool = False
) -> DeliveryBatch:
    start, end = period_bounds(timestamp_ms, settings.delivery_period_seconds)
    batch = session.scalar(
        select(DeliveryBatch).where(
            DeliveryBatch.source_pk == source.id,
            DeliveryBatch.period_start == start,
            DeliveryBatch.kind == BatchKind.regular,
        )
    )
    if late and batch is not None and batch.state != BatchState.open:
        return _correction_for(session, batch)
    if batch is None:
        batch = DeliveryBatch(
            batch_id=batch_id_for(source.source_id, start, end, BatchKind.regular, 0),
            source_pk=source.id,
            period_start=start,
            period_end=end,
            kind=BatchKind.regular,
            correction_seq=0,
            state=BatchState.open,
        )
        session.add(batch)
        session.flush()
    return batch


def _correction_for(session: Session, regular: DeliveryBatch) -> DeliveryBatch:
    """The open correction batch of a closed regular batch's period (the next one when the latest is no
    longer open), as ingest files late records."""
    latest = session.scalar(
        select(DeliveryBatch)
        .where(
            DeliveryBatch.source_pk == regular.source_pk,
            DeliveryBatch.period_start == regular.period_start,
            DeliveryBatch.kind == BatchKind.correction,
        )
        .order_by(DeliveryBatch.correction_seq.desc())
        .limit(1)
    )
    if latest is not None and latest.state == BatchState.open:
        return latest
    seq = (latest.correction_seq if latest is not None else 0) + 1
    source = session.get(DeliverySource, regular.source_pk)
    assert source is not None
    batch = DeliveryBatch(
        batch_id=batch_id_for(
            source.source_id, regular.period_start, regular.period_end, BatchKind.correction, seq
        ),
        source_pk=source.id,
        period_start=regular.period_start,
        period_end=regular.period_end,
        kind=BatchKind.correction,
        correction_seq=seq,
        corrects_pk=regular.id,
        state=BatchState.open,
    )
    session.add(batch)
    session.flush()
    return batch


def add_records(
    session: Session,
    settings: Settings,
    source: DeliverySource,
    records: Iterable[DeliveryRecord],
    *,
    asset_id: int = 0,
    region: str = "EU",
    late: bool = False,
) -> list[DeliveryBatch]:
    """Store ``records`` with real leaves, each in the open regular batch of its period (created on
    demand; ``late``: in the period's open correction batch once the regular one is closed, as ingest
    files records that arrive late); returns the batches touched, in order of first use."""
    ingest = IngestFile(
        source_pk=source.id,
        name="fixture.log",
        state=IngestState.done,
        pseudonym_key_id="test-key",
    )
    session.add(ingest)
    session.flush()
    touched: dict[int, DeliveryBatch] = {}
    for number, record in enumerate(records, start=1):
        batch = _batch_for(session, settings, source, record.timestamp_ms, late)
        touched.setdefault(batch.id, batch)
        salt = secrets.token_bytes(32)
        row = DeliveryRecordRow(
            source_pk=source.id,
            batch_pk=batch.id,
            ingest_file_pk=ingest.id,
            line_number=number,
            request_id=record.request_id,
            timestamp_ms=record.timestamp_ms,
            edge_location=record.edge_location,
            country=record.country,
            region=region,
            host=record.host,
            uri=record.uri,
            asset_id=asset_id,
            merchant_id=merchant_id_for(record.host),
            bytes_delivered=record.bytes_delivered,
            status=record.status,
            cache_result=int(record.cache_result),
            pseudonym_key_id="test-key",
            client_pseudonym=record.client_pseudonym,
            salt=salt,
            client_commitment=client_commitment(salt, record.client_pseudonym),
        )
        row.leaf = leaf_hash(leaf_values_of(source.source_id, row))
        session.add(row)
    session.commit()
    return list(touched.values())


def close_batch(session: Session, settings: Settings, batch: DeliveryBatch) -> DeliveryBatch:
    """Fix the batch's root and totals and write its tree file (state closed)."""
    tree = trees.build_batch_tree(session, settings, batch)
    rows = session.scalars(
        select(DeliveryRecordRow.bytes_delivered).where(DeliveryRecordRow.batch_pk == batch.id)
    ).all()
    batch.root = hex32(tree.root)
    batch.leaf_count = len(rows)
    batch.total_requests = len(rows)
    batch.total_bytes = sum(rows)
    batch.state = BatchState.closed
    batch.closed_at = utcnow()
    session.commit()
    return batch


@dataclass(frozen=True)
class Anchored:
    manifest: dict[str, Any]
    manifest_hash: str
    signature: str
    tx_hash: str
    block_number: int


def manifest_of(session: Session, batch: DeliveryBatch, prev_manifest_hash: bytes) -> dict[str, Any]:
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None and batch.root is not None
    corrected = session.get(DeliveryBatch, batch.corrects_pk) if batch.corrects_pk is not None else None
    return {
        "sourceId": bytes32(source.source_id),
        "batchId": bytes32(batch.batch_id),
        "periodStart": batch.period_start,
        "periodEnd": batch.period_end,
        "root": bytes32(batch.root),
        "leafCount": batch.leaf_count,
        "totalBytes": batch.total_bytes,
        "totalRequests": batch.total_requests,
        "prevManifestHash": prev_manifest_hash,
        "kind": KIND_CODES[batch.kind],
        "corrects": bytes32(corrected.batch_id) if corrected is not None else ZERO32,
    }


def sign_manifest(manifest: dict[str, Any], signer: LocalAccount, chain_id: int, contract: str) -> str:
    """EIP-712 signature of a manifest (domain "EdgeLedger DeliveryLedger", version "1")."""
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Manifest": [{"name": n, "type": t} for n, t in MANIFEST_TYPES],
        },
        "primaryType": "Manifest",
        "domain": {
            "name": "EdgeLedger DeliveryLedger",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": contract,
        },
        "message": manifest,
    }
    signed = Account.sign_typed_data(signer.key, full_message=typed)
    return "0x" + bytes(signed.signature).hex()


def typed_digest(manifest: dict[str, Any], chain_id: int, contract: str) -> bytes:
    """The EIP-712 digest computed here (compared with the contract's manifestDigest by callers)."""
    type_string = "Manifest(" + ",".join(f"{t} {n}" for n, t in MANIFEST_TYPES) + ")"
    words = b"".join(
        v if isinstance(v, bytes) else int(v).to_bytes(32) for v in (manifest[n] for n, _ in MANIFEST_TYPES)
    )
    struct_hash = keccak256(keccak256(type_string.encode()) + words)
    domain_type = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    domain = keccak256(
        keccak256(domain_type.encode())
        + keccak256(b"EdgeLedger DeliveryLedger")
        + keccak256(b"1")
        + chain_id.to_bytes(32)
        + bytes.fromhex(contract[2:]).rjust(32, b"\0")
    )
    return keccak256(b"\x19\x01" + domain + struct_hash)


def anchor_batch(
    session: Session, chain: ChainClient, batch: DeliveryBatch, signer: LocalAccount
) -> Anchored:
    """Sign the closed batch's manifest with ``signer`` (the source's signer), anchor it with the server
    signer (ANCHORER_ROLE), and mark the row anchored."""
    ledger = chain.contract("DeliveryLedger")
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    on_chain_source = chain.call(ledger.functions.getSource(bytes32(source.source_id)))
    prev = bytes(on_chain_source[5])  # lastManifestHash
    manifest = manifest_of(session, batch, prev)
    as_tuple = tuple(manifest[n] for n, _ in MANIFEST_TYPES)
    chain_id = chain.chain_id
    digest = bytes(chain.call(ledger.functions.manifestDigest(as_tuple)))
    if digest != typed_digest(manifest, chain_id, ledger.address):
        raise AssertionError("the contract's manifestDigest differs from the EIP-712 digest computed here")
    signature = sign_manifest(manifest, signer, chain_id, ledger.address)
    result = chain.transact(ledger.functions.anchor(as_tuple, HexBytes(signature)))
    manifest_hash = hex32(bytes(chain.call(ledger.functions.manifestHash(as_tuple))))
    batch.manifest_hash = manifest_hash
    batch.prev_manifest_hash = hex32(prev)
    batch.signature = signature
    batch.signer = signer.address
    batch.tx_hash = result.tx_hash
    batch.block_number = result.block_number
    batch.state = BatchState.anchored
    batch.anchored_at = utcnow()
    receipts.compute_receipts(session, batch)  # as anchoring does when it marks a batch anchored
    session.commit()
    return Anchored(manifest, manifest_hash, signature, result.tx_hash, result.block_number)


def close_and_anchor(
    session: Session,
    settings: Settings,
    chain: ChainClient,
    batches: Sequence[DeliveryBatch],
    signer: LocalAccount,
) -> None:
    for batch in sorted(batches, key=lambda b: b.period_start):
        close_batch(session, settings, batch)
        anchor_batch(session, chain, batch, signer)
