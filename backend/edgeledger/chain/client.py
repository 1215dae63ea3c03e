"""The one chain client: contracts with the packaged ABIs (``ledger.abis``), the server signer with safe
nonces, gas estimation, receipts with timeouts, and custom-error reverts decoded by name.

Every other module talks to the chain through :class:`ChainClient`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import requests
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    TimeExhausted,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import BlockIdentifier, Nonce, TxParams, TxReceipt, Wei

from edgeledger.chain.fees import DEFAULT_MAX_FEE_PER_GAS_WEI, Fees, capped
from edgeledger.config import Settings
from edgeledger.errors import EdgeLedgerError
from edgeledger.ledger.abis import abi_type, contract_abi
from edgeledger.ledger.log_ranges import DEFAULT_MAX_BLOCKS, LogQueryRefused, SpanMemory, read_logs
from edgeledger.ledger.rpc import http_web3

log = logging.getLogger(__name__)


class ChainError(EdgeLedgerError):
    """The chain could not be used: unreachable, timed out, not deployed, or a transaction reverted."""

    status = 503
    code = "chain_unavailable"


class ContractRevert(ChainError):
    """A call or transaction reverted; ``error`` names the contract's custom error."""

    status = 422
    code = "contract_revert"

    def __init__(self, error: str, args: dict[str, Any], message: str | None = None) -> None:
        super().__init__(message or f"the contract rejected the call: {error}", error=error, args=args)
        self.error = error
        self.error_args = args


#: How stale a read path's view of the latest block may be (see ChainClient.head).
HEAD_MAX_AGE_SECONDS = 1.0

CALL_BATCH_MAX = 100
"""Calls per JSON-RPC batch (:meth:`ChainClient.call_many`): within every hosted provider's batch limit."""

ERC1271_MAGIC = bytes.fromhex("1626ba7e")
"""``isValidSignature(bytes32,bytes)``'s selector: an ERC-1271 wallet's answer for a signature it accepts."""


@dataclass(frozen=True)
class DeployedContract:
    address: str
    block: int
    tx_hash: str


@dataclass(frozen=True)
class Deployment:
    """What scripts/deploy.py wrote: the chain and each contract's address and deployment block."""

    chain_id: int
    contracts: dict[str, DeployedContract] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        if not path.is_file():
            raise ChainError(
                f"no deployment file at {path}: deploy the contracts first (make up, or brownie run "
                "scripts/deploy.py)",
                code="chain_not_deployed",
            )
        raw = json.loads(path.read_text())
        contracts = {name: DeployedContract(**info) for name, info in raw["contracts"].items()}
        return cls(chain_id=int(raw["chain_id"]), contracts=contracts)

    def address_of(self, name: str) -> str:
        try:
            return self.contracts[name].address
        except KeyError:
            raise ChainError(f"{name} is not in the deployment", code="chain_not_deployed") from None


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    block_hash: str
    receipt: TxReceipt


def _error_selectors(abi: list[dict[str, Any]]) -> dict[bytes, tuple[str, list[str], list[str]]]:
    selectors = {}
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [abi_type(i) for i in item["inputs"]]
        signature = f"{item['name']}({','.join(types)})"
        selectors[keccak(text=signature)[:4]] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return selectors


@dataclass(frozen=True)
class PendingTx:
    """A transaction of the signer waiting in the mempool."""

    nonce: int
    fees: Fees
    gas: int
    sender: str = ""


