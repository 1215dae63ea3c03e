"""The verifiers' JSON-RPC reader in pure unit tests (no chain): a contract's deployment block is
searched once per address, and a deployment file's block spares the search."""

from __future__ import annotations

from typing import Any

from edgeledger.verify.rpc import Chain

ADDRESS = "0x" + "12" * 20
DEPLOYED_AT = 1_234


class _Eth:
    """``eth_getCode`` of a chain where ``ADDRESS`` has had code since ``DEPLOYED_AT``."""

    def __init__(self) -> None:
        self.calls = 0

    def get_code(self, address: str, block_identifier: int) -> bytes:
        self.calls += 1
        return b"\x60\x80" if block_identifier >= DEPLOYED_AT else b""


def _chain() -> tuple[Chain, _Eth]:
    chain = Chain("http://127.0.0.1:1")
    eth = _Eth()
    fake: Any = type("W3", (), {"eth": eth})()
    chain.w3 = fake
    return chain, eth


def test_the_deployment_block_is_searched_once_per_address() -> None:
    chain, eth = _chain()
    assert chain.deployment_block(ADDRESS, 100_000) == DEPLOYED_AT
    searched = eth.calls
    assert 0 < searched <= 18  # a binary search: about log2(100,000) calls
    assert chain.deployment_block(ADDRESS.upper().replace("0X", "0x"), 200_000) == DEPLOYED_AT
    assert eth.calls == searched


def test_a_deployment_files_block_spares_the_search() -> None:
    chain, eth = _chain()
    chain.know_deployment(ADDRESS, DEPLOYED_AT)
    assert chain.deployment_block(ADDRESS, 100_000) == DEPLOYED_AT
    assert eth.calls == 0
