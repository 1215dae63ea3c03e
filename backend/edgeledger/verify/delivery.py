"""Chain-only verification of delivery proofs and batch exports (``edgeledger verify delivery``).

Trusts nothing but the document's own bytes and a JSON-RPC endpoint: no database, no API, no build
artifacts (the DeliveryLedger ABI is the packaged one, ``ledger.abis``). For every record it

1. recomputes the leaf from the leaf values (docs/delivery-leaf.md) and, for proof documents, checks that
   the human-readable record fields are the ones the leaf commits to;
2. checks the Merkle path locally: a proof against the document's root, or for a batch export every
   value against the dump's tree, whose every inner node is re-hashed up to the root;
3. reads the batch from the chain: ``isAnchored``, ``batchSource`` and ``isBatchRoot`` (the contract keeps
   one storage word per batch, committing to source and root) and the batch's ``BatchAnchored`` event
   (root, period, leaf count, manifest hash; searched in the document's block first, then in the whole
   chain). Root, source, leaf count, period, and - where the document states them - transaction hash and
   block must equal the document's, and the leaf's source must be the batch's;
4. calls ``verifyRecord(batchId, record, proof)`` on chain - for every record of a proof document, and for
   a sample of ``onchain_sample`` records of a batch export (a million ``eth_call`` round trips would
   take hours; the local check in 2. already ties every leaf to the on-chain root).

A batch export is read from its file in bounded memory (``verify.stream``): its tree nodes packed at 32
bytes each, its values read one at a time in a second pass over the file; leaf checks need only the
nodes, a byte per node for "tied to the root" and a byte per node for "tree index used".

Every outcome is a :class:`Check` of the :class:`Report` (a line ``PASS <label>`` or ``FAIL <label>:
<reason>``). :class:`UnusableInput` means the document cannot be used at all (exit code 2),
:class:`Unreachable` that the chain could not be asked (exit code 3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature

from edgeledger.ledger.delivery_leaf import LEAF_TYPES, LeafValues, leaf_hash, leaf_values_from_json
from edgeledger.ledger.hashing import FormatError
from edgeledger.ledger.ids import country_bytes, edge_location_bytes, merchant_id_for, request_key
from edgeledger.ledger.manifest import Manifest
from edgeledger.ledger.merkle import STANDARD_FORMAT, hash_pair, process_proof
from edgeledger.verify.result import Report, UnusableInput
from edgeledger.verify.rpc import AnchoredBatch, LedgerReader
from edgeledger.verify.stream import PackedNodes, StreamedValues, read_document

__all__ = [
    "DEFAULT_ONCHAIN_SAMPLE",
    "EXPORT_FORMAT",
    "PROOFS_FORMAT",
    "PROOF_FORMAT",
    "count_items",
    "load_document",
    "manifest_problems",
    "verify_document",
]

PROOF_FORMAT = "edgeledger-proof/v1"
PROOFS_FORMAT = "edgeledger-proofs/v1"
EXPORT_FORMAT = "edgeledger-batch-export/v1"
#: Records of a batch export checked with an on-chain ``verifyRecord`` call (evenly spread, first and
#: last included); every record is checked locally against the on-chain root either way.
DEFAULT_ONCHAIN_SAMPLE = 16


# ----------------------------------------------------------------------------------------------
# Documents
# ----------------------------------------------------------------------------------------------


def load_document(path: Path) -> dict[str, Any]:
    """The document in ``path``; an export's tree nodes packed and its values left in the file
    (``verify.stream``), so memory does not grow with the export's records."""
    doc: Any = read_document(path)
    if not isinstance(doc, dict) or doc.get("format") not in (PROOF_FORMAT, PROOFS_FORMAT, EXPORT_FORMAT):
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise UnusableInput(
            f"{path}: expected a {PROOF_FORMAT}, {PROOFS_FORMAT} or {EXPORT_FORMAT} document, got {found!r}"
        )
    return doc


