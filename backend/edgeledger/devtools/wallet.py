"""Transactions from a wallet whose key is at hand (the demo's creator, merchant and admin; the tests'
accounts): sign locally, send raw, wait for the receipt, as a browser wallet would. The platform's own
signer goes through ``ChainClient.transact`` instead (nonce lock, revert decoding, gas margin).

Nothing here retries or tracks a sent transaction: a demo or test that fails half-way is run again.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.contract.contract import ContractFunction
from web3.types import BlockIdentifier, TxReceipt

from edgeledger.chain.client import ChainClient

#: seconds to wait for a receipt
RECEIPT_TIMEOUT = 120.0


def send(
    chain: ChainClient,
    key: str | bytes | LocalAccount,
    to: str,
    data: str,
    *,
    estimate_block: BlockIdentifier | None = None,
    timeout: float = RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Signs ``data`` to ``to`` with ``key``, sends it and returns its receipt; RuntimeError when it
    reverted. The gas is estimated at ``estimate_block`` (None: the node's default, the latest block); a
    call that must run a block after the latest one (a commit-reveal's reveal) is estimated at
    ``"pending"``."""
    account = key if isinstance(key, LocalAccount) else Account.from_key(key)
    tx: dict[str, Any] = {
        "from": account.address,
        "to": to,
        "data": data,
        "nonce": chain.w3.eth.get_transaction_count(account.address),
        "chainId": chain.chain_id,
        "gasPrice": chain.w3.eth.gas_price,
    }
    tx["gas"] = chain.w3.eth.estimate_gas(tx, estimate_block)  # type: ignore[arg-type]
    tx_hash = chain.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {tx_hash.to_0x_hex()} reverted")
    return receipt


def send_call(
    chain: ChainClient,
    key: str | bytes | LocalAccount,
    fn: ContractFunction,
    *,
    estimate_block: BlockIdentifier | None = None,
    timeout: float = RECEIPT_TIMEOUT,
) -> TxReceipt:
    """:func:`send` of a contract call."""
    # The call's calldata, built without asking the node anything (every field it would look up given).
    unsent = {"gas": 0, "gasPrice": 0, "nonce": 0, "chainId": chain.chain_id}
    data = fn.build_transaction(unsent)["data"]  # type: ignore[arg-type]
    return send(chain, key, fn.address, data, estimate_block=estimate_block, timeout=timeout)
