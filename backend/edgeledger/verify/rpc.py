"""The contract reads the chain-only verifiers make, over plain JSON-RPC with the packaged ABIs.

Nothing here knows the database, the API or the build folder: an RPC URL and contract addresses (from the
document, a deployment file or the command line) are all it needs. A transport failure, a timeout or an
RPC error raises :class:`Unreachable` (exit code 3); an address without code raises :class:`UnusableInput`.
Log searches go in pieces of at most ``logs_max_blocks`` blocks (``--logs-max-blocks`` /
``ETH_LOGS_MAX_BLOCKS``), halved while the provider refuses a piece as too large
(``edgeledger.ledger.log_ranges``), so a provider that caps ``eth_getLogs`` serves any history.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import Web3Exception, Web3RPCError

from edgeledger.ledger.abis import CONTENT_REGISTRY, DELIVERY_LEDGER, SETTLEMENT_VAULT, contract_abi
from edgeledger.ledger.delivery_leaf import LeafValues
from edgeledger.ledger.hashing import bytes32
from edgeledger.ledger.log_ranges import DEFAULT_MAX_BLOCKS, LogQueryRefused, SpanMemory, read_logs
from edgeledger.ledger.rpc import http_web3
from edgeledger.ledger.vault import SettlementStatus
from edgeledger.verify.result import Unreachable, UnusableInput

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Deployment:
    """What a deployment file (scripts/deploy.py) says: the chain and each contract's address and block."""

    chain_id: int
    addresses: dict[str, str]
    blocks: dict[str, int]

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            raw = json.loads(Path(path).read_text())
            contracts = raw["contracts"]
            return cls(
                chain_id=int(raw["chain_id"]),
                addresses={name: str(info["address"]) for name, info in contracts.items()},
                blocks={name: int(info.get("block", 0)) for name, info in contracts.items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UnusableInput(f"{path}: not a deployment file ({exc})") from None

    def address_of(self, name: str) -> str:
        if name not in self.addresses:
            raise UnusableInput(f"the deployment file names no {name}")
        return self.addresses[name]

    def names(self, name: str, said: object, where: str) -> tuple[bool, str]:
        """Whether ``said``, the address ``where`` (``"the document"``, ``"the package"``) names for
        ``name``, is this file's, with the ``contracts`` check's detail."""
        pinned = self.address_of(name)
        if str(said).lower() == pinned.lower():
            return True, f"{said}, as the deployment file"
        return False, f"{where} names {said}, the deployment {pinned}"

    def pin(self, chain: Chain) -> None:
        """Refuses an RPC serving another chain than this file's, and hands ``chain`` the file's
        deployment blocks: they spare the searches for where the contracts' events start."""
        if self.chain_id != chain.chain_id():
            raise UnusableInput(
                f"the deployment file is for chain {self.chain_id}, the RPC serves {chain.chain_id()}"
            )
        for name, address in self.addresses.items():
            if self.blocks.get(name):
                chain.know_deployment(address, self.blocks[name])


class Chain:
    """One JSON-RPC endpoint: every call goes through :meth:`ask`, which turns transport failures and RPC
    errors into :class:`Unreachable` naming the endpoint and the call."""

    def __init__(
        self, rpc_url: str, *, timeout: float = DEFAULT_TIMEOUT, logs_max_blocks: int = DEFAULT_MAX_BLOCKS
    ) -> None:
        self.rpc_url = rpc_url
        self.w3 = http_web3(rpc_url, timeout=timeout)
        self.logs_max_blocks = logs_max_blocks
        self._log_spans = SpanMemory()  # the provider's block-span cap, as refusals taught it
        self._chain_id: int | None = None
        #: address -> the block it got its code in (a contract's deployment block never changes)
        self._deployed: dict[str, int] = {}

    def ask(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (requests.RequestException, Web3Exception, OSError) as exc:
            raise Unreachable(f"the chain RPC at {self.rpc_url} failed ({what}): {exc}") from None
        except ValueError as exc:  # web3 raises ValueError for RPC error responses of some nodes
            raise Unreachable(f"the chain RPC at {self.rpc_url} failed ({what}): {exc}") from None

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.ask("eth_chainId", lambda: self.w3.eth.chain_id))
        return self._chain_id

    def deployment_block(self, address: str, upto: int) -> int:
        """The block ``address`` got its code in (at most ``upto``, where it must have code): a binary
        search over ``eth_getCode`` at past blocks, about log2(upto) calls, so a search of the contract's
        events need not start at block 0. Needs the node to keep past states, as the reads at a recorded
        block do anyway; a node that cannot answer for a past block gives 0 (search from genesis). Found
        once per address: every settlement of a package searches from the same registry and vault."""
        checksummed = Web3.to_checksum_address(address)
        known = self._deployed.get(checksummed)
        if known is not None and known <= upto:
            return known

        def has_code(block: int) -> bool | None:
            try:
                return bool(self.w3.eth.get_code(checksummed, block_identifier=block))
            except (Web3RPCError, ValueError):  # "missing trie node", "header not found": no such state
                return None

        low, high = 0, upto
        while low < high:
            middle = (low + high) // 2
            present = self.ask("eth_getCode", functools.partial(has_code, middle))
            if present is None:
                return 0
            if present:
                high = middle
            else:
                low = middle + 1
        self._deployed[checksummed] = low
        return low

    def know_deployment(self, address: str, block: int) -> None:
        """Takes ``block`` as ``address``'s deployment block (from a deployment file the caller trusts),
        so no search is needed, even on a node that keeps no past states."""
        self._deployed[Web3.to_checksum_address(address)] = block

    def contract(self, name: str, address: str) -> Contract:
        """The contract ``name`` (packaged ABI) at ``address``; UnusableInput when nothing is there."""
        if not isinstance(address, str) or not Web3.is_address(address):
            raise UnusableInput(f"{address!r} is not a contract address")
        checksummed = Web3.to_checksum_address(address)
        if not self.ask("eth_getCode", lambda: self.w3.eth.get_code(checksummed)):
            raise UnusableInput(f"no contract at {checksummed} on the chain at {self.rpc_url}")
        return self.w3.eth.contract(address=checksummed, abi=contract_abi(name))

    def logs(
        self, contract: Contract, topics: Sequence[str | None], first: int | str, last: int | str
    ) -> list[Any]:
        return self.get_logs(
            {"address": contract.address, "topics": list(topics), "fromBlock": first, "toBlock": last}
        )

    def get_logs(self, query: dict[str, Any]) -> list[Any]:
        """Every log of an ``eth_getLogs`` filter over any range, each once, in (block, log index) order,
        asked in pieces a capped provider accepts (:func:`edgeledger.ledger.log_ranges.read_logs`)."""
        try:
            return list(
                self.ask(
                    "eth_getLogs",
                    lambda: read_logs(
                        lambda piece: self.w3.eth.get_logs(piece),  # type: ignore[arg-type]
                        query,
                        max_blocks=self.logs_max_blocks,
                        resolve_block=lambda ref: int(self.w3.eth.get_block(ref)["number"]),  # type: ignore[arg-type]
                        memory=self._log_spans,
                    ),
                )
            )
        except LogQueryRefused as exc:
            raise Unreachable(f"the chain RPC at {self.rpc_url} cannot serve the logs: {exc}") from None

    def block_timestamp(self, number: int) -> int:
        return int(self.ask("eth_getBlockByNumber", lambda: self.w3.eth.get_block(number))["timestamp"])

    def block_number(self) -> int:
        return int(self.ask("eth_blockNumber", lambda: self.w3.eth.block_number))


def topic_hex(contract: Contract, event: str) -> str:
    """topic0 of one of the contract's events, from its ABI."""
    return str(contract.events[event]().topic).lower()


@dataclass(frozen=True, slots=True)
class AnchoredBatch:
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


class LedgerReader:
    """The DeliveryLedger views and events the verifiers read."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract = chain.contract(DELIVERY_LEDGER, address)
        self.address = self.contract.address
        self._batches: dict[bytes, AnchoredBatch | None] = {}
        self._operators: dict[bytes, str] = {}

    def _call(self, what: str, fn: Any) -> Any:
        return self.chain.ask(what, fn.call)

    def batch(self, batch_id: bytes, block_hint: int | None = None) -> AnchoredBatch | None:
        """The anchored batch, or None when the id was never anchored. ``block_hint`` (the document's
        block) is searched for the BatchAnchored event first, then the whole chain."""
        if batch_id not in self._batches:
            fns = self.contract.functions
            if not self._call("isAnchored", fns.isAnchored(batch_id)):
                self._batches[batch_id] = None
            else:
                log = self._anchored_log(batch_id, block_hint)
                event = self.contract.events.BatchAnchored().process_log(log)
                args = event["args"]
                source_id = bytes(self._call("batchSource", fns.batchSource(batch_id)))
                root = bytes(args["root"])
                # The event and the storage word must agree (they are written by the same call).
                if bytes(args["sourceId"]) != source_id or not self._call(
                    "isBatchRoot", fns.isBatchRoot(batch_id, root)
                ):
                    raise UnusableInput(f"the BatchAnchored event of 0x{batch_id.hex()} contradicts storage")
                self._batches[batch_id] = AnchoredBatch(
                    source_id=source_id,
                    root=root,
                    period_start=int(args["periodStart"]),
                    period_end=int(args["periodEnd"]),
                    leaf_count=int(args["leafCount"]),
                    kind=int(args["kind"]),
                    manifest_hash=bytes(args["manifestHash"]),
                    tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                    block_number=int(log["blockNumber"]),
                    log_index=int(log["logIndex"]),
                )
        return self._batches[batch_id]

    def _anchored_log(self, batch_id: bytes, block_hint: int | None) -> Any:
        topics = [topic_hex(self.contract, "BatchAnchored"), None, "0x" + batch_id.hex()]
        ranges: list[tuple[int | str, int | str]] = [(0, "latest")]
        if block_hint is not None and block_hint >= 0:
            ranges.insert(0, (block_hint, block_hint))
        for first, last in ranges:
            logs = self.chain.logs(self.contract, topics, first, last)
            if logs:
                return logs[0]
        raise UnusableInput(
            f"batch 0x{batch_id.hex()} is anchored but the RPC returns no BatchAnchored event"
        )

    def signer_at(self, source_id: bytes, block_number: int, log_index: int) -> str | None:
        """The signer the ledger held for ``source_id`` just before the event at (block, log index): the
        source's ``SourceRegistered`` signer, or the newest ``SignerRotated`` before that point. Read from
        events, so it needs no archive node; None when the source was never registered."""
        changes: list[tuple[int, int, str]] = []
        for name in ("SourceRegistered", "SignerRotated"):
            topics = [topic_hex(self.contract, name), "0x" + source_id.hex()]
            for log in self.chain.logs(self.contract, topics, 0, block_number):
                args = self.contract.events[name]().process_log(log)["args"]
                signer = args["signer"] if name == "SourceRegistered" else args["newSigner"]
                changes.append((int(log["blockNumber"]), int(log["logIndex"]), str(signer)))
        before = [c for c in changes if (c[0], c[1]) < (block_number, log_index)]
        return Web3.to_checksum_address(max(before)[2]) if before else None

    def operator_of(self, source_id: bytes) -> str:
        """The payout address the ledger registered for the source (``getSource``; fixed at registration),
        lower case. Asked once per source."""
        if source_id not in self._operators:
            source = self._call("getSource", self.contract.functions.getSource(source_id))
            _signer, _index, _batches, _kind, _status, _last, operator, *_rest = source
            self._operators[source_id] = str(operator).lower()
        return self._operators[source_id]

    def is_batch_root(self, batch_id: bytes, root: bytes) -> bool:
        """``isBatchRoot``: the ledger's storage word for the batch commits to this root."""
        return bool(self._call("isBatchRoot", self.contract.functions.isBatchRoot(batch_id, root)))

    def verify_record(self, batch_id: bytes, values: LeafValues, proof: Sequence[bytes]) -> bool:
        return bool(
            self._call(
                "verifyRecord", self.contract.functions.verifyRecord(batch_id, tuple(values), list(proof))
            )
        )

    def verify_leaf(self, batch_id: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
        """A leaf that is not a delivery record (a compliance event) under an anchored root."""
        return bool(self._call("verifyLeaf", self.contract.functions.verifyLeaf(batch_id, leaf, list(proof))))


@dataclass(frozen=True)
class VaultSettlement:
    """``SettlementVault.settlementOf(periodId, merchant)``, and ``held``: the royalties its posting
    reserved besides ``total`` (``postWithHeld``; 0 for a plain post or a release), None when not read
    (no posting block given).

    ``superseded_by`` is set when the document's own posting was found in its ``posted_block`` but the
    vault now holds another root for the id: the vault posts under an id again only once the earlier
    root was cancelled, so the document is a cancelled attempt of the period. The other fields then
    describe the document's posting (its root, token, total and held reserve, status 4: cancelled)."""

    root: bytes
    token: str
    claims_open_at: int
    status: int
    total: int
    remaining: int
    held: int | None = None
    superseded_by: bytes | None = None


def vault_settlement(
    chain: Chain,
    vault: str,
    period_id: int,
    merchant: str,
    posted_block: int | None = None,
    root: str | None = None,
) -> VaultSettlement:
    """The vault's settlement; with ``posted_block`` (the published document's) also what its posting
    there reserved as held royalties (:func:`posting_at`). With the document's ``root`` too, a document
    whose posting the vault has since replaced by a later attempt's is read from that posting
    (``superseded_by``)."""
    contract = chain.contract(SETTLEMENT_VAULT, vault)
    if not Web3.is_address(merchant):
        raise UnusableInput(f"merchant {merchant!r} is not an address")
    fn = contract.functions.settlementOf(period_id, Web3.to_checksum_address(merchant))
    current, token, opens, status, total, remaining = chain.ask("settlementOf", fn.call)
    if int(status) == SettlementStatus.NONE or posted_block is None:
        return VaultSettlement(
            bytes(current), str(token), int(opens), int(status), int(total), int(remaining)
        )
    own = root_bytes(root)
    if own is not None and own != bytes(current):
        posting = posting_at(chain, contract, period_id, merchant, int(posted_block), own)
        return VaultSettlement(
            own,
            posting.token,
            posting.claims_open_at,
            SettlementStatus.CANCELLED,
            posting.total,
            0,
            posting.held,
            bytes(current),
        )
    posting = posting_at(chain, contract, period_id, merchant, int(posted_block), bytes(current))
    return VaultSettlement(
        bytes(current), str(token), int(opens), int(status), int(total), int(remaining), posting.held
    )


def root_bytes(root: str | None) -> bytes | None:
    """A document's root as 32 bytes; None when it names none (or not a bytes32)."""
    try:
        return bytes32(root) if isinstance(root, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Posting:
    """One ``SettlementPosted`` of the vault and the held royalties its transaction reserved."""

    token: str
    total: int
    claims_open_at: int
    held: int


def posting_at(
    chain: Chain, contract: Contract, period_id: int, merchant: str, block: int, root: bytes
) -> Posting:
    """The posting of ``root`` for (period, merchant) in ``block``, with what it reserved as held
    royalties: the ``RoyaltiesHeld`` event of that ``SettlementPosted``'s transaction (none there: 0). One
    log query of one block: the vault's ``heldOf`` is what is still held, which every release lowers, and
    a search of the vault's whole history would cost a query per ``ETH_LOGS_MAX_BLOCKS`` blocks."""
    keys = ["0x" + period_id.to_bytes(32).hex(), "0x" + merchant.lower().removeprefix("0x").rjust(64, "0")]
    logs = chain.logs(contract, [None, *keys], block, block)
    posted, held = contract.events.SettlementPosted(), contract.events.RoyaltiesHeld()
    posted_topic, held_topic = topic_hex(contract, "SettlementPosted"), topic_hex(contract, "RoyaltiesHeld")
    postings = (posted.process_log(log) for log in logs if _topic0(log) == posted_topic)
    posting = next((event for event in postings if bytes(event["args"]["root"]) == root), None)
    if posting is None:
        raise UnusableInput(
            f"block {block} holds no posting of settlement {period_id}'s root 0x{root.hex()} "
            "(the document's posted_block)"
        )
    same_transaction = (
        log
        for log in logs
        if _topic0(log) == held_topic and log["transactionHash"] == posting["transactionHash"]
    )
    args = posting["args"]
    return Posting(
        token=str(args["token"]),
        total=int(args["total"]),
        claims_open_at=int(args["claimsOpenAt"]),
        held=next((int(held.process_log(log)["args"]["held"]) for log in same_transaction), 0),
    )


def _topic0(log: Any) -> str:
    topic = log["topics"][0]
    return ("0x" + topic.hex().removeprefix("0x") if isinstance(topic, bytes) else str(topic)).lower()


def registry(chain: Chain, address: str) -> Contract:
    return chain.contract(CONTENT_REGISTRY, address)
