"""Chain-only verification of a compliance event proof (``edgeledger verify event``).

Trusts only the proof document (``GET /compliance/events/{id}/proof``) and a JSON-RPC endpoint: the leaf
is recomputed from the event's fields (ledger/compliance_leaf.py), the Merkle path is checked against the
document's root, the batch must be anchored on chain with that root, and ``DeliveryLedger.verifyLeaf``
must accept the leaf. No database, API or build artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeledger.ledger.compliance_leaf import event_leaf
from edgeledger.ledger.merkle import process_proof
from edgeledger.verify.result import Check, UnusableInput
from edgeledger.verify.rpc import LedgerReader

PROOF_FORMAT = "edgeledger-compliance-proof/v1"


def _b32(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise UnusableInput(f"{what} is not 0x + 64 hex digits")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise UnusableInput(f"{what} is not hex") from None


def recomputed_leaf(event: Mapping[str, Any]) -> bytes:
    try:
        return event_leaf(
            _b32(event["event_id"], "event.event_id"),
            int(event["occurred_at_ms"]),
            str(event["actor"]),
            str(event["action"]),
            str(event["subject"]),
            str(event["legal_basis"]),
            dict(event["detail"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UnusableInput(f"the event is incomplete or malformed: {exc}") from None


def verify_event_proof(document: Mapping[str, Any], ledger: LedgerReader) -> list[Check]:
    """Every check of one event proof, in order; any failure means the event is not proven."""
    if document.get("format") != PROOF_FORMAT:
        raise UnusableInput(f"not a {PROOF_FORMAT} document")
    event = document.get("event")
    if not isinstance(event, Mapping):
        raise UnusableInput("the document has no event")
    leaf = recomputed_leaf(event)
    stated = _b32(document.get("leaf"), "leaf")
    root = _b32(document.get("root"), "root")
    batch_id = _b32(document.get("batch_id"), "batch_id")
    proof = [_b32(node, "proof node") for node in document.get("proof", [])]
    checks = [
        Check("leaf", leaf == stated, "recomputed from the event's fields" if leaf == stated else "differs"),
    ]
    local_root = process_proof(leaf, proof)
    checks.append(
        Check(
            "merkle path",
            local_root == root,
            "reaches the stated root" if local_root == root else "wrong root",
        )
    )
    onchain = ledger.batch(batch_id)
    if onchain is None:
        checks.append(Check("anchored", False, f"batch 0x{batch_id.hex()} is not anchored on chain"))
        return checks
    same_root = onchain.root == root
    checks.append(Check("anchored", same_root, f"tx {onchain.tx_hash}, block {onchain.block_number}"))
    source = document.get("source_id")
    if source is not None:
        same_source = onchain.source_id == _b32(source, "source_id")
        checks.append(
            Check("source", same_source, "the compliance log's source" if same_source else "another source")
        )
    on_chain_ok = ledger.verify_leaf(batch_id, leaf, proof)
    checks.append(Check("verifyLeaf", on_chain_ok, "DeliveryLedger.verifyLeaf on chain"))
    return checks
