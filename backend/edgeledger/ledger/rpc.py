"""How every reader connects to a chain's JSON-RPC endpoint: the server's chain client and the
chain-only verifiers build their ``Web3`` here, so both ask the node the same way.

web3's validation middleware checks each ``eth_call`` and ``eth_estimateGas`` against the node's chain
id and asks ``eth_chainId`` for it every time (twice per call): three round trips per contract read.
The chain id of an endpoint does not change, so it is cached (web3's request cache, for ``eth_chainId``
alone: nothing whose answer moves with the chain is cached). One round trip per read.
"""

from __future__ import annotations

from web3 import Web3
from web3.types import RPCEndpoint

__all__ = ["http_web3"]

#: the requests web3 may answer from its cache: only the chain id, which never changes for an endpoint
_CACHED = {RPCEndpoint("eth_chainId")}


def http_web3(rpc_url: str, *, timeout: float) -> Web3:
    """A ``Web3`` over HTTP to ``rpc_url`` (``timeout`` seconds per request) that asks the chain id once."""
    provider = Web3.HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout},
        cache_allowed_requests=True,
        cacheable_requests=_CACHED,
    )
    return Web3(provider)
