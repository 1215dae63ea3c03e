"""Sources on chain, batch closing, manifest signing, exactly-once anchoring and confirmations.

See docs/anchoring.md for the state machine and the exactly-once argument. In short:

* a source row is a journal: written ("registering") and committed before ``registerSource`` is sent,
  so a retry first asks the chain whether the registration landed;
* a batch closes in one transaction holding its row lock (ingestion checks state "open" under the same
  lock), which fixes its totals and root and runs the fraud signals;
* per source, closed batches are signed and anchored strictly in order; the manifest, its hash and the
  signature are committed (state "anchoring") before the transaction is sent, and every attempt first
  asks the chain ``isAnchored(batchId)``, so a batch is anchored at most once whatever dies when;
* an anchor is one transaction at one nonce, recorded before it leaves, and sent again at that nonce
  bidding more once stuck in the mempool, never above TX_MAX_FEE_PER_GAS_WEI (chain/stuck_tx.py): one
  transaction per nonce is mined, and ``isAnchored`` refuses a second anchor besides;
* ``confirm_anchors`` makes anchored batches final after N confirmations, and sends a batch whose
  transaction a reorg dropped back to "anchoring" (same batch id: still exactly one anchor).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from eth_account import Account
from eth_utils import keccak
from hexbytes import HexBytes
from pydantic import BaseModel, Field
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from edgeledger.chain import stuck_tx
from edgeledger.chain.client import ChainClient, ChainError, ContractRevert
from edgeledger.config import Settings
from edgeledger.db import exclusive_work, utcnow
from edgeledger.deliveries import receipts
from edgeledger.deliveries.batches import close_due_batches, manifest_of, stored_manifest
from edgeledger.deliveries.models import (
    ANCHORED_STATES,
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliverySource,
    SourceKind,
)
from edgeledger.deliveries.service import DeliveryError
from edgeledger.deliveries.sources import chain_source
from edgeledger.ledger.abis import DELIVERY_LEDGER
from edgeledger.ledger.hashing import ZERO32, bytes32, hex32

log = logging.getLogger(__name__)

#: the anchors' noun in their waiting reasons (``anchor_fee_capped``: chain/stuck_tx.py)
WHAT = "anchor"
#: ``waiting``: the anchor was sent and is not mined within TX_TIMEOUT_SECONDS; the next run follows it
ANCHOR_IN_MEMPOOL = stuck_tx.reason(WHAT, stuck_tx.IN_MEMPOOL)
#: Batches waiting in a source's anchoring queue, in queue order.
QUEUE_STATES = (BatchState.closed, BatchState.awaiting_signature, BatchState.anchoring)
#: Reverts after which the stored manifest or signature is useless: the batch goes back to "closed"
#: and is prepared (and signed) again on the next run.
RESIGN_ERRORS = frozenset({"WrongSigner", "PrevManifestMismatch", "ECDSAInvalidSignature"})


# ----------------------------------------------------------------------------------------------
# API schemas
# ----------------------------------------------------------------------------------------------


class SignatureSubmit(BaseModel):
    signature: str = Field(description="65-byte r||s||v signature over the manifest's EIP-712 digest")


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Closing
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------


def ledger_domain(chain: ChainClient) -> tuple[int, str]:
    """(chain id, DeliveryLedger address): the EIP-712 domain's variable part."""
    return chain.chain_id, chain.deployment.address_of(DELIVERY_LEDGER)


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
    # batch id -> why its anchor waits in the mempool or was not sent (``anchor_in_mempool``,
    # ``anchor_fee_capped``, ``anchor_queued_behind:<nonce>``...: chain/stuck_tx.py); a later run goes on
    waiting: dict[str, str] = field(default_factory=dict)
    replaced: list[str] = field(default_factory=list)  # batch ids whose stuck anchor was sent again
    busy_sources: list[str] = field(default_factory=list)  # another worker holds them
    retryable: bool = False  # an RPC failure: worth retrying with backoff

    def as_dict(self) -> dict[str, Any]:
        return {
            "anchored": self.anchored,
            "awaiting_signature": self.awaiting_signature,
            "errors": self.errors,
            "waiting": self.waiting,
            "replaced": self.replaced,
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
            DeliveryBatch.source_pk == source.id, DeliveryBatch.state.in_(sorted(ANCHORED_STATES))
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
    """anchoring -> anchored, sending the anchor transaction only if the chain does not have it yet: one
    transaction at one nonce, the same call bidding more once stuck (chain/stuck_tx.py)."""
    ledger = chain.contract(DELIVERY_LEDGER)
    batch.attempts += 1
    session.commit()
    if chain.call(ledger.functions.isAnchored(bytes32(batch.batch_id))):
        _record_existing_anchor(session, chain, settings, batch, report)
        return
    manifest = stored_manifest(session, batch)
    signature = HexBytes(batch.signature or "0x")

    def call() -> Any:
        return ledger.functions.anchor(manifest.as_tuple(), signature)

    tx_hash = stuck_tx.current_tx(batch, chain, session.commit)  # waiting or mined: never a second
    try:
        if tx_hash is None:
            tx_hash = stuck_tx.send_once(
                batch,
                chain,
                call(),
                what=WHAT,
                max_fee_per_gas=settings.tx_max_fee_per_gas_wei,
                save=session.commit,
            )  # nonce and hash recorded before it leaves
        elif chain.receipt_if_mined(tx_hash) is None:
            replaced = stuck_tx.replace_if_stuck(
                batch,
                chain,
                call,
                what=WHAT,
                max_fee_per_gas=settings.tx_max_fee_per_gas_wei,
                replace_after_seconds=settings.tx_replace_after_seconds,
                save=session.commit,
            )
            if replaced is not None:
                report.replaced.append(batch.batch_id)
                tx_hash = replaced
    except ContractRevert as exc:
        _handle_revert(session, chain, settings, batch, exc, report)
        return
    except stuck_tx.NotSent as exc:
        _wait(session, batch, exc.reason, exc.detail, report)
    try:
        result = chain.wait_for_receipt(tx_hash, replay=call(), sender=chain.signer_address)
    except ContractRevert as exc:
        _handle_revert(session, chain, settings, batch, exc, report)
        return
    except ChainError as exc:
        if exc.code != "chain_timeout":
            raise
        # sent and waiting in the mempool: the next run follows it (and replaces it once stuck)
        _wait(session, batch, ANCHOR_IN_MEMPOOL, exc.message, report)
    _mark_anchored(session, settings, batch, result.tx_hash, result.block_number, report)


def _wait(session: Session, batch: DeliveryBatch, reason: str, detail: str, report: AnchorReport) -> NoReturn:
    """Leaves the anchor as it is for a later run (the source's queue stops here): the reason in the
    run's ``waiting`` and on the batch's row."""
    log.warning("batch %s: anchor waits (%s): %s", batch.batch_id, reason, detail)
    batch.error_code, batch.error_message = reason[:64], detail
    session.commit()
    report.waiting[batch.batch_id] = reason
    raise _StopQueue


def _handle_revert(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    batch: DeliveryBatch,
    exc: ContractRevert,
    report: AnchorReport,
) -> None:
    # Whatever the revert says, if the batch is anchored now, someone's transaction carried it.
    if chain.call(chain.contract(DELIVERY_LEDGER).functions.isAnchored(bytes32(batch.batch_id))):
        _record_existing_anchor(session, chain, settings, batch, report)
        return
    session.rollback()
    # A mined revert spent its nonce (a revert before sending sent nothing): either way no transaction
    # of the batch waits any more, and the next attempt is a new one, at the signer's next nonce, once
    # the cause is fixed (the source reactivated), not the receipt of this one read again.
    batch.tx_hash = batch.tx_prev_hash = None
    if exc.error in RESIGN_ERRORS:
        batch.state = BatchState.closed
        batch.signature = batch.signer = None
    batch.error_code = exc.error[:64]
    batch.error_message = exc.message
    session.commit()
    report.errors[batch.batch_id] = exc.error
    raise _StopQueue


def find_anchor_log(chain: ChainClient, batch_id: str) -> dict[str, Any] | None:
    """The BatchAnchored event of ``batch_id`` (topic filter on the indexed batch id)."""
    ledger = chain.contract(DELIVERY_LEDGER)
    event = ledger.events.BatchAnchored()
    topic0 = keccak(
        text="BatchAnchored(bytes32,bytes32,bytes32,uint64,uint64,uint64,uint128,uint64,bytes32,bytes32,uint8,bytes32)"
    )
    start = chain.deployment.contracts[DELIVERY_LEDGER].block
    logs = chain.get_logs(  # chunked over the range (ChainClient.get_logs)
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
    # The batch's row lock orders this with a fraud flag's review (signals.review_flag): the receipts are
    # computed from the records as any review committed before left them, or the review recomputes them.
    session.execute(select(DeliveryBatch.id).where(DeliveryBatch.id == batch.id).with_for_update())
    if tx_hash != batch.tx_hash:  # another transaction carried it: the row's nonce is not that one's
        batch.tx_nonce = batch.tx_prev_hash = batch.tx_sent_at = None
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
            batch.tx_sent_at = None  # back in a mempool now, if anywhere: its wait starts now
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


# ----------------------------------------------------------------------------------------------
# One pass in-process (CLI `edgeledger anchor`)
# ----------------------------------------------------------------------------------------------


def run_once(
    settings: Settings, *, force_close: bool = False, wait: bool = False, timeout: float = 300.0
) -> dict[str, Any]:
    """Close, anchor and confirm once in this process; with ``wait``, keep confirming until every
    anchored batch is final (or ``timeout`` seconds passed). For operators without a worker, and demos."""
    from edgeledger.chain.client import ChainClient
    from edgeledger.db import make_engine

    engine = make_engine(settings.resolved_database_url)
    chain = ChainClient.from_settings(settings)
    try:
        with Session(engine, expire_on_commit=False) as session:
            closed = close_due_batches(session, settings, force=force_close)
            report = anchor_pending(session, chain, settings)
            final = confirm_anchors(session, chain, settings)["final"]
            deadline = time.monotonic() + timeout
            while (
                wait
                and (report.waiting or _count_in_state(session, BatchState.anchored))
                and time.monotonic() < deadline
            ):
                time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
                if report.waiting:  # anchors in the mempool (or not sent): followed, replaced once stuck
                    again = anchor_pending(session, chain, settings)
                    report.anchored += again.anchored
                    report.replaced += again.replaced
                    report.errors.update(again.errors)
                    report.waiting = again.waiting
                final += confirm_anchors(session, chain, settings)["final"]
            closed_ids = [b.batch_id for b in closed]
            unsigned = list(
                session.scalars(
                    select(DeliveryBatch.batch_id).where(
                        DeliveryBatch.batch_id.in_(closed_ids),
                        DeliveryBatch.state == BatchState.awaiting_signature,
                    )
                )
            )
            return {
                "closed": closed_ids,
                "anchoring": report.as_dict(),
                "final": final,
                "still_anchored": _count_in_state(session, BatchState.anchored),
                # closed now, but waiting for a signature this process cannot give (an edge node's own)
                "awaiting_signature": sorted(unsigned),
            }
    finally:
        engine.dispose()


def _count_in_state(session: Session, state: str) -> int:
    return session.scalar(select(func.count(DeliveryBatch.id)).where(DeliveryBatch.state == state)) or 0