def _b32(value: Any, what: str) -> bytes:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 66:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise UnusableInput(f"{what} must be 0x-hex of 32 bytes, got {value!r}")


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnusableInput(f"{what} must be an integer, got {value!r}")
    return value


def _get(mapping: Any, key: str, what: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise UnusableInput(f"{what} has no {key!r}")
    return mapping[key]


@dataclass(frozen=True, slots=True)
class _Claim:
    """What a document says about its batch (compared with the chain)."""

    batch_id: bytes
    source_id: bytes
    root: bytes
    period_start: int
    period_end: int
    leaf_count: int
    tx_hash: str | None = None
    block_number: int | None = None
    manifest_hash: bytes | None = None


def _optional_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _optional_str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UnusableInput(f"{what} must be a string, got {value!r}")
    return value.lower()


def _batch_mismatch(claim: _Claim, onchain: AnchoredBatch | None) -> str | None:
    if onchain is None:
        return f"batch 0x{claim.batch_id.hex()} is not anchored on chain"
    diffs = [
        name
        for name, ours, theirs in (
            ("root", claim.root, onchain.root),
            ("source", claim.source_id, onchain.source_id),
            ("leaf count", claim.leaf_count, onchain.leaf_count),
            ("period start", claim.period_start, onchain.period_start),
            ("period end", claim.period_end, onchain.period_end),
            ("tx hash", claim.tx_hash or onchain.tx_hash, onchain.tx_hash),
            ("block", claim.block_number or onchain.block_number, onchain.block_number),
            ("manifest hash", claim.manifest_hash or onchain.manifest_hash, onchain.manifest_hash),
        )
        if ours != theirs
    ]
    if diffs:
        return f"the document's batch differs from the anchored batch in: {', '.join(diffs)}"
    return None


@dataclass
class _Run:
    ledger: LedgerReader
    report: Report

    def passed(self, label: str) -> None:
        self.report.add(label, True)

    def failed(self, label: str, reason: str) -> None:
        self.report.add(label, False, reason)


# ----------------------------------------------------------------------------------------------
# Proof documents
# ----------------------------------------------------------------------------------------------


def _record_differences(record: Mapping[str, Any], values: LeafValues) -> list[str]:
    """Readable record fields that are not what the leaf values commit to."""
    try:
        expected = {
            "request_id": request_key(str(record["request_id"])) == values.request_id,
            "timestamp_ms": record["timestamp_ms"] == values.timestamp_ms,
            "edge_location": edge_location_bytes(record["edge_location"]) == values.edge_location,
            "country": country_bytes(record["country"]) == values.country,
            "asset_id": record["asset_id"] == values.asset_id,
            "host": merchant_id_for(record["host"]) == values.merchant_id,
            "merchant_id": record["merchant_id"] == "0x" + values.merchant_id.hex(),
            "bytes_delivered": record["bytes_delivered"] == values.bytes_delivered,
            "status": record["status"] == values.status,
            "cache_result": record["cache_result"] == values.cache_result,
            "client_commitment": record["client_commitment"] == "0x" + values.client_commitment.hex(),
        }
    except (KeyError, AttributeError, TypeError, UnicodeError) as exc:
        return [f"unreadable record ({exc})"]
    return [name for name, same in expected.items() if not same]


def _check_proof(run: _Run, proof_doc: Mapping[str, Any], default_label: str) -> None:
    record = proof_doc.get("record") if isinstance(proof_doc, Mapping) else None
    label = str(record.get("request_id")) if isinstance(record, Mapping) else default_label
    batch = _get(proof_doc, "batch", label)
    claim = _Claim(
        batch_id=_b32(_get(batch, "batch_id", "batch"), "batch.batch_id"),
        source_id=_b32(_get(batch, "source_id", "batch"), "batch.source_id"),
        root=_b32(_get(proof_doc, "root", label), "root"),
        period_start=_int(_get(batch, "period_start", "batch"), "batch.period_start"),
        period_end=_int(_get(batch, "period_end", "batch"), "batch.period_end"),
        leaf_count=_int(_get(batch, "leaf_count", "batch"), "batch.leaf_count"),
        tx_hash=_optional_str(proof_doc.get("tx_hash"), "tx_hash"),
        block_number=_optional_int(proof_doc.get("block_number"), "block_number"),
    )
    try:
        values = leaf_values_from_json(_get(proof_doc, "leaf_values", label))
    except ValueError as exc:
        run.failed(label, f"invalid leaf values: {exc}")
        return
    leaf = leaf_hash(values)
    raw_proof = _get(proof_doc, "proof", label)
    if not isinstance(raw_proof, list):
        raise UnusableInput(f"{label}: proof must be a list")
    proof = [_b32(node, f"{label}: proof element") for node in raw_proof]
    reason = None
    differing = _record_differences(record, values) if isinstance(record, Mapping) else ["no record"]
    if differing:
        reason = f"record fields differ from the leaf values: {', '.join(differing)}"
    elif "0x" + leaf.hex() != proof_doc.get("leaf"):
        reason = "the leaf is not the hash of the leaf values"
    elif values.source_id != claim.source_id:
        reason = "the record's source is not the batch's source"
    elif process_proof(leaf, proof) != claim.root:
        reason = "the proof does not lead from the leaf to the root"
    else:
        reason = _batch_mismatch(claim, run.ledger.batch(claim.batch_id, claim.block_number))
    if reason is None:
        run.report.onchain_calls += 1
        if not run.ledger.verify_record(claim.batch_id, values, proof):
            reason = "the contract's verifyRecord returned false"
    if reason is None:
        run.passed(f"{label} (batch 0x{claim.batch_id.hex()}, verifyRecord on chain: true)")
    else:
        run.failed(label, reason)


# ----------------------------------------------------------------------------------------------
# Batch exports
# ----------------------------------------------------------------------------------------------


def _export_claim(doc: Mapping[str, Any]) -> _Claim:
    batch = _get(doc, "batch", "document")
    manifest = _get(batch, "manifest", "batch")
    return _Claim(
        batch_id=_b32(_get(manifest, "batchId", "manifest"), "manifest.batchId"),
        source_id=_b32(_get(manifest, "sourceId", "manifest"), "manifest.sourceId"),
        root=_b32(_get(manifest, "root", "manifest"), "manifest.root"),
        period_start=_int(_get(manifest, "periodStart", "manifest"), "manifest.periodStart"),
        period_end=_int(_get(manifest, "periodEnd", "manifest"), "manifest.periodEnd"),
        leaf_count=_int(_get(manifest, "leafCount", "manifest"), "manifest.leafCount"),
        tx_hash=_optional_str(batch.get("tx_hash"), "batch.tx_hash"),
        block_number=_optional_int(batch.get("block_number"), "batch.block_number"),
        manifest_hash=_b32(batch["manifest_hash"], "batch.manifest_hash")
        if batch.get("manifest_hash")
        else None,
    )


def _path_ok(nodes: PackedNodes, trusted_root: bytes | None) -> bytearray:
    """ok[i] = 1 when node i is tied to ``trusted_root``: every node from i up to the root is the hash of
    its two children (leaves excluded) and the root is the trusted one. One pass, root first."""
    size = len(nodes)
    first_leaf = (size - 1) // 2
    ok = bytearray(size)
    if trusted_root is None or nodes[0] != trusted_root:
        return ok
    for i in range(size):
        if i and not ok[(i - 1) >> 1]:
            continue
        ok[i] = i >= first_leaf or nodes[i] == hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
    return ok


def _sample(count: int, wanted: int) -> set[int]:
    if wanted <= 0 or count == 0:
        return set()
    if wanted >= count:
        return set(range(count))
    if wanted == 1:
        return {0}
    return {round(k * (count - 1) / (wanted - 1)) for k in range(wanted)}


def _proof_from_nodes(nodes: PackedNodes, position: int) -> list[bytes]:
    proof = []
    while position > 0:
        proof.append(nodes[position + 1 if position & 1 else position - 1])
        position = (position - 1) >> 1
    return proof


def manifest_of(batch: Mapping[str, Any]) -> Manifest:
    """The batch's manifest (``ledger.manifest``) from its EIP-712 message in a document."""
    try:
        return Manifest.from_message(_get(batch, "manifest", "batch"))
    except FormatError as exc:
        raise UnusableInput(str(exc)) from None


def manifest_problems(
    batch: Mapping[str, Any], ledger: LedgerReader, onchain: AnchoredBatch | None
) -> list[str]:
    """The manifest's fields must hash to the anchored manifest hash, and its signature recover to the
    stated signer for this chain and contract."""
    problems = []
    manifest = manifest_of(batch)
    if onchain is not None and manifest.struct_hash_bytes() != onchain.manifest_hash:
        problems.append("the manifest's fields do not hash to the anchored manifest hash")
    signature, signer = batch.get("signature"), batch.get("signer")
    if isinstance(signature, str) and isinstance(signer, str):
        digest = manifest.digest_bytes(ledger.chain.chain_id(), ledger.address)
        try:
            raw = bytes.fromhex(signature.removeprefix("0x"))
            v = raw[64] - 27 if len(raw) == 65 and raw[64] >= 27 else -1
            recovered = Signature(raw[:64] + bytes([v])).recover_public_key_from_msg_hash(digest)
            ok = recovered.to_checksum_address().lower() == signer.lower()
        except (ValueError, BadSignature):
            ok = False
        if not ok:
            problems.append("the manifest signature does not recover to the stated signer")
    return problems


def _check_export(
    run: _Run, doc: Mapping[str, Any], onchain_sample: int, progress: Callable[[int], None] | None
) -> None:
    claim = _export_claim(doc)
    tree = _get(doc, "tree", "document")
    if _get(tree, "format", "tree") != STANDARD_FORMAT or list(_get(tree, "leafEncoding", "tree")) != list(
        LEAF_TYPES
    ):
        raise UnusableInput(f"tree must be an OpenZeppelin {STANDARD_FORMAT} dump over {list(LEAF_TYPES)}")
    raw_nodes, raw_values = _get(tree, "tree", "tree"), _get(tree, "values", "tree")
    if (
        not isinstance(raw_nodes, list | PackedNodes)
        or not isinstance(raw_values, list | StreamedValues)
        or not raw_nodes
    ):
        raise UnusableInput("tree.tree and tree.values must be lists (the tree non-empty)")
    if isinstance(raw_nodes, PackedNodes):
        nodes = raw_nodes
    else:
        nodes = PackedNodes()
        for pos, node in enumerate(raw_nodes):
            nodes.append(_b32(node, f"tree.tree[{pos}]"))
    size, n = len(nodes), len(raw_values)
    batch_label = f"batch 0x{claim.batch_id.hex()}"

    onchain = run.ledger.batch(claim.batch_id, claim.block_number)
    problems = []
    mismatch = _batch_mismatch(claim, onchain)
    if mismatch:
        problems.append(mismatch)
    if size != 2 * n - 1:
        problems.append(f"the tree has {size} nodes, {n} values need {2 * n - 1}")
    if nodes[0] != claim.root:
        problems.append("the dump's tree root is not the manifest's root")
    if onchain is not None and onchain.leaf_count != n:
        problems.append(f"{n} values, the anchored batch has {onchain.leaf_count} leaves")
    problems += manifest_problems(_get(doc, "batch", "document"), run.ledger, onchain)
    if problems:
        run.failed(batch_label, "; ".join(problems))
    else:
        run.passed(f"{batch_label} (manifest, signature, root, source, period and leaf count as anchored)")

    trusted_root = onchain.root if onchain is not None else None
    ok = _path_ok(nodes, trusted_root) if size % 2 == 1 else bytearray(size)
    first_leaf = (size - 1) // 2
    sampled = _sample(n, onchain_sample)
    seen = bytearray(size)
    for j, entry in enumerate(raw_values):
        t = entry.get("treeIndex") if isinstance(entry, Mapping) else None
        label = f"leaf {j}" + (f" (tree index {t})" if isinstance(t, int) else "")
        reason = _leaf_problem(entry, t, nodes, first_leaf, seen, ok, claim, onchain)
        if reason is None and j in sampled:
            assert isinstance(t, int)
            values = leaf_values_from_json(entry["value"])
            run.report.onchain_calls += 1
            if run.ledger.verify_record(claim.batch_id, values, _proof_from_nodes(nodes, t)):
                label += ", verifyRecord on chain: true"
            else:
                reason = "the contract's verifyRecord returned false"
        if reason is None:
            run.passed(label)
        else:
            run.failed(label, reason)
        if progress is not None:
            progress(1)


def _leaf_problem(
    entry: Any,
    t: Any,
    nodes: PackedNodes,
    first_leaf: int,
    seen: bytearray,
    ok: bytearray,
    claim: _Claim,
    onchain: AnchoredBatch | None,
) -> str | None:
    """Why one dump value is not proven against the on-chain root, or None."""
    if type(t) is not int or not first_leaf <= t < len(nodes):
        return f"treeIndex {t!r} is not a leaf position"
    if seen[t]:
        return f"tree index {t} is used by another value"
    seen[t] = 1
    try:
        values = leaf_values_from_json(entry.get("value"))
    except ValueError as exc:
        return f"invalid leaf values: {exc}"
    if leaf_hash(values) != nodes[t]:
        return f"the values do not hash to tree node {t}"
    if onchain is None:
        return f"batch 0x{claim.batch_id.hex()} is not anchored on chain"
    if values.source_id != onchain.source_id:
        return "the record's source is not the anchored batch's source"
    if not ok[t]:
        return "the tree path from this leaf does not lead to the anchored root"
    return None


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def count_items(doc: Mapping[str, Any]) -> int:
    """Records a document holds (for a progress bar)."""
    if doc.get("format") == EXPORT_FORMAT:
        values = doc.get("tree", {}).get("values") if isinstance(doc.get("tree"), Mapping) else None
        return len(values) if isinstance(values, list | StreamedValues) else 0
    if doc.get("format") == PROOFS_FORMAT:
        proofs = doc.get("proofs")
        return len(proofs) if isinstance(proofs, list) else 0
    return 1


def verify_document(
    doc: Mapping[str, Any],
    ledger: LedgerReader,
    *,
    onchain_sample: int = DEFAULT_ONCHAIN_SAMPLE,
    report: Report | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Check every record of ``doc`` (a proof, proofs or export document) against ``ledger``.

    Raises :class:`UnusableInput` for a malformed document or a document of another chain, and
    :class:`Unreachable` when the RPC fails.
    """
    run = _Run(ledger, report if report is not None else Report())
    claimed_chain = doc.get("chain_id")
    if claimed_chain is not None and claimed_chain != ledger.chain.chain_id():
        raise UnusableInput(
            f"the document is for chain {claimed_chain}, the RPC serves chain {ledger.chain.chain_id()}"
        )
    fmt = doc.get("format")
    if fmt == PROOF_FORMAT:
        _check_proof(run, doc, "record")
    elif fmt == PROOFS_FORMAT:
        proofs = _get(doc, "proofs", "document")
        if not isinstance(proofs, list) or not proofs:
            raise UnusableInput("proofs must be a non-empty list")
        for pos, item in enumerate(proofs):
            _check_proof(run, item, f"proofs[{pos}]")
            if progress is not None:
                progress(1)
    elif fmt == EXPORT_FORMAT:
        _check_export(run, doc, onchain_sample, progress)
    else:
        raise UnusableInput(f"unknown document format {fmt!r}")
    return run.report
