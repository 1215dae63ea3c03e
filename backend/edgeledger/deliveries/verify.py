"""Chain-only verification of delivery proofs and batch exports (``edgeledger verify-delivery``).

Trusts nothing but the document's own bytes and a JSON-RPC endpoint: no database, no API, no build
artifacts (the few ``DeliveryLedger`` functions it calls are declared here). For every record it

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

Every outcome is a line ``PASS <label>`` or ``FAIL <label>: <reason>``. :class:`UnusableInput` means the
document or the RPC cannot be used at all (exit code 2 in the CLI).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_keys import keys
from eth_keys.exceptions import BadSignature
from web3 import Web3
from web3.exceptions import Web3Exception

from edgeledger.deliveries.leaf import (
    LEAF_SOLIDITY_NAMES,
    LEAF_TYPES,
    LeafValues,
    keccak256,
    leaf_hash,
    leaf_values_from_json,
)
from edgeledger.deliveries.merkle import STANDARD_FORMAT, hash_pair, process_proof

__all__ = [
    "DEFAULT_ONCHAIN_SAMPLE",
    "Ledger",
    "OnchainBatch",
    "Summary",
    "UnusableInput",
    "contract_from_deployment",
    "load_document",
    "verify_document",
]

PROOF_FORMAT = "edgeledger-proof/v1"
PROOFS_FORMAT = "edgeledger-proofs/v1"
EXPORT_FORMAT = "edgeledger-batch-export/v1"
#: Records of a batch export checked with an on-chain ``verifyRecord`` call (evenly spread, first and
#: last included); every record is checked locally against the on-chain root either way.
DEFAULT_ONCHAIN_SAMPLE = 16

#: BatchAnchored(bytes32 indexed sourceId, bytes32 indexed batchId, bytes32 indexed root, ...data)
BATCH_ANCHORED_TOPIC = keccak256(
    b"BatchAnchored(bytes32,bytes32,bytes32,uint64,uint64,uint64,uint128,uint64,bytes32,bytes32,uint8,bytes32)"
)
SOURCE_REGISTERED_TOPIC = keccak256(b"SourceRegistered(bytes32,uint8,address,address,uint256,bytes2,address)")
SIGNER_ROTATED_TOPIC = keccak256(b"SignerRotated(bytes32,address,address,address)")
MANIFEST_TYPE = (
    b"Manifest(bytes32 sourceId,bytes32 batchId,uint64 periodStart,uint64 periodEnd,bytes32 root,"
    b"uint64 leafCount,uint128 totalBytes,uint64 totalRequests,bytes32 prevManifestHash,uint8 kind,"
    b"bytes32 corrects)"
)
MANIFEST_FIELDS = (
    "sourceId",
    "batchId",
    "periodStart",
    "periodEnd",
    "root",
    "leafCount",
    "totalBytes",
    "totalRequests",
    "prevManifestHash",
    "kind",
    "corrects",
)
_EIP712_DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
_EVENT_DATA_TYPES = [
    "uint64",
    "uint64",
    "uint64",
    "uint128",
    "uint64",
    "bytes32",
    "bytes32",
    "uint8",
    "bytes32",
]
_RECORD_COMPONENTS = [
    {"name": name, "type": type_} for name, type_ in zip(LEAF_SOLIDITY_NAMES, LEAF_TYPES, strict=True)
]
#: The DeliveryLedger views this verifier calls (same signatures as contracts/DeliveryLedger.sol).
LEDGER_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "isAnchored",
        "stateMutability": "view",
        "inputs": [{"name": "batchId", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "batchSource",
        "stateMutability": "view",
        "inputs": [{"name": "batchId", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "bytes32"}],
    },
    {
        "type": "function",
        "name": "isBatchRoot",
        "stateMutability": "view",
        "inputs": [{"name": "batchId", "type": "bytes32"}, {"name": "root", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "verifyRecord",
        "stateMutability": "view",
        "inputs": [
            {"name": "batchId", "type": "bytes32"},
            {"name": "r", "type": "tuple", "components": _RECORD_COMPONENTS},
            {"name": "proof", "type": "bytes32[]"},
        ],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "verifyLeaf",
        "stateMutability": "view",
        "inputs": [
            {"name": "batchId", "type": "bytes32"},
            {"name": "leaf", "type": "bytes32"},
            {"name": "proof", "type": "bytes32[]"},
        ],
        "outputs": [{"name": "", "type": "bool"}],
    },
]


class UnusableInput(Exception):
    """The document cannot be read as a proof or export, or the chain cannot be asked (exit code 2)."""


@dataclass(frozen=True, slots=True)
class OnchainBatch:
    """An anchored batch as the chain has it: its storage word (source, root) and its BatchAnchored event."""

    source_id: bytes
    root: bytes
    period_start: int
    period_end: int
    leaf_count: int
    kind: int
    manifest_hash: bytes
    tx_hash: str
    block_number: int
    #: position of the BatchAnchored event in its block (orders it against signer rotations)
    log_index: int = 0


@dataclass(slots=True)
class Summary:
    passed: int = 0
    failed: int = 0
    onchain_calls: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0


# ----------------------------------------------------------------------------------------------
# Chain access
# ----------------------------------------------------------------------------------------------


def contract_from_deployment(path: Path) -> str:
    """The DeliveryLedger address of a deployment file (``scripts/deploy.py`` writes it)."""
    try:
        raw = json.loads(path.read_text())
        return str(raw["contracts"]["DeliveryLedger"]["address"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnusableInput(f"{path}: no DeliveryLedger address in the deployment file ({exc})") from None


class Ledger:
    """The DeliveryLedger views, over plain JSON-RPC. RPC failures raise :class:`UnusableInput`."""

    def __init__(self, rpc_url: str, address: str, *, timeout: float = 30.0) -> None:
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        if not Web3.is_address(address):
            raise UnusableInput(f"{address!r} is not a contract address")
        self.address = Web3.to_checksum_address(address)
        self.contract = self.w3.eth.contract(address=self.address, abi=LEDGER_ABI)
        self._batches: dict[bytes, OnchainBatch | None] = {}

    def _ask(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (requests.RequestException, Web3Exception, OSError, ValueError) as exc:
            raise UnusableInput(f"the chain RPC at {self.rpc_url} failed ({what}): {exc}") from None

    def chain_id(self) -> int:
        return int(self._ask("eth_chainId", lambda: self.w3.eth.chain_id))

    def check_code(self) -> None:
        code = self._ask("eth_getCode", lambda: self.w3.eth.get_code(self.address))
        if not code:
            raise UnusableInput(f"no contract at {self.address} on the chain at {self.rpc_url}")

    def batch(self, batch_id: bytes, block_hint: int | None = None) -> OnchainBatch | None:
        """The anchored batch, or None when the id was never anchored. ``block_hint`` (the document's block)
        is searched for the BatchAnchored event first; the whole chain after it."""
        if batch_id not in self._batches:
            fns = self.contract.functions
            if not self._ask("isAnchored", fns.isAnchored(batch_id).call):
                self._batches[batch_id] = None
            else:
                event = self._anchored_event(batch_id, block_hint)
                source_id = bytes(self._ask("batchSource", fns.batchSource(batch_id).call))
                root = bytes(event["topics"][3])
                # The event and the storage word must agree (they are written by the same call).
                if bytes(event["topics"][1]) != source_id or not self._ask(
                    "isBatchRoot", fns.isBatchRoot(batch_id, root).call
                ):
                    raise UnusableInput(f"the BatchAnchored event of 0x{batch_id.hex()} contradicts storage")
                start, end, leaves, _, _, manifest_hash, _, kind, _ = abi_decode(
                    _EVENT_DATA_TYPES, bytes(event["data"])
                )
                self._batches[batch_id] = OnchainBatch(
                    source_id=source_id,
                    root=root,
                    period_start=start,
                    period_end=end,
                    leaf_count=leaves,
                    kind=kind,
                    manifest_hash=manifest_hash,
                    tx_hash="0x" + bytes(event["transactionHash"]).hex(),
                    block_number=int(event["blockNumber"]),
                    log_index=int(event["logIndex"]),
                )
        return self._batches[batch_id]

    def _anchored_event(self, batch_id: bytes, block_hint: int | None) -> Any:
        topics = ["0x" + BATCH_ANCHORED_TOPIC.hex(), None, "0x" + batch_id.hex()]
        ranges: list[tuple[int | str, int | str]] = [(0, "latest")]
        if block_hint is not None and block_hint >= 0:
            ranges.insert(0, (block_hint, block_hint))
        for first, last in ranges:
            query = {"address": self.address, "topics": topics, "fromBlock": first, "toBlock": last}
            logs = self._ask("eth_getLogs", lambda q=query: self.w3.eth.get_logs(q))  # type: ignore[misc]
            if logs:
                return logs[0]
        raise UnusableInput(
            f"batch 0x{batch_id.hex()} is anchored but the RPC returns no BatchAnchored event"
        )

    def signer_at(self, source_id: bytes, block_number: int, log_index: int) -> str | None:
        """The signer the ledger held for ``source_id`` just before the event at (block, log index): the
        source's ``SourceRegistered`` signer, or the newest ``SignerRotated`` before that point. Read from
        events, so it needs no archive node; None when the source was never registered."""
        changes: list[tuple[int, int, bytes]] = []
        for topic in (SOURCE_REGISTERED_TOPIC, SIGNER_ROTATED_TOPIC):
            query = {
                "address": self.address,
                "topics": ["0x" + topic.hex(), "0x" + source_id.hex()],
                "fromBlock": 0,
                "toBlock": block_number,
            }
            logs = self._ask("eth_getLogs", lambda q=query: self.w3.eth.get_logs(q))  # type: ignore[misc]
            # Both events carry the (new) signer as their third indexed topic.
            changes += [
                (int(log["blockNumber"]), int(log["logIndex"]), bytes(log["topics"][3])) for log in logs
            ]
        before = [c for c in changes if (c[0], c[1]) < (block_number, log_index)]
        if not before:
            return None
        return Web3.to_checksum_address(max(before)[2][-20:])

    def is_batch_root(self, batch_id: bytes, root: bytes) -> bool:
        """``isBatchRoot``: the ledger's storage word for the batch commits to this root."""
        return bool(self._ask("isBatchRoot", self.contract.functions.isBatchRoot(batch_id, root).call))

    def verify_record(self, batch_id: bytes, values: LeafValues, proof: Sequence[bytes]) -> bool:
        fn = self.contract.functions.verifyRecord(batch_id, tuple(values), list(proof))
        return bool(self._ask("verifyRecord", fn.call))

    def verify_leaf(self, batch_id: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """A leaf that is not a delivery record (a compliance event) under an anchored root."""
        fn = self.contract.functions.verifyLeaf(batch_id, leaf, list(proof))
        return bool(self._ask("verifyLeaf", fn.call))


# ----------------------------------------------------------------------------------------------
# Documents
# ----------------------------------------------------------------------------------------------


def load_document(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            doc = json.load(handle)
    except (OSError, ValueError) as exc:
        raise UnusableInput(f"{path}: not a readable JSON document ({exc})") from None
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


def _batch_mismatch(claim: _Claim, onchain: OnchainBatch | None) -> str | None:
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


class _Run:
    def __init__(self, ledger: Ledger, emit: Callable[[str], None]) -> None:
        self.ledger = ledger
        self.emit = emit
        self.summary = Summary()

    def passed(self, label: str) -> None:
        self.summary.passed += 1
        self.emit(f"PASS {label}")

    def failed(self, label: str, reason: str) -> None:
        self.summary.failed += 1
        self.emit(f"FAIL {label}: {reason}")


# ----------------------------------------------------------------------------------------------
# Proof documents
# ----------------------------------------------------------------------------------------------


def _edge_bytes(text: str) -> bytes:
    return text.encode("ascii").ljust(16, b"\0")


def _record_differences(record: Mapping[str, Any], values: LeafValues) -> list[str]:
    """Readable record fields that are not what the leaf values commit to."""
    try:
        expected = {
            "request_id": keccak256(str(record["request_id"]).encode("utf-8")) == values.request_id,
            "timestamp_ms": record["timestamp_ms"] == values.timestamp_ms,
            "edge_location": _edge_bytes(record["edge_location"]) == values.edge_location,
            "country": (record["country"].encode("ascii") or b"\0\0") == values.country,
            "asset_id": record["asset_id"] == values.asset_id,
            "host": keccak256(record["host"].lower().encode("utf-8")) == values.merchant_id,
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
        run.summary.onchain_calls += 1
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


def _path_ok(nodes: list[bytes], trusted_root: bytes | None) -> bytearray:
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


def _proof_from_nodes(nodes: list[bytes], position: int) -> list[bytes]:
    proof = []
    while position > 0:
        proof.append(nodes[position + 1 if position & 1 else position - 1])
        position = (position - 1) >> 1
    return proof


def manifest_struct_hash(manifest: Mapping[str, Any]) -> bytes:
    """EIP-712 ``hashStruct(Manifest)`` of the export's manifest (the contract's ``manifestHash``)."""
    words = []
    for name in MANIFEST_FIELDS:
        value = _get(manifest, name, "manifest")
        if isinstance(value, str):
            words.append(_b32(value, f"manifest.{name}"))
        else:
            words.append(_int(value, f"manifest.{name}").to_bytes(32))
    return keccak256(keccak256(MANIFEST_TYPE) + b"".join(words))


def manifest_digest(struct_hash: bytes, chain_id: int, contract: str) -> bytes:
    """The EIP-712 digest a source's signer signs (domain "EdgeLedger DeliveryLedger", version "1")."""
    domain = keccak256(
        keccak256(_EIP712_DOMAIN_TYPE)
        + keccak256(b"EdgeLedger DeliveryLedger")
        + keccak256(b"1")
        + chain_id.to_bytes(32)
        + bytes.fromhex(contract[2:]).rjust(32, b"\0")
    )
    return keccak256(b"\x19\x01" + domain + struct_hash)


def manifest_problems(batch: Mapping[str, Any], ledger: Ledger, onchain: OnchainBatch | None) -> list[str]:
    """The manifest's fields must hash to the anchored manifest hash, and its signature recover to the
    stated signer for this chain and contract."""
    problems = []
    try:
        struct_hash = manifest_struct_hash(_get(batch, "manifest", "batch"))
    except OverflowError as exc:
        raise UnusableInput(f"manifest field out of range: {exc}") from None
    if onchain is not None and struct_hash != onchain.manifest_hash:
        problems.append("the manifest's fields do not hash to the anchored manifest hash")
    signature, signer = batch.get("signature"), batch.get("signer")
    if isinstance(signature, str) and isinstance(signer, str):
        digest = manifest_digest(struct_hash, ledger.chain_id(), ledger.address)
        try:
            raw = bytes.fromhex(signature.removeprefix("0x"))
            v = raw[64] - 27 if len(raw) == 65 and raw[64] >= 27 else -1
            recovered = keys.Signature(raw[:64] + bytes([v])).recover_public_key_from_msg_hash(digest)
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
    if not isinstance(raw_nodes, list) or not isinstance(raw_values, list) or not raw_nodes:
        raise UnusableInput("tree.tree and tree.values must be lists (the tree non-empty)")
    nodes = [_b32(node, f"tree.tree[{pos}]") for pos, node in enumerate(raw_nodes)]
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
    seen: set[int] = set()
    for j, entry in enumerate(raw_values):
        t = entry.get("treeIndex") if isinstance(entry, Mapping) else None
        label = f"leaf {j}" + (f" (tree index {t})" if isinstance(t, int) else "")
        reason = _leaf_problem(entry, t, nodes, first_leaf, seen, ok, claim, onchain)
        if reason is None and j in sampled:
            assert isinstance(t, int)
            values = leaf_values_from_json(entry["value"])
            run.summary.onchain_calls += 1
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
    nodes: list[bytes],
    first_leaf: int,
    seen: set[int],
    ok: bytearray,
    claim: _Claim,
    onchain: OnchainBatch | None,
) -> str | None:
    """Why one dump value is not proven against the on-chain root, or None."""
    if type(t) is not int or not first_leaf <= t < len(nodes):
        return f"treeIndex {t!r} is not a leaf position"
    if t in seen:
        return f"tree index {t} is used by another value"
    seen.add(t)
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
        return len(values) if isinstance(values, list) else 0
    if doc.get("format") == PROOFS_FORMAT:
        proofs = doc.get("proofs")
        return len(proofs) if isinstance(proofs, list) else 0
    return 1


def verify_document(
    doc: Mapping[str, Any],
    ledger: Ledger,
    *,
    onchain_sample: int = DEFAULT_ONCHAIN_SAMPLE,
    emit: Callable[[str], None] = print,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Check every record of ``doc`` (a proof, proofs or export document) against ``ledger``.

    Raises :class:`UnusableInput` for a malformed document, a document of another chain, or RPC failures.
    """
    run = _Run(ledger, emit)
    ledger.check_code()
    claimed_chain = doc.get("chain_id")
    if claimed_chain is not None and claimed_chain != ledger.chain_id():
        raise UnusableInput(
            f"the document is for chain {claimed_chain}, the RPC serves chain {ledger.chain_id()}"
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
    return run.summary
