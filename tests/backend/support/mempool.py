"""The server signer's transactions held in anvil's mempool, for the stuck-transaction tests
(chain/stuck_tx.py): what the signer has sent and mined, a paused chain, an impatient worker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from tests.backend.support.stack import rpc


def sent(client: ChainClient) -> int:
    """Transactions the server's signer has sent, mined or not."""
    return int(client.w3.eth.get_transaction_count(client.signer_address, "pending"))


def mined(client: ChainClient) -> int:
    """Transactions of the server's signer that are mined."""
    return int(client.w3.eth.get_transaction_count(client.signer_address, "latest"))


def impatient(settings: Settings, **update: object) -> tuple[ChainClient, Settings]:
    """A worker whose receipt wait runs out at once, with its own ceiling and replacement settings."""
    mine = settings.model_copy(update={"tx_timeout_seconds": 1, **update})
    return ChainClient.from_settings(mine), mine


@contextmanager
def held_in_mempool(settings: Settings) -> Iterator[None]:
    """Transactions wait in the mempool until the block ends; then the chain mines them."""
    rpc(settings.eth_rpc_url, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(settings.eth_rpc_url, "evm_setAutomine", True)  # never leave the shared chain paused
        rpc(settings.eth_rpc_url, "evm_mine")