class ChainClient:
    """Reads and writes the deployed contracts on any EVM JSON-RPC endpoint."""

    def __init__(
        self,
        rpc_url: str,
        *,
        deployment_file: Path,
        signer_private_key: str | None = None,
        confirmations: int = 1,
        tx_timeout: float = 120.0,
        nonce_lock_file: Path | None = None,
        request_timeout: float = 10.0,
        head_max_age: float = HEAD_MAX_AGE_SECONDS,
        logs_max_blocks: int = DEFAULT_MAX_BLOCKS,
        max_fee_per_gas: int = DEFAULT_MAX_FEE_PER_GAS_WEI,
    ) -> None:
        self.rpc_url = rpc_url
        #: the most any transaction of the signer bids per gas (TX_MAX_FEE_PER_GAS_WEI)
        self.max_fee_per_gas = max_fee_per_gas
        #: blocks per eth_getLogs piece of a longer search (0: no limit); see :meth:`get_logs`
        self.logs_max_blocks = logs_max_blocks
        self.w3 = http_web3(rpc_url, timeout=request_timeout)
        self.deployment_file = deployment_file
        self.confirmations = confirmations
        self.tx_timeout = tx_timeout
        self._signer: LocalAccount | None = (
            Account.from_key(signer_private_key) if signer_private_key else None
        )
        self._nonce_lock = threading.Lock()
        self._nonce_lock_file = nonce_lock_file
        self._next_nonce: int | None = None
        self._contracts: dict[str, Contract] = {}
        self._selectors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        self._deployment: Deployment | None = None
        #: whether the provider takes JSON-RPC batches (:meth:`call_many`), until one is refused
        self._batches = True
        #: the provider's block-span cap for eth_getLogs, as far as refusals taught it (:meth:`get_logs`)
        self._log_spans = SpanMemory()
        #: (monotonic time read, number, hash, timestamp) of the latest block last seen
        self._head: tuple[float, int, str, int] | None = None
        self.head_max_age = head_max_age

    @classmethod
    def from_settings(cls, settings: Settings) -> ChainClient:
        """The client the API, the worker and the CLI use: RPC, deployment, signer, confirmations and
        timeouts from the settings (one nonce lock file per DATA_DIR)."""
        key = settings.signer_private_key.get_secret_value() if settings.signer_private_key else None
        return cls(
            settings.eth_rpc_url,
            deployment_file=settings.resolved_deployment_file,
            signer_private_key=key,
            confirmations=settings.chain_confirmations,
            tx_timeout=settings.tx_timeout_seconds,
            nonce_lock_file=settings.data_dir / "signer-nonce.lock",
            head_max_age=settings.read_max_age_seconds,
            logs_max_blocks=settings.eth_logs_max_blocks,
            max_fee_per_gas=settings.tx_max_fee_per_gas_wei,
        )

    # -- connection ------------------------------------------------------------------------------

    @contextmanager
    def rpc(self, what: str) -> Iterator[None]:
        """Turns transport failures into a 503 naming the endpoint."""
        try:
            yield
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ChainError(
                f"the chain RPC at {self.rpc_url} is unreachable ({what}): {type(exc).__name__}"
            ) from exc

    def block_number(self) -> int:
        with self.rpc("eth_blockNumber"):
            return self.w3.eth.block_number

    @property
    def chain_id(self) -> int:
        with self.rpc("eth_chainId"):
            return self.w3.eth.chain_id

    @property
    def deployment(self) -> Deployment:
        if self._deployment is None:
            self._deployment = Deployment.load(self.deployment_file)
        return self._deployment

    @property
    def signer_address(self) -> str:
        if self._signer is None:
            raise ChainError("no server signer configured (SIGNER_PRIVATE_KEY)", code="chain_no_signer")
        return self._signer.address

    def contract(self, name: str) -> Contract:
        if name not in self._contracts:
            try:
                abi = contract_abi(name)
            except KeyError:
                raise ChainError(
                    f"no ABI for {name}: run `make compile`", code="chain_not_deployed"
                ) from None
            self._selectors.update(_error_selectors(abi))
            address = to_checksum_address(self.deployment.address_of(name))
            self._contracts[name] = self.w3.eth.contract(address=address, abi=abi)
        return self._contracts[name]

    def check_deployment(self) -> None:
        """Fails unless every deployed contract has code on the connected chain (right chain, right state)."""
        with self.rpc("eth_getCode"):
            if self.w3.eth.chain_id != self.deployment.chain_id:
                raise ChainError(
                    f"the RPC serves chain {self.w3.eth.chain_id}, the deployment is for chain "
                    f"{self.deployment.chain_id}",
                    code="chain_not_deployed",
                )
            for name, info in self.deployment.contracts.items():
                if not self.w3.eth.get_code(to_checksum_address(info.address)):
                    raise ChainError(f"{name} has no code at {info.address}", code="chain_not_deployed")

    # -- reads -----------------------------------------------------------------------------------

    def call(self, fn: ContractFunction, block: BlockIdentifier = "latest") -> Any:
        with self.rpc(fn.fn_name), self._decoded_reverts():
            return fn.call(block_identifier=block)

    def call_many(self, fns: list[ContractFunction], block: BlockIdentifier = "latest") -> list[Any]:
        """Several contract reads at one block in JSON-RPC batches of at most :data:`CALL_BATCH_MAX`
        calls: one round trip per batch instead of one per read. The results, decoded, in order; a revert
        surfaces as from :meth:`call` (the first one's). Reads of more than one batch at a block tag
        (``"latest"``) are pinned to the block number read first, so every batch sees the same state.
        A provider that refuses batches (its answer is an error or an HTTP error, not a list, or fewer
        answers than reads) gets these reads, and every later ``call_many`` of this client, one by one.
        The functions must be of this client's contracts (:meth:`contract`)."""
        if any(fn.w3 is not self.w3 for fn in fns):
            raise ValueError("call_many reads functions of this client's contracts only")
        if len(fns) > CALL_BATCH_MAX and not isinstance(block, int):
            block = self.block_number() if block == "latest" else block
        answers: list[Any] = []
        for start in range(0, len(fns), CALL_BATCH_MAX):
            answers += self._call_batch(fns[start : start + CALL_BATCH_MAX], block)
        return answers

    def _call_batch(self, fns: list[ContractFunction], block: BlockIdentifier) -> list[Any]:
        if len(fns) < 2 or not self._batches:
            return [self.call(fn, block) for fn in fns]
        try:
            with self.rpc("eth_call batch"), self._decoded_reverts(), self.w3.batch_requests() as batch:
                for fn in fns:
                    batch.add(fn.call(block_identifier=block))
                answers = list(batch.execute())
            if len(answers) == len(fns):
                return answers
            refusal = f"{len(answers)} answers"  # a provider that caps a batch's size answers fewer
        except (Web3RPCError, requests.HTTPError) as exc:  # an error object, or an HTTP error, for the batch
            refusal = str(exc)
        log.info("the chain RPC refused a batch of %d calls (%s): calling one by one", len(fns), refusal)
        self._batches = False
        return [self.call(fn, block) for fn in fns]

    def accepts_signature(self, wallet: str, digest: bytes, signature: bytes | str) -> bool:
        """ERC-1271, asked as OpenZeppelin's ``SignatureChecker`` asks it on chain: whether the contract at
        ``wallet`` answers ``isValidSignature(digest, signature)`` with its selector (the first word of
        the answer). A revert, a short answer or any other value is a no; an unreachable chain is a
        :class:`ChainError`."""
        data = ERC1271_MAGIC + abi_encode(["bytes32", "bytes"], [digest, bytes(HexBytes(signature))])
        with self.rpc("isValidSignature"):
            try:
                answer = self.w3.eth.call({"to": to_checksum_address(wallet), "data": HexBytes(data)})
            except ContractLogicError:
                return False
        return bytes(answer[:32]) == ERC1271_MAGIC + bytes(28)

    def get_logs(self, query: dict[str, Any]) -> list[Any]:
        """Every log of an ``eth_getLogs`` filter over any range, each once, in (block, log index) order:
        asked in pieces of at most ``logs_max_blocks`` blocks, halved while the provider refuses a piece
        as too large (``edgeledger.ledger.log_ranges``), and below the block-span cap this client's
        earlier searches learned; "latest" and other tags are resolved to numbers first. Transport
        failures are a 503 like every other read; a provider that refuses even one block is a 503
        ``chain_logs_refused``."""
        try:
            with self.rpc("eth_getLogs"):
                return read_logs(
                    lambda piece: self.w3.eth.get_logs(piece),  # type: ignore[arg-type]
                    query,
                    max_blocks=self.logs_max_blocks,
                    resolve_block=self._block_number_of,
                    memory=self._log_spans,
                )
        except LogQueryRefused as exc:
            raise ChainError(str(exc), code="chain_logs_refused") from exc

    def _block_number_of(self, ref: str | bytes) -> int:
        """The number of a block named by a tag ("latest", "safe", "finalized") or a hash."""
        with self.rpc("eth_getBlockByNumber"):
            return int(self.w3.eth.get_block(ref)["number"])  # type: ignore[arg-type]

    def head(self, max_age: float | None = None) -> tuple[int, str]:
        """Number and hash of the latest block, as seen at most ``max_age`` seconds ago (default the
        client's ``head_max_age``; one call when older): a hash names a state even across reorgs. Reads
        served at this head are consistent; busy read paths (provenance) share one head per second
        instead of asking the node every request."""
        _, number, block_hash, _ = self._latest(max_age)
        return number, block_hash

    def latest_timestamp(self, max_age: float | None = None) -> int:
        """The latest block's timestamp: the chain's clock, which every ``block.timestamp`` check of the
        contracts (signature deadlines, challenge windows) compares with, whatever this host's clock says.
        Shared with :meth:`head` (one call when the cached block is older than ``max_age``). A cached
        value can only be behind the chain's clock, by at most ``max_age`` seconds and a block."""
        return self._latest(max_age)[3]

    def _latest(self, max_age: float | None) -> tuple[float, int, str, int]:
        max_age = self.head_max_age if max_age is None else max_age
        now = time.monotonic()
        cached = self._head
        if cached is not None and now - cached[0] < max_age:
            return cached
        with self.rpc("eth_getBlockByNumber"):
            block = self.w3.eth.get_block("latest")
        seen = (now, int(block["number"]), "0x" + bytes(block["hash"]).hex(), int(block["timestamp"]))
        self._head = seen
        return seen

    def fresh_head(self) -> tuple[int, str] | None:
        """The shared head when it is younger than ``head_max_age`` (no RPC call), else None."""
        cached = self._head
        if cached is not None and time.monotonic() - cached[0] < self.head_max_age:
            return cached[1], cached[2]
        return None

    def confirmations_of(self, block_number: int) -> int:
        return max(0, self.block_number() - block_number + 1)

    # -- writes ----------------------------------------------------------------------------------

    def transact(self, fn: ContractFunction, *, gas_margin_pct: int = 20) -> TxResult:
        """Sends with the server signer and waits for the receipt (see :meth:`send`)."""
        tx_hash = self.send(fn, gas_margin_pct=gas_margin_pct)
        return self.wait_for_receipt(tx_hash, replay=fn, sender=self.signer_address)

    def send(
        self,
        fn: ContractFunction,
        *,
        gas_margin_pct: int = 20,
        nonce: int | None = None,
        nonce_if_next: int | None = None,
        fees: Fees | None = None,
        gas: int | None = None,
        before_broadcast: Callable[[int, str], None] | None = None,
    ) -> str:
        """Estimates gas, signs with the server signer and broadcasts; returns the tx hash at once.

        Reverts surface as :class:`ContractRevert` naming the custom error, before anything is sent.
        ``nonce`` re-sends at a nonce handed out before (a replacement: chain/fees.py), else the signer's
        next one is taken; ``nonce_if_next`` takes that nonce if it is still the signer's next, read
        under the nonce lock (``chain_nonce_taken`` when a transaction holds it; the next one when it is
        behind); ``fees`` bids them (default: the market's, under the client's ceiling, and
        ``chain_fee_capped`` when the ceiling is below the base fee: nothing is sent); ``gas`` is the limit as
        it is, not estimated (a replacement of a transaction whose call would now revert must still take
        its nonce). ``before_broadcast`` is told the nonce and the hash once signed, before anything
        leaves, so its caller can record what may be in the mempool before it is. A node refusing the
        transaction raises ``chain_nonce_used`` (its nonce is mined), ``chain_replacement_underpriced``
        (a pending transaction at its nonce bids more) or ``chain_fee_too_low`` (below the base fee or
        the node's minimum).
        """
        signer = self._signer
        if signer is None:
            raise ChainError("no server signer configured (SIGNER_PRIVATE_KEY)", code="chain_no_signer")
        with self.rpc(fn.fn_name), self._decoded_reverts():
            limit = (
                gas
                if gas is not None
                else fn.estimate_gas({"from": signer.address}) * (100 + gas_margin_pct) // 100
            )
            if fees is None:
                fees = self._ceiling_bid(self.max_fee_per_gas)
            with self._signer_nonce(fixed=nonce, if_next=nonce_if_next) as chosen:
                params: TxParams = {
                    "from": signer.address,
                    "nonce": Nonce(chosen),
                    "gas": limit,
                    "chainId": self.chain_id,
                }
                if fees is not None:
                    params["maxFeePerGas"] = Wei(fees.max_fee_per_gas)
                    params["maxPriorityFeePerGas"] = Wei(fees.max_priority_fee_per_gas)
                tx = fn.build_transaction(params)
                signed = signer.sign_transaction(cast(Any, tx))
                tx_hash = "0x" + bytes(signed.hash).hex()
                if before_broadcast is not None:
                    before_broadcast(chosen, tx_hash)
                return self._broadcast(signed.raw_transaction, tx_hash)

    def _ceiling_bid(self, ceiling: int) -> Fees:
        """The market's bid with its fee cap at most ``ceiling``; ``chain_fee_capped`` (nothing is sent)
        when the ceiling is below the latest base fee, which no node would take."""
        base = self.base_fee()
        with self.rpc("eth_maxPriorityFeePerGas"):
            tip = int(self.w3.eth.max_priority_fee)
        bid = capped(Fees.market(base, tip), ceiling)
        if bid.max_fee_per_gas < base:
            raise ChainError(
                f"the base fee ({base} wei per gas) is above the signer's ceiling TX_MAX_FEE_PER_GAS_WEI "
                f"({ceiling}): nothing was sent; try again when fees fall, or raise the ceiling",
                code="chain_fee_capped",
                status=503,
            )
        return bid

    def _broadcast(self, raw: bytes, tx_hash: str) -> str:
        try:
            return self.w3.eth.send_raw_transaction(raw).to_0x_hex()
        except Web3RPCError as exc:
            message = str(exc).lower()
            if "already known" in message or "already imported" in message:
                return tx_hash  # this very transaction is in the node's pool: sent
            if "nonce too low" in message:
                raise ChainError(
                    f"the node refused the transaction: its nonce is mined already ({exc})",
                    code="chain_nonce_used",
                    status=409,
                ) from exc
            if "replacement transaction underpriced" in message:
                raise ChainError(
                    f"the node kept the pending transaction at this nonce, which bids more ({exc})",
                    code="chain_replacement_underpriced",
                    status=409,
                ) from exc
            if "underpriced" in message or "base fee" in message or "fee too low" in message:
                raise ChainError(
                    f"the node refused the transaction's fees as too low ({exc})",
                    code="chain_fee_too_low",
                    status=409,
                ) from exc
            if "insufficient funds" in message:
                raise ChainError(
                    f"the signer cannot pay for the transaction's gas ({exc})",
                    code="chain_insufficient_funds",
                    status=409,
                ) from exc
            raise

    def base_fee(self) -> int:
        """The latest block's base fee per gas (0 before EIP-1559)."""
        with self.rpc("eth_getBlockByNumber"):
            return int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0))

    def market_fees(self) -> Fees:
        """What a wallet bids now (chain/fees.py): the node's suggested tip, and room for the latest
        block's base fee to double."""
        base = self.base_fee()
        with self.rpc("eth_maxPriorityFeePerGas"):
            return Fees.market(base, int(self.w3.eth.max_priority_fee))

    def pending_tx(self, tx_hash: str) -> PendingTx | None:
        """The nonce, bid and gas limit of a transaction waiting in the mempool; None when it is mined or
        the node does not have it."""
        with self.rpc("eth_getTransactionByHash"):
            try:
                tx = self.w3.eth.get_transaction(HexBytes(tx_hash))
            except TransactionNotFound:
                return None
        if tx.get("blockNumber") is not None:
            return None
        price = tx.get("gasPrice", 0)
        fees = Fees(int(tx.get("maxFeePerGas", price)), int(tx.get("maxPriorityFeePerGas", price)))
        return PendingTx(int(tx["nonce"]), fees, int(tx["gas"]), to_checksum_address(tx["from"]))

    def known_tx(self, tx_hash: str) -> bool:
        """Whether the node knows the transaction: waiting in its mempool, or mined."""
        with self.rpc("eth_getTransactionByHash"):
            try:
                self.w3.eth.get_transaction(HexBytes(tx_hash))
            except TransactionNotFound:
                return False
        return True

    def mined_nonce(self) -> int:
        """The signer's next nonce after its mined transactions: the one the chain mines next."""
        with self.rpc("eth_getTransactionCount"):
            return int(self.w3.eth.get_transaction_count(to_checksum_address(self.signer_address), "latest"))

    def nonce_mined(self, nonce: int) -> bool:
        """Whether the signer's transaction at ``nonce`` (whichever it was) is mined."""
        return self.mined_nonce() > nonce

    def pending_nonce(self) -> int:
        """The signer's next nonce after every transaction the node holds, mined or waiting."""
        with self.rpc("eth_getTransactionCount"):
            return int(self.w3.eth.get_transaction_count(to_checksum_address(self.signer_address), "pending"))

    def send_raw_transaction(self, raw_tx: str | bytes) -> str:
        """Broadcasts a transaction someone else signed; returns its hash."""
        with self.rpc("eth_sendRawTransaction"), self._decoded_reverts():
            return self.w3.eth.send_raw_transaction(HexBytes(raw_tx)).to_0x_hex()

    def wait_for_receipt(
        self, tx_hash: str, *, replay: ContractFunction | None = None, sender: str | None = None
    ) -> TxResult:
        with self.rpc("eth_getTransactionReceipt"):
            try:
                receipt = self.w3.eth.wait_for_transaction_receipt(
                    HexBytes(tx_hash), timeout=self.tx_timeout, poll_latency=0.1
                )
            except TimeExhausted as exc:
                raise ChainError(
                    f"transaction {tx_hash} was not mined within {self.tx_timeout:.0f}s; it may still land",
                    code="chain_timeout",
                    status=504,
                    tx_hash=tx_hash,
                ) from exc
        if receipt["status"] != 1:
            self._raise_mined_revert(tx_hash, receipt, replay, sender)
        return TxResult(
            tx_hash=tx_hash,
            block_number=receipt["blockNumber"],
            block_hash=receipt["blockHash"].to_0x_hex(),
            receipt=receipt,
        )

    def receipt_if_mined(self, tx_hash: str) -> TxReceipt | None:
        with self.rpc("eth_getTransactionReceipt"):
            try:
                return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None

    # -- internals -------------------------------------------------------------------------------

    @contextmanager
    def _signer_nonce(self, fixed: int | None = None, if_next: int | None = None) -> Iterator[int]:
        """Hands out the signer's next nonce, one holder at a time across threads and processes, or
        ``fixed`` (a re-send at a nonce handed out before) under the same lock, or ``if_next`` while no
        transaction the node holds has taken it (else ``chain_nonce_taken``).

        The pending count from the node is the truth; the local counter only covers transactions this
        process sent that the node has not yet reported as pending.
        """
        with self._nonce_lock, self._process_lock():
            if fixed is not None:
                yield fixed
                return
            pending = self.pending_nonce()
            if if_next is not None and pending > if_next:
                raise ChainError(
                    f"a transaction the caller does not name holds nonce {if_next}",
                    code="chain_nonce_taken",
                    status=409,
                )
            nonce = (
                if_next if if_next is not None and pending == if_next else max(pending, self._next_nonce or 0)
            )
            try:
                yield nonce
            except (Web3RPCError, ChainError) as exc:
                if "nonce" in str(exc).lower():
                    self._next_nonce = None
                raise
            self._next_nonce = nonce + 1

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        if self._nonce_lock_file is None:
            yield
            return
        self._nonce_lock_file.parent.mkdir(parents=True, exist_ok=True)
        with self._nonce_lock_file.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _decoded_reverts(self) -> Iterator[None]:
        try:
            yield
        except ContractCustomError as exc:
            raise self.decode_revert_data(str(exc.data)) from exc
        except ContractPanicError as exc:
            raise ContractRevert("Panic", {"reason": str(exc)}) from exc
        except ContractLogicError as exc:
            if exc.data and isinstance(exc.data, str) and len(exc.data) >= 10:
                raise self.decode_revert_data(exc.data) from exc
            raise ContractRevert("Revert", {"reason": str(exc.message or exc)}) from exc

    def decode_revert_data(self, data: str) -> ContractRevert:
        raw = HexBytes(data)
        known = self._selectors.get(bytes(raw[:4]))
        if known is None:
            return ContractRevert("UnknownError", {"data": raw.to_0x_hex()})
        name, arg_names, types = known
        values = abi_decode(types, bytes(raw[4:]))
        args = {n or f"arg{i}": _jsonable(v) for i, (n, v) in enumerate(zip(arg_names, values, strict=True))}
        return ContractRevert(name, args)

    def _raise_mined_revert(
        self, tx_hash: str, receipt: TxReceipt, replay: ContractFunction | None, sender: str | None
    ) -> None:
        # A mined revert carries no reason; replaying the call at its block recovers the custom error.
        if replay is not None and sender is not None:
            with self._decoded_reverts():
                replay.call({"from": sender}, block_identifier=receipt["blockNumber"] - 1)
        raise ContractRevert("Reverted", {"tx_hash": tx_hash}, f"transaction {tx_hash} reverted")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
